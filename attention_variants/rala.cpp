#include "attention_variants/rala.h"

#include "attention_variants/fused.h"
#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& RalaAttentionImpl::schema() {
  static const SettingsSchema s = {
      flag_setting("alpha", true, "α token re-weighting of the keys (off: uniform weights)"),
      flag_setting("gate", true, "multiply the output by the linear gate o (off: no o projection, qkv has 3C rows)"),
      flag_setting("rope", true, "2-D RoPE on φ(q), φ(k) in the numerator"),
      flag_setting("lepe", true, "5×5 depthwise LePE on v added to the output")};
  return s;
}

RalaAttentionImpl::RalaAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::rala, "RALA"),
      alpha_(settings_.flag("alpha")),
      rope_(settings_.flag("rope")) {
  build_projections(settings_.flag("gate"), settings_.flag("lepe"));
  if (rope_)
    TORCH_CHECK(head_dim() % 4 == 0, "RALA: RoPE needs a head dim divisible by 4, got ", head_dim(), " (channels ",
                options_.dim(), ", heads ", options_.heads(), ")");
}

torch::Tensor RalaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  const int64_t N = p.q.size(2);  // tokens, prefix tokens included
  // Fused CPU path (fused.h): every probe but the implied attention map (the unweighted buffer with α from the
  // LibTorch expression below, so that asking for it does not change the path, nor the other probes' rounding).
  if (fused_applies(p) && !probe_wanted(ctx, Probe::attention, N)) {
    fused::RalaSwitches s;
    s.alpha = alpha_;
    s.rope = rope_;
    s.gated = gated_;
    s.want_alpha = alpha_ && probe_wanted(ctx, Probe::alpha);
    s.want_z = probe_wanted(ctx, Probe::normalizer_z);
    s.want_output = probe_wanted(ctx, Probe::output);
    RopeTables t;
    if (rope_) t = context_rope(ctx, head_dim(), x);
    auto r = fused::rala_attention(p.all, options_.dim(), options_.heads(), s, t.sin, t.cos,
                                   has_lepe() ? lepe_->weight : torch::Tensor(),
                                   has_lepe() ? lepe_->bias : torch::Tensor(), kEps);
    if (s.want_alpha) emit_probe(ctx, Probe::alpha, r.alpha);
    emit_probe(ctx, Probe::kv_buffer, r.kv);
    if (!alpha_) emit_probe(ctx, Probe::kv_buffer_unweighted, r.kv);
    if (alpha_ && probe_wanted(ctx, Probe::kv_buffer_unweighted)) {
      auto k_plain = elu_feature(p.k);
      if (rope_) k_plain = theta_shift(k_plain, t.sin, t.cos);
      emit_probe(ctx, Probe::kv_buffer_unweighted,
                 torch::matmul(k_plain.transpose(-2, -1), p.v) / static_cast<double>(N));
    }
    if (s.want_z) emit_probe(ctx, Probe::normalizer_z, r.z);
    if (s.want_output) emit_probe(ctx, Probe::output, r.output);
    return finish_fused(r.y, ctx);
  }
  auto q = elu_feature(p.q), k = elu_feature(p.k);  // (B, h, N, d)
  if (alpha_) {
    const double scale = std::pow(static_cast<double>(head_dim()), -0.5);
    auto logits = torch::matmul(q.mean(-2, true) * scale, k.transpose(-2, -1));  // (B, h, 1, N)
    auto alpha = torch::softmax(logits, -1).transpose(-2, -1);                  // (B, h, N, 1)
    emit_probe(ctx, Probe::alpha, alpha.squeeze(-1));
    if (probe_wanted(ctx, Probe::kv_buffer_unweighted)) {
      // The same keys without α (uniform weights 1/N): Σ_j RoPE(φk_j)ᵀ v_j / N, in kv_buffer's normalisation.
      auto k_plain = k;
      if (rope_) {
        const auto tables = context_rope(ctx, head_dim(), x);
        k_plain = theta_shift(k, tables.sin, tables.cos);
      }
      emit_probe(ctx, Probe::kv_buffer_unweighted,
                 torch::matmul(k_plain.transpose(-2, -1), p.v) / static_cast<double>(N));
    }
    k = k * (alpha * static_cast<double>(N));
  }
  auto q_num = q, k_num = k;
  if (rope_) {
    auto tables = context_rope(ctx, head_dim(), x);
    q_num = theta_shift(q, tables.sin, tables.cos);
    k_num = theta_shift(k, tables.sin, tables.cos);
  }
  auto r = linear_attention(q_num, k_num, q, k, p.v, Normalizer::mean, kEps);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  if (!alpha_) emit_probe(ctx, Probe::kv_buffer_unweighted, r.kv);  // without α the buffer is the unweighted one
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, implied_attention(q_num, k_num, r.z, Normalizer::mean));
  return finish(r.output, p, ctx);
}

int64_t RalaAttentionImpl::matmul_macs(int64_t tokens) const {
  // α logits mean(φQ)·φ(K)ᵀ: N·C; kv and RoPE(φQ)·kv: 2·N·d·C; normaliser: N·C
  const int64_t alpha = alpha_ ? tokens * options_.dim() : 0;
  return alpha + 2 * tokens * head_dim() * options_.dim() + tokens * options_.dim();
}

}  // namespace rala

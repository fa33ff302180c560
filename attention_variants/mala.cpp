#include "attention_variants/mala.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& MalaAttentionImpl::schema() {
  static const SettingsSchema s = {
      flag_setting("gate", true, "multiply the output by the linear gate o (off: no o projection, qkv has 3C rows)"),
      flag_setting("rope", true, "2-D RoPE on φ(q), φ(k) in the numerator"),
      flag_setting("lepe", true, "5×5 depthwise LePE on v added to the output")};
  return s;
}

MalaAttentionImpl::MalaAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::mala, "MALA"), rope_(settings_.flag("rope")) {
  build_projections(settings_.flag("gate"), settings_.flag("lepe"));
  if (rope_)
    TORCH_CHECK(head_dim() % 4 == 0, "MALA: RoPE needs a head dim divisible by 4, got ", head_dim(), " (channels ",
                options_.dim(), ", heads ", options_.heads(), "; rope=0 runs without it)");
}

torch::Tensor MalaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  const int64_t N = p.q.size(2);  // tokens, prefix tokens included
  const double s = std::pow(static_cast<double>(head_dim()), -0.5);
  auto q = elu_feature(p.q), k = elu_feature(p.k);  // (B, h, N, d)
  emit_probe(ctx, Probe::feature_q, q);
  emit_probe(ctx, Probe::feature_k, k);
  if (gated() && internal_wanted(ctx, "gate_o")) emit_internal(ctx, "gate_o", p.o_map);
  if (internal_wanted(ctx, "lepe") && has_lepe()) emit_internal(ctx, "lepe", lepe_->forward(p.v_map));
  auto z = torch::matmul(q, k.mean(-2, true).transpose(-2, -1)) * s;  // (B, h, N, 1), RoPE-free
  emit_internal(ctx, "z", z.squeeze(-1));
  auto q_num = q, k_num = k;
  if (rope_) {
    auto tables = context_rope(ctx, head_dim(), x);
    q_num = theta_shift(q, tables.sin, tables.cos);
    k_num = theta_shift(k, tables.sin, tables.cos);
  }
  emit_internal(ctx, "rope_q", q_num);
  emit_internal(ctx, "rope_k", k_num);
  const double root = std::sqrt(s / static_cast<double>(N));
  auto kv = torch::matmul(k_num.transpose(-2, -1) * root, p.v * root);  // (B, h, d, d) = (s/N) Σ R(φk)ᵀ v
  emit_probe(ctx, Probe::kv_buffer, kv);
  auto magnitude = 1.0 + 1.0 / (z + kEps);                                         // (B, h, N, 1)
  auto res = torch::matmul(q_num, kv) * magnitude - z * p.v.mean(-2, true);        // (B, h, N, d)
  if (probe_wanted(ctx, Probe::attention, N)) {
    // A_ij = (s/N)(1 + 1/(z_i + ε)) R(φq_i)·R(φk_j) − z_i/N, so that A·v = res.
    auto a = torch::matmul(q_num, k_num.transpose(-2, -1)) * (magnitude * (s / static_cast<double>(N))) -
             z / static_cast<double>(N);
    emit_probe(ctx, Probe::attention, a);
  }
  return finish(res, p, ctx);
}

int64_t MalaAttentionImpl::matmul_macs(int64_t tokens) const {
  // kv and R(φq)·kv: 2·N·d·C; z = φq·mean φk: N·C; z·mean v: N·C
  const int64_t C = options_.dim();
  return 2 * tokens * head_dim() * C + 2 * tokens * C;
}

}  // namespace rala

#include "attention_variants/rala.h"

#include "attention_variants/registry.h"

namespace rala {

RalaAttentionImpl::RalaAttentionImpl(AttentionOptions options)
    : ProjectedAttention(options, options.gate(), options.lepe(), "RALA") {
  if (options_.rope())
    TORCH_CHECK(head_dim() % 4 == 0, "RALA: RoPE needs a head dim divisible by 4, got ", head_dim(), " (channels ",
                options_.dim(), ", heads ", options_.heads(), ")");
}

Variant RalaAttentionImpl::variant() const { return Variant::rala; }

torch::Tensor RalaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x);
  const int64_t N = x.size(2) * x.size(3);
  auto q = elu_feature(p.q), k = elu_feature(p.k);  // (B, h, N, d)
  if (options_.alpha()) {
    const double scale = std::pow(static_cast<double>(head_dim()), -0.5);
    auto logits = torch::matmul(q.mean(-2, true) * scale, k.transpose(-2, -1));  // (B, h, 1, N)
    auto alpha = torch::softmax(logits, -1).transpose(-2, -1);                  // (B, h, N, 1)
    emit_probe(ctx, Probe::alpha, alpha.squeeze(-1));
    k = k * (alpha * static_cast<double>(N));
  }
  auto q_num = q, k_num = k;
  if (options_.rope()) {
    auto tables = context_rope(ctx, head_dim(), x);
    q_num = theta_shift(q, tables.sin, tables.cos);
    k_num = theta_shift(k, tables.sin, tables.cos);
  }
  auto r = linear_attention(q_num, k_num, q, k, p.v, Normalizer::mean, kEps);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, implied_attention(q_num, k_num, r.z, Normalizer::mean));
  return finish(r.output, p, ctx);
}

int64_t RalaAttentionImpl::matmul_macs(int64_t tokens) const {
  // α logits mean(φQ)·φ(K)ᵀ: N·C; kv and RoPE(φQ)·kv: 2·N·d·C; normaliser: N·C
  const int64_t alpha = options_.alpha() ? tokens * options_.dim() : 0;
  return alpha + 2 * tokens * head_dim() * options_.dim() + tokens * options_.dim();
}

}  // namespace rala

#include "attention_variants/linear.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& LinearAttentionImpl::schema() {
  static const SettingsSchema s = {choice_setting(
      "normalizer", "sum", {"sum", "mean", "sum_clamp"},
      "ε placement: sum = 1/(φq·Σφk + ε) (Katharopoulos), mean = 1/(φq·mean φk + ε) (vision code), sum_clamp = "
      "1/max(φq·Σφk, ε)")};
  return s;
}

LinearAttentionImpl::LinearAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::linear, "linear attention"),
      normalizer_(normalizer_from_name(settings_.choice("normalizer"))) {
  build_projections(/*gated=*/false, /*with_lepe=*/false);
}

torch::Tensor LinearAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  auto q = elu_feature(p.q), k = elu_feature(p.k);  // (B, h, N, d)
  auto r = linear_attention(q, k, q, k, p.v, normalizer_, kEps);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  if (probe_wanted(ctx, Probe::attention, q.size(2)))
    emit_probe(ctx, Probe::attention, implied_attention(q, k, r.z, normalizer_));
  return finish(r.output, p, ctx);
}

int64_t LinearAttentionImpl::matmul_macs(int64_t tokens) const {
  // kv = φ(K)ᵀV and φ(Q)·kv: 2·N·d·C; normaliser φ(Q)·Σφ(K): N·C
  return 2 * tokens * head_dim() * options_.dim() + tokens * options_.dim();
}

}  // namespace rala

#pragma once
/// \file linear.h
/// L — vanilla linear attention (Katharopoulos et al. 2020; idiap/fast-transformers `LinearAttention`,
/// `elu_feature_map`), on the RAVLT harness's 1×1-conv projections:
///   q, k, v = qkv(x);  φ = elu + 1 (no d^-½)
///   y_i = φ(q_i) Σ_j φ(k_j)ᵀ v_j / (φ(q_i) · Σ_j φ(k_j) + 1e-6)     (normalizer=sum, the default)
///   y_i = φ(q_i) (Σ_j φ(k_j)ᵀ v_j / N) / (φ(q_i) · mean_j φ(k_j) + 1e-6)   (normalizer=mean, the vision-code convention)
///   out = proj(y)
/// No gate, no LePE, no RoPE. Probes: kv_buffer, normalizer_z, output, output_gated (= output), attention.
///
/// Prefix tokens (DeiT's cls token; attention.h): the cls token's φ(k)ᵀv and φ(k) join the sums over all P + N tokens,
/// and its query reads the same buffer.
///
/// Usage:
///   rala::LinearAttention attn(rala::AttentionOptions(64, 1));

#include "attention_variants/projected.h"

namespace rala {

class LinearAttentionImpl : public ProjectedAttention {
 public:
  explicit LinearAttentionImpl(AttentionOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();

 protected:
  int64_t matmul_macs(int64_t tokens) const override;

 public:
  static constexpr double kEps = 1e-6;

 private:
  Normalizer normalizer_;
};
TORCH_MODULE(LinearAttention);

}  // namespace rala

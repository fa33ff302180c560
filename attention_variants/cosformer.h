#pragma once
/// \file cosformer.h
/// C — cosFormer (ICLR 2022; OpenNLPLab/cosFormer cosformer.py `CosformerAttention`, non-causal, act_fun relu), on
/// 1×1-conv projections (q_proj, k_proj, v_proj stacked as the rows of `qkv`; out_proj = `proj`):
///   q, k = ReLU(q), ReLU(k);   y_i = Σ_j w_ij (q_i·k_j) v_j / max(Σ_j w_ij (q_i·k_j), 1e-6);   out = proj(y)
/// computed in O(N) through re-weighted features q̃, k̃ with q̃_i·k̃_j = w_ij (q_i·k_j). No d^-½ scaling.
///
/// Index conventions (option cosformer_index):
///   separable_2d (default; the 2-D form of the same lab's Vicinity Attention, "use_sum"):
///     token l = r·W + c, rows and columns 0-based; θr_i = (π/2)·r_i/H, θc_i = (π/2)·c_i/W (divisors H and W);
///     w_ij = cos(θr_i − θr_j) + cos(θc_i − θc_j) (sum form);  q̃ = [q cos θr, q sin θr, q cos θc, q sin θc]  (4d).
///   raster_1d (the original 1-D module on the raster order): i = r·W + c + 1 (1-based), M = N, θ_i = (π/2)·i/M;
///     w_ij = cos(θ_i − θ_j);  q̃ = [q sin θ, q cos θ]  (2d). Reproduces cosFormer's own module exactly.
/// Probes: kv_buffer ((B, h, 4d|2d, d), re-weighted), normalizer_z, output, output_gated (= output), attention.
///
/// Prefix tokens (DeiT's cls token; attention.h): the re-weighting is bound to the grid: between grid tokens w_ij as
/// above, every pair with the cls token gets the zero-distance weight (2 separable_2d, 1 raster_1d), i.e. the plain
/// ReLU kernel; the features carry 2d more channels for it (prefix_reweighted_features, common.h), so kv_buffer is (B,
/// h, f + 2d, d).
///
/// Usage:
///   rala::CosformerAttention attn(rala::AttentionOptions(64, 2));
///   rala::CosformerAttention one_d(rala::AttentionOptions(64, 2).cosformer_index(rala::CosformerIndex::raster_1d));

#include "attention_variants/projected.h"

namespace rala {

/// How cosFormer indexes tokens on a 2-D grid (setting `cosformer_index`).
enum class CosformerIndex { separable_2d, raster_1d };

class CosformerAttentionImpl : public ProjectedAttention {
 public:
  explicit CosformerAttentionImpl(AttentionOptions options);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// cosFormer's own module keys (q_proj, k_proj, v_proj, out_proj: Linear) → qkv (stacked rows) and proj.
  static TensorMap state_from_official(const TensorMap& state);

 protected:
  int64_t matmul_macs(int64_t tokens) const override;

 public:
  static constexpr double kEps = 1e-6;

  /// The re-weighting angles for an H×W grid: (N, 1) for raster_1d, (N, 2) [θr, θc] for separable_2d.
  static torch::Tensor angles(CosformerIndex index, int64_t height, int64_t width, const torch::TensorOptions& options);
  /// Re-weighted features: x (B, h, N, d) → (B, h, N, 2d | 4d).
  static torch::Tensor reweight(const torch::Tensor& x, const torch::Tensor& angles, CosformerIndex index);
  CosformerIndex index() const { return index_; }

 private:
  CosformerIndex index_;
};
TORCH_MODULE(CosformerAttention);

}  // namespace rala

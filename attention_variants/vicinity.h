#pragma once
/// \file vicinity.h
/// V — Vicinity Attention (VVT, Sun et al., TPAMI 2023; OpenNLPLab/Vicinity-Vision-Transformer @ 2c49e0f
/// classification/vvt.py `VicinityVisionAttention`), written on tokens as the official module (x (B, C, H, W) is read
/// as (B, N, C), raster order l = row·W + col):
///   s   = σ(se_fc.2(ReLU(se_fc.0(mean_l x_l))))                       (B, C)   SE weights from the attention INPUT
///   src = x, or LN(sr(x)) on the reduced H'×W' grid when sr > 1       (stride-sr conv C→C, then LayerNorm(C))
///   q = ReLU(q_proj(x)), k = ReLU(k_proj(src)), v = v_proj(src)        Linear(C, C/fr); heads of d' = (C/h)/fr
///   angles: queries a_l = (π/2)·row/H, b_l = (π/2)·col/W (0-based); keys the same on their own grid (below)
///   sum form:     φ̃(q) = [q cos a, q sin a, q cos b, q sin b]           → weight cos(a_i−a_j) + cos(b_i−b_j)
///   product form: φ̃(q) = [q cos a cos b, q cos a sin b, q sin a cos b, q sin a sin b] → cos(a_i−a_j)·cos(b_i−b_j)
///   kv = clamp(Σ_j φ̃(k_j)ᵀ v_j)              (B, h, 4d', d')
///   z  = clamp(1 / (φ̃(q_i)·Σ_j φ̃(k_j) + 1e-4))
///   o  = clamp(clamp(φ̃(q_i) kv) · z_i)        (B, h, N, d')
///   y  = clamp(out_proj(o));   out = clamp(y + y ⊙ s)
/// with clamp = the official `abs_clamp`: t ↦ sign(t)·min(max(|t|, 1e-4), 1e4) (zeros stay zero; tiny non-zeros become
/// ±1e-4), at exactly the six places of the official forward; setting `abs_clamp=0` drops all six (the plain formula).
///
/// Spatial reduction (sr > 1): key j of the reduced grid (row r', col c') has a'_j = (π/2)·sr·r'/H and
/// b'_j = (π/2)·sr·c'/W — the angle of its window's top-left token, which is the official (π/2)·r'/(H/sr) whenever sr
/// divides H (and W). [D] When sr does not divide H or W (the official index breaks there), the key source is
/// zero-padded at the bottom / right to ⌈H/sr⌉·sr × ⌈W/sr⌉·sr before the conv, so every token reaches a key and any
/// grid runs (H' = ⌈H/sr⌉, W' = ⌈W/sr⌉); the angles keep the formula above (all stay below π/2).
///
/// Parameters (official keys): q_proj, k_proj, v_proj (Linear(C, C/fr), bias), out_proj (Linear(C/fr, C)),
/// sr (Conv2d(C, C, sr, stride sr)) + norm (LayerNorm(C), eps 1e-5) only when sr > 1, se_fc.0 (Linear(C, C/r), no
/// bias), se_fc.2 (Linear(C/r, C), no bias), r = se_reduction (C/r rounded down, as the official `//`).
/// Probes: feature_q (B, h, N, 4d') and feature_k (B, h, N', 4d') = φ̃ (the golden's phi_q / phi_k); kv_buffer
/// (B, h, 4d', d') = the clamped kv; normalizer_z (B, h, N) = the clamped z; output = output_gated (B, h, N, d') =
/// o after its outer clamp (what enters out_proj; the golden's output_heads); attention (B, h, N, N') =
/// z_i·φ̃(q_i)·φ̃(k_j), the implied map: A·v = o wherever no clamp but z's changes a value (the rule for |t| ≥ 1e-4).
/// Internals: `se_weight` (B, C) = s; `output_pre_proj` (B, N, C/fr) = o merged over heads (token layout).
///
/// Prefix tokens (DeiT's cls token; attention.h): the re-weighting is bound to the grid: between grid tokens as above,
/// every pair with the cls token gets the zero-distance weight (sum form 2, product form 1; features 2d' wider, see
/// prefix_reweighted_features); the SE weights come from the mean over all P + N tokens; with spatial_reduction > 1 the
/// cls key and value come from k_proj / v_proj of the token itself (the stride conv and its LayerNorm are the grid's).
///
/// Usage:
///   rala::VicinityAttention attn(rala::AttentionOptions(64, 2));                                // VVT: fr 2, sum form
///   rala::VicinityAttention pvt(rala::AttentionOptions(64, 2).set("spatial_reduction", 2).set("form", "product"));

#include "attention_variants/common.h"

namespace rala {

class VicinityAttentionImpl : public AttentionBase {
 public:
  explicit VicinityAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  /// feature_reduction, spatial_reduction and se_reduction implied by an official state dict's shapes.
  static std::vector<SettingPair> settings_from_state_shapes(const StateShapes& shapes);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  /// projections: q, out N·C·C/fr each; k, v N'·C·C/fr each; SE 2·C·(C/r); sr conv C²·sr²·N' (sr > 1).
  /// matmuls: kv 4d'·d'·h·N', φ̃(q)·kv 4d'·d'·h·N, normaliser 4d'·h·N. N' = H'·W' key tokens.
  AttentionMacs macs(int64_t height, int64_t width) const override;
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }

  static constexpr double kEps = 1e-4;       ///< added to φ̃(q)·Σφ̃(k)
  static constexpr double kClampMin = 1e-4;  ///< abs_clamp bounds on |t|
  static constexpr double kClampMax = 1e4;

  /// The official abs_clamp: sign(t)·min(max(|t|, 1e-4), 1e4); zeros stay zero.
  static torch::Tensor abs_clamp(const torch::Tensor& t);
  /// Re-weighting table (N, 4) of an h×w grid whose row r / column c sits at angles (π/2)·step·r/H, (π/2)·step·c/W:
  /// sum form [cos a, sin a, cos b, sin b], product form [cos a cos b, cos a sin b, sin a cos b, sin a sin b].
  /// Queries: (H, W, step 1); keys: (H', W', step sr).
  static torch::Tensor reweight_table(bool product, int64_t rows, int64_t cols, int64_t step, int64_t height,
                                      int64_t width, const torch::TensorOptions& options);
  /// Key grid for an H×W input: (⌈H/sr⌉, ⌈W/sr⌉).
  std::pair<int64_t, int64_t> key_grid(int64_t height, int64_t width) const;

  bool product() const { return product_; }
  int64_t feature_reduction() const { return fr_; }
  int64_t spatial_reduction() const { return sr_; }
  int64_t se_reduction() const { return se_reduction_; }
  bool clamped() const { return clamp_; }
  /// Per-head width d' = (C/h)/fr.
  int64_t head_dim() const { return options_.dim() / options_.heads() / fr_; }

  torch::nn::Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};
  torch::nn::Conv2d sr{nullptr};         ///< only when spatial_reduction > 1
  torch::nn::LayerNorm norm{nullptr};    ///< only when spatial_reduction > 1
  torch::nn::Sequential se_fc{nullptr};  ///< Linear(C, C/r) · ReLU · Linear(C/r, C) · Sigmoid, no biases

 private:
  bool product_, clamp_;
  int64_t fr_, sr_, se_reduction_;
};
TORCH_MODULE(VicinityAttention);

}  // namespace rala

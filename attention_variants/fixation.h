#pragma once
/// \file fixation.h
/// X — Feature Fixation (Lu et al., "Linear Video Transformer with Feature Fixation", arXiv 2210.08164), image form.
/// A RECONSTRUCTION: no official code has been published and only the abstract is readable (searched: code index,
/// repositories, issues, pages — arXiv and OpenReview 2VWa8qj2vd0 abstract, ICLR 2023 submission text past the
/// abstract not retrievable). The abstract fixes: a module re-weights the feature importance (channels) of the query
/// and key before the linear attention; the "fixation ratio" is learned by aggregating the token's q, k and v;
/// "neighbourhood association" adds guidance from spatially (and, in video, temporally) neighbouring tokens. The rest
/// is ours (listed after the formula); each paper-level choice is a setting.
///
/// On the RAVLT harness's 1×1-conv projections (qkv: 3C rows [q | k | v], proj; no LePE, no gate), h heads of d = C/h:
///   a = N_k([q; k; v])          neighbourhood association over the k×k spatial window (k = neighbourhood_size, 3):
///                               neighbourhood=mean: the average over the window's in-grid tokens (count excludes the
///                               zero padding); =conv: a learned depthwise k×k conv of the 3C channels; =off: identity
///   per head n, token i:  ρ_i = W_r [a^q_i; a^k_i; a^v_i] + b_r ∈ R^{2d}   (`ratio`: Linear(3d, 2d), shared by heads)
///                         r^q_i, r^k_i = act(ρ_i) split in two halves of d        act: ratio_activation
///                         q̃_i = q_i ⊙ r^q_i,   k̃_i = k_i ⊙ r^k_i
///   y_i = φ(q̃_i) Σ_j φ(k̃_j)ᵀ v_j / (φ(q̃_i) · Σ_j φ(k̃_j) + 1e-6)    φ = 1+elu (phi), normalizer=sum (Katharopoulos)
///   out = proj(y)
///
/// Our choices (the abstract leaves them open):
///  - The ratio is per head and per channel, from a Linear(3d, 2d) shared by the heads, applied to the concatenated
///    q, k, v of the head (the spec's "minimal implementable reading"; cheap: 6d² weights).
///  - ratio_activation: sigmoid (default; r ∈ (0, 1), a soft channel mask), 2sigmoid (r ∈ (0, 2): re-weighting
///    around 1), softmax (d · softmax over the head's d channels, separately for q and k: importance that sums to d).
///  - The ratios multiply q and k before φ (the abstract: "before computing linear attention"), so they also act in the
///    normaliser.
///  - Neighbourhood association on images: the spatial k×k window (k = 3) of [q; k; v] replaces the token's own values
///    in the ratio's input (mean by default: parameter-free; conv: learned). Video's temporal neighbours do not exist.
///  - Projections: the toolkit's qkv 1×1 conv + proj (as `linear`), so fixation=0 is, bit for bit, `linear`.
///
/// Probes: kv_buffer (B, h, d, d) = Σ_j φ(k̃_j)ᵀ v_j (÷N with normalizer=mean); normalizer_z (B, h, N); feature_q,
/// feature_k (B, h, N, d) = φ(q̃), φ(k̃); output (B, h, N, d); output_gated (= output, no gate); attention (B, h, N, N).
/// Internals: "ratio_q", "ratio_k" (B, h, N, d), the fixation ratios as multiplied.
///
/// Prefix tokens (DeiT's cls token; attention.h): the linear attention runs over all P + N tokens; the neighbourhood
/// association is bound to the grid, so the cls token's fixation ratio reads its own q, k, v.
///
/// Usage:
///   rala::FixationAttention attn(rala::AttentionOptions(64, 2));
///   rala::FixationAttention plain(rala::AttentionOptions(64, 2).set("neighbourhood", "off"));

#include "attention_variants/projected.h"

namespace rala {

class FixationAttentionImpl : public ProjectedAttention {
 public:
  explicit FixationAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;

  static constexpr double kEps = 1e-6;

  torch::nn::Linear ratio{nullptr};                ///< (2d, 3d), undefined when fixation=0
  torch::nn::Conv2d neighbourhood_conv{nullptr};  ///< (3C, 1, k, k), only with neighbourhood=conv

 protected:
  /// kv and φ(q)·kv: 2·N·d·C; normaliser: N·C.
  int64_t matmul_macs(int64_t tokens) const override;
  /// ratio Linear 6·d·C per token (+ the neighbourhood conv k²·3C per token with neighbourhood=conv).
  int64_t extra_projection_macs(int64_t tokens) const override;

 private:
  enum class Neighbourhood { off, mean, conv };
  enum class RatioActivation { sigmoid, sigmoid2, softmax };
  bool fixation_, relu_phi_;
  Neighbourhood neighbourhood_;
  int64_t neighbourhood_size_;
  RatioActivation activation_;
  Normalizer normalizer_;
};
TORCH_MODULE(FixationAttention);

}  // namespace rala

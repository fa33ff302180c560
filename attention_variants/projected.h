#pragma once
/// \file projected.h
/// The projection layout shared by the RAVLT-harness variants: one 1×1 conv to [q | k | v] (+ [o] when gated), an
/// optional 5×5 depthwise LePE on the raw v, and a 1×1 output projection. Parameter names follow the official code:
/// `qkvo` (4C outputs, gated) or `qkv` (3C, ungated), `lepe`, `proj`. With AttentionOptions::vit_layout the two
/// projections are Linear layers (timm's `Attention`: qkv (3C, C), proj (C, C)) and run on the tokens.
/// Prefix tokens (attention.h) are projected with the same weights and put ahead of the grid tokens in q, k, v (and
/// the gate); LePE / DWC add to the grid tokens only.

#include "attention_variants/common.h"

namespace rala {

/// The projected inputs of one call. With P prefix tokens, the token dimension of q, k, v holds P + N tokens, the
/// prefix first; the maps hold the grid.
struct Projected {
  torch::Tensor all;      ///< (B, 3C|4C, H, W) the grid tokens' projection
  torch::Tensor q, k, v;  ///< (B, h, P + N, d) strided views of the projection
  torch::Tensor v_map;    ///< (B, C, H, W) raw v of the grid (LePE / DWC input)
  torch::Tensor o_map;    ///< (B, C, H, W) raw gate of the grid, undefined when ungated
  /// (B, P + N, 3C|4C) the projection in token layout (prefix first) on the token path (prefix tokens or vit_layout);
  /// undefined on the map path.
  torch::Tensor tokens;
  int64_t prefix = 0;  ///< P
  /// Channels [c0, c0 + n) of every token, (B, P + N, n), prefix first (a view on the token path).
  torch::Tensor token_channels(int64_t c0, int64_t n) const;
};

class ProjectedAttention : public AttentionBase {
 public:
  /// The 1×1 convs of the RAVLT layout (empty with vit_layout: see qkv_weight(), proj_weight()).
  const torch::nn::Conv2d& qkv_projection() const { return qkv_; }
  const torch::nn::Conv2d& lepe() const { return lepe_; }
  const torch::nn::Conv2d& proj() const { return proj_; }
  /// The projection weights as Linear weights, (3C|4C, C) and (C, C), in either layout (views), and their biases.
  torch::Tensor qkv_weight() const;
  torch::Tensor qkv_bias() const;
  torch::Tensor proj_weight() const;
  torch::Tensor proj_bias() const;
  bool gated() const { return gated_; }
  bool has_lepe() const { return !lepe_.is_empty(); }
  int64_t head_dim() const { return options_.dim() / options_.heads(); }
  /// Every variant on this layout mixes prefix tokens jointly (each header says how).
  PrefixMode prefix_mode() const override { return PrefixMode::joint; }
  /// Projections: qkv(o) (3|4)·C²·T + LePE 25·C·N + proj C²·T (T = P + N tokens); matmuls from matmul_macs(T).
  AttentionMacs macs(int64_t height, int64_t width) const override;

 protected:
  /// Checks the head split; the derived constructor then calls build_projections() with its settings.
  ProjectedAttention(AttentionOptions options, Variant variant, const char* variant_name);
  /// Registers the projections; `gated` adds the o rows, `with_lepe` the 5×5 depthwise conv on v.
  void build_projections(bool gated, bool with_lepe);
  /// Checks x (and the context's prefix tokens) and returns q, k, v split into heads (and the raw v and o maps).
  Projected project(const torch::Tensor& x, const AttentionContext& ctx);
  /// res (B, h, P + N, d) → emits `output`; adds LePE(v) to the grid tokens, applies the gate, emits `output_gated`;
  /// proj → (B, C, H, W), the prefix tokens' output to ctx.prefix_output. `extra` (B, C, H, W), if defined, is added
  /// with LePE (a variant's own positional term on the grid, e.g. FLatten's DWC).
  torch::Tensor finish(const torch::Tensor& res, const Projected& p, const AttentionContext& ctx,
                       const torch::Tensor& extra = {});
  /// Whether the fused CPU kernels (fused.h) serve this call: the projection is channels-last float32/bfloat16 on
  /// the CPU and no gradient is recorded. Otherwise the variant runs its LibTorch expression.
  bool fused_applies(const Projected& p) const;
  /// Tail of the fused path: `y` (B, C, H, W) is already (attention + LePE) ⊙ o; emits `output_gated`, applies proj.
  torch::Tensor finish_fused(const torch::Tensor& y, const AttentionContext& ctx);

  /// The variant's token-mixing MACs on N tokens (per image).
  virtual int64_t matmul_macs(int64_t tokens) const = 0;
  /// A variant's own extra projection MACs on an N-token grid (e.g. FLatten's DWC), its prefix tokens' share included.
  virtual int64_t extra_projection_macs(int64_t tokens) const { return 0; }

  const char* variant_name_;
  bool gated_ = false;
  torch::nn::Conv2d qkv_{nullptr}, lepe_{nullptr}, proj_{nullptr};
  torch::nn::Linear qkv_linear_{nullptr}, proj_linear_{nullptr};  ///< vit_layout
};

}  // namespace rala

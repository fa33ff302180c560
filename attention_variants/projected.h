#pragma once
/// \file projected.h
/// The projection layout shared by the RAVLT-harness variants: one 1×1 conv to [q | k | v] (+ [o] when gated), an
/// optional 5×5 depthwise LePE on the raw v, and a 1×1 output projection. Parameter names follow the official code:
/// `qkvo` (4C outputs, gated) or `qkv` (3C, ungated), `lepe`, `proj`.

#include "attention_variants/common.h"

namespace rala {

/// The projected inputs of one call.
struct Projected {
  torch::Tensor all;      ///< (B, 3C|4C, H, W) the whole projection
  torch::Tensor q, k, v;  ///< (B, h, N, d) strided views of it
  torch::Tensor v_map;    ///< (B, C, H, W) raw v (LePE / DWC input)
  torch::Tensor o_map;    ///< (B, C, H, W) raw gate, undefined when ungated
};

class ProjectedAttention : public AttentionBase {
 public:
  const torch::nn::Conv2d& qkv_projection() const { return qkv_; }
  const torch::nn::Conv2d& lepe() const { return lepe_; }
  const torch::nn::Conv2d& proj() const { return proj_; }
  bool gated() const { return gated_; }
  bool has_lepe() const { return !lepe_.is_empty(); }
  int64_t head_dim() const { return options_.dim() / options_.heads(); }
  /// Projections: qkv(o) (3|4)·C²·N + LePE 25·C·N + proj C²·N; matmuls from matmul_macs().
  AttentionMacs macs(int64_t height, int64_t width) const override;

 protected:
  /// Checks the head split; the derived constructor then calls build_projections() with its settings.
  ProjectedAttention(AttentionOptions options, Variant variant, const char* variant_name);
  /// Registers the projections; `gated` adds the o rows, `with_lepe` the 5×5 depthwise conv on v.
  void build_projections(bool gated, bool with_lepe);
  /// Checks x and returns q, k, v split into heads (and the raw v and o maps).
  Projected project(const torch::Tensor& x);
  /// res (B, h, N, d) → emits `output`; adds LePE(v), applies the gate, emits `output_gated`; 1×1 proj → (B, C, H, W).
  /// `extra` (B, C, H, W), if defined, is added with LePE (a variant's own positional term, e.g. FLatten's DWC).
  torch::Tensor finish(const torch::Tensor& res, const Projected& p, const AttentionContext& ctx,
                       const torch::Tensor& extra = {});
  /// Whether the fused CPU kernels (fused.h) serve this call: the projection is channels-last float32/bfloat16 on
  /// the CPU and no gradient is recorded. Otherwise the variant runs its LibTorch expression.
  bool fused_applies(const Projected& p) const;
  /// Tail of the fused path: `y` (B, C, H, W) is already (attention + LePE) ⊙ o; emits `output_gated`, applies proj.
  torch::Tensor finish_fused(const torch::Tensor& y, const AttentionContext& ctx);

  /// The variant's token-mixing MACs on N tokens (per image).
  virtual int64_t matmul_macs(int64_t tokens) const = 0;
  /// A variant's own extra projection MACs (e.g. FLatten's DWC).
  virtual int64_t extra_projection_macs(int64_t tokens) const { return 0; }

  const char* variant_name_;
  bool gated_ = false;
  torch::nn::Conv2d qkv_{nullptr}, lepe_{nullptr}, proj_{nullptr};
};

}  // namespace rala

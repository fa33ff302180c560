#pragma once
/// \file gla.h
/// G — Gated linear attention, vision form (ViG-H GLA2D): bidirectional gated raster scans.
/// Source: hustvl/ViG classification/models/vig_h.py GLA2D.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class GlaAttentionImpl : public AttentionBase {
 public:
  explicit GlaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(GlaAttention);

}  // namespace rala

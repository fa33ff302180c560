#pragma once
/// \file inline.h
/// I — InLine attention (NeurIPS 2024): injective identity kernel, dynamic 3×3 residual.
/// Source: LeapLabTHU/InLine models/inline_pvt.py InLineAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class InlineAttentionImpl : public AttentionBase {
 public:
  explicit InlineAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(InlineAttention);

}  // namespace rala

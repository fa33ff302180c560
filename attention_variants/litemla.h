#pragma once
/// \file litemla.h
/// E — EfficientViT LiteMLA (ICCV 2023): ReLU linear attention, multi-scale aggregation.
/// Source: mit-han-lab/efficientvit efficientvit/models/nn/ops.py LiteMLA.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class LitemlaAttentionImpl : public AttentionBase {
 public:
  explicit LitemlaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(LitemlaAttention);

}  // namespace rala

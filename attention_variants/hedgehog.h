#pragma once
/// \file hedgehog.h
/// H — Hedgehog (ICLR 2024): learned softmax-mimicking feature maps per head.
/// Source: HazyResearch/lolcats src/model/feature_map.py + linear_attention.py (softmax_dim, untied_head_einsum).
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class HedgehogAttentionImpl : public AttentionBase {
 public:
  explicit HedgehogAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(HedgehogAttention);

}  // namespace rala

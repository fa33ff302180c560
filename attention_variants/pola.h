#pragma once
/// \file pola.h
/// P — PolaFormer (ICLR 2025): polarity-aware linear attention.
/// Source: ZacharyMeng/PolaFormer models/pola_pvt.py PolaLinearAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class PolaAttentionImpl : public AttentionBase {
 public:
  explicit PolaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(PolaAttention);

}  // namespace rala

#pragma once
/// \file chela.h
/// K — CHELA (ICML 2024), vision reconstruction: short-long convolutions + linear attention in MEGA's gated block.
/// Source: no official code: reconstructed from the paper and facebookresearch/mega MovingAverageGatedAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class ChelaAttentionImpl : public AttentionBase {
 public:
  explicit ChelaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(ChelaAttention);

}  // namespace rala

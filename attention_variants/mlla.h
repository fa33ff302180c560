#pragma once
/// \file mlla.h
/// M — MLLA linear attention (NeurIPS 2024): v = x, RoPE over the full C, LePE 3×3.
/// Source: LeapLabTHU/MLLA models/mlla.py LinearAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class MllaAttentionImpl : public AttentionBase {
 public:
  explicit MllaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(MllaAttention);

}  // namespace rala

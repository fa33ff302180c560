#pragma once
/// \file vicinity.h
/// V — Vicinity Attention (VVT, TPAMI 2023): 2-D cos re-weighted ReLU kernel, SE connection.
/// Source: OpenNLPLab/Vicinity-Vision-Transformer classification/vvt.py VicinityVisionAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class VicinityAttentionImpl : public AttentionBase {
 public:
  explicit VicinityAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(VicinityAttention);

}  // namespace rala

#pragma once
/// \file fixation.h
/// X — Feature Fixation (Linear Video Transformer), vision reconstruction: re-weighted q, k channels.
/// Source: no official code: reconstructed from the paper (arXiv 2210.08164).
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class FixationAttentionImpl : public AttentionBase {
 public:
  explicit FixationAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(FixationAttention);

}  // namespace rala

#pragma once
/// \file mala.h
/// Y — MALA (ICCV 2025): magnitude-aware linear attention on RALA's skeleton.
/// Source: qhfan/MALA classfication_release/model.py AddLinearAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class MalaAttentionImpl : public AttentionBase {
 public:
  explicit MalaAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(MalaAttention);

}  // namespace rala

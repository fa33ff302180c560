#pragma once
/// \file transnormer.h
/// T — TransNormer NormAttention (EMNLP 2022): φ(Q)(φ(K)ᵀV), no denominator, SimpleRMSNorm.
/// Source: OpenNLPLab/fairseq-evo fairseq/modules/x_attention/norm_linear_attention.py NormLinearAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class TransnormerAttentionImpl : public AttentionBase {
 public:
  explicit TransnormerAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(TransnormerAttention);

}  // namespace rala

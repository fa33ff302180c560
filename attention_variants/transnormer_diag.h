#pragma once
/// \file transnormer_diag.h
/// D — TransNormer DiagAttention (EMNLP 2022): block-diagonal attention on 1-D raster chunks.
/// Source: OpenNLPLab/fairseq-evo fairseq/modules/x_attention/norm_local_attention.py NormLocalAttention.
/// (Being implemented: see the variant spec; this skeleton only registers the variant.)

#include "attention_variants/common.h"

namespace rala {

class TransnormerDiagAttentionImpl : public AttentionBase {
 public:
  explicit TransnormerDiagAttentionImpl(AttentionOptions options);
  /// The settings this variant owns (keys, defaults, accepted values).
  static const SettingsSchema& schema();
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx) override;
  AttentionMacs macs(int64_t height, int64_t width) const override;
};
TORCH_MODULE(TransnormerDiagAttention);

}  // namespace rala

#pragma once
/// \file macs.h
/// Analytic multiply-accumulate counts from per-module formulas (fvcore-style counts are MACs). Two totals: without
/// the attention matmuls (convolutions and linear maps only — what fvcore counts for these models) and with them.
/// Element-wise ops, norms and pooling are not counted.
///
/// Usage:
///   auto m = rala::count_macs(*model, 224, 224);   // m.without_matmuls, m.with_matmuls (per image)

#include "models/deit.h"
#include "models/ravlt.h"

namespace rala {

struct ModelMacs {
  int64_t without_matmuls = 0;
  int64_t with_matmuls = 0;
};

/// Per image, for an H×W input.
ModelMacs count_macs(const RavltImpl& model, int64_t height, int64_t width);
ModelMacs count_macs(const DeitImpl& model, int64_t height, int64_t width);
/// Sum of parameter numel (buffers excluded).
int64_t count_parameters(const torch::nn::Module& module);
/// MACs of a Conv2d on an H×W input; updates H, W to the output size.
int64_t conv_macs(const torch::nn::Conv2dImpl& conv, int64_t& height, int64_t& width);

}  // namespace rala

#include "models/macs.h"

namespace rala {

int64_t conv_macs(const torch::nn::Conv2dImpl& conv, int64_t& height, int64_t& width) {
  const auto& o = conv.options;
  const int64_t kh = (*o.kernel_size())[0], kw = (*o.kernel_size())[1];
  const int64_t sh = (*o.stride())[0], sw = (*o.stride())[1];
  const auto& pad = c10::get<torch::ExpandingArray<2>>(o.padding());
  height = (height + 2 * (*pad)[0] - kh) / sh + 1;
  width = (width + 2 * (*pad)[1] - kw) / sw + 1;
  return o.out_channels() * (o.in_channels() / o.groups()) * kh * kw * height * width;
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

ModelMacs count_macs(const RavltImpl& model, int64_t height, int64_t width) {
  int64_t h = height, w = width, convs = 0, matmuls = 0;
  for (const auto& m : model.stem->children())
    if (auto* c = m->as<torch::nn::Conv2d>()) convs += conv_macs(*c, h, w);
  for (const auto& stage : model.stages) {
    for (const auto& child : *stage->blocks) {
      const auto* block = child->as<RavltBlock>();
      int64_t bh = h, bw = w;
      convs += conv_macs(*block->pos, bh, bw);
      auto a = block->attn->macs(h, w);
      convs += a.projections;
      matmuls += a.matmuls;
      convs += conv_macs(*block->ffn->fc1, bh, bw) + conv_macs(*block->ffn->dwconv, bh, bw) +
               conv_macs(*block->ffn->fc2, bh, bw);
    }
    if (!stage->downsample.is_empty()) convs += conv_macs(*stage->downsample->reduction, h, w);
  }
  convs += conv_macs(*model.proj, h, w);
  int64_t one = 1, one_w = 1;
  convs += conv_macs(*model.head, one, one_w);  // after global pooling
  return {convs, convs + matmuls};
}

ModelMacs count_macs(const DeitImpl& model, int64_t height, int64_t width) {
  int64_t h = height, w = width, linear = 0, matmuls = 0;
  linear += conv_macs(*model.patch_embed, h, w);
  const int64_t tokens = 1 + h * w;
  for (const auto& block : model.blocks) {
    auto a = block->attn->macs(h, w);  // the mixer on the patch grid and the cls token (its prefix_tokens)
    linear += a.projections;
    matmuls += a.matmuls;
    linear += tokens * (block->fc1->options.in_features() * block->fc1->options.out_features() +
                        block->fc2->options.in_features() * block->fc2->options.out_features());
  }
  linear += model.head->options.in_features() * model.head->options.out_features();
  return {linear, linear + matmuls};
}

}  // namespace rala

#include "models/deit.h"

#include "attention_variants/common.h"
#include "models/ravlt.h"

namespace rala {

DeitOptions deit_tiny() { return DeitOptions(); }
DeitOptions deit_small() { return DeitOptions().embed_dim(384).heads(6); }

DeitBlockImpl::DeitBlockImpl(Variant variant, const AttentionOptions& attn_options, int64_t hidden,
                             double drop_path_rate)
    : drop_path(drop_path_rate) {
  const int64_t C = attn_options.dim();
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(1e-6)));
  attn = register_module("attn", make_attention(variant, attn_options));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(1e-6)));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
  fc1 = mlp->register_module("fc1", torch::nn::Linear(C, hidden));
  fc2 = mlp->register_module("fc2", torch::nn::Linear(hidden, C));
}

torch::Tensor DeitBlockImpl::forward(const torch::Tensor& x, int64_t grid_h, int64_t grid_w, ProbeSink* probes) {
  const int64_t B = x.size(0), C = x.size(2);
  auto h = norm1->forward(x);
  auto patches = h.narrow(1, 1, grid_h * grid_w).transpose(1, 2).reshape({B, C, grid_h, grid_w});  // (B, C, H, W)
  auto ctx = AttentionContext::for_input(patches, C / attn->options().heads(), probes);
  if (probes) probes->on_layer(grid_h, grid_w);
  auto mixed = attn->forward(patches, ctx).flatten(2).transpose(1, 2);  // (B, N, C)
  auto cls = mixed.mean(1, true);                                      // pooled read-out for the cls token
  auto y = x + rala::drop_path(torch::cat({cls, mixed}, 1), drop_path, is_training());
  auto m = fc2->forward(torch::gelu(fc1->forward(norm2->forward(y))));
  return y + rala::drop_path(m, drop_path, is_training());
}

std::vector<std::string> DeitImpl::harness_settings() {
  return {"softmax.gate=0", "softmax.rope=0", "softmax.lepe=0"};  // softmax is timm's plain Attention unless told
}

DeitImpl::DeitImpl(DeitOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  variant_ = parse_pattern(o.attn_pattern(), 1).front();  // one variant (letter or name) for all blocks
  const int64_t C = o.embed_dim(), grid = o.image_size() / o.patch_size();
  TORCH_CHECK(grid > 0, "DeiT: image size (", o.image_size(), ") must be at least the patch size (", o.patch_size(), ")");
  auto pe = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  patch_embed = pe->register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans(), C, o.patch_size()).stride(o.patch_size())));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, C}));
  pos_embed = register_parameter("pos_embed", torch::randn({1, 1 + grid * grid, C}) * 0.02);
  const auto settings = distribute_settings({variant_}, o.attn_settings(), harness_settings());
  auto attn_options = AttentionOptions(C, o.heads()).settings(settings.front());
  auto rates = torch::linspace(0, o.drop_path_rate(), o.depth(), torch::kFloat64);
  auto list = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth(); ++i) {
    blocks.push_back(DeitBlock(variant_, attn_options, static_cast<int64_t>(o.mlp_ratio() * static_cast<double>(C)),
                               rates[i].item<double>()));
    list->push_back(blocks.back());
  }
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(1e-6)));
  head = register_module("head", torch::nn::Linear(C, o.num_classes()));
  torch::NoGradGuard no_grad;
  cls_token.normal_(0, 0.02);
}

torch::Tensor DeitImpl::forward(const torch::Tensor& x) {
  const auto& o = options_;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == o.in_chans(), "DeiT input must be (B, ", o.in_chans(), ", H, W), got ",
              x.sizes());
  TORCH_CHECK(x.size(2) % o.patch_size() == 0 && x.size(3) % o.patch_size() == 0 && x.size(2) > 0 && x.size(3) > 0,
              "DeiT input size ", x.size(2), "x", x.size(3), " must be a positive multiple of the patch size (",
              o.patch_size(), ")");
  const int64_t B = x.size(0), gh = x.size(2) / o.patch_size(), gw = x.size(3) / o.patch_size();
  auto tokens = patch_embed->forward(x).flatten(2).transpose(1, 2);  // (B, N, C)
  auto pos = pos_embed;
  const int64_t grid = o.image_size() / o.patch_size();
  if (gh != grid || gw != grid) {  // interpolate the patch part of the position embedding
    auto grid_pos = pos.narrow(1, 1, grid * grid).reshape({1, grid, grid, -1}).permute({0, 3, 1, 2});
    grid_pos = torch::nn::functional::interpolate(
        grid_pos, torch::nn::functional::InterpolateFuncOptions()
                      .size(std::vector<int64_t>{gh, gw})
                      .mode(torch::kBicubic)
                      .align_corners(false));
    pos = torch::cat({pos.narrow(1, 0, 1), grid_pos.flatten(2).transpose(1, 2)}, 1);
  }
  auto y = torch::cat({cls_token.expand({B, 1, -1}), tokens}, 1) + pos;
  for (size_t i = 0; i < blocks.size(); ++i)
    y = blocks[i]->forward(y, gh, gw, probe_sinks ? probe_sinks(0, static_cast<int64_t>(i)) : nullptr);
  return head->forward(norm->forward(y).select(1, 0));
}

}  // namespace rala

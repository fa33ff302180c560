#include "models/deit.h"

#include "attention_variants/common.h"
#include "models/ravlt.h"

namespace rala {

DeitOptions deit_tiny() { return DeitOptions(); }
DeitOptions deit_small() { return DeitOptions().embed_dim(384).heads(6); }

torch::Tensor resample_abs_pos_embed(const torch::Tensor& pos_embed, int64_t new_h, int64_t new_w, int64_t old_h,
                                     int64_t old_w, int64_t prefix_tokens) {
  TORCH_CHECK(pos_embed.dim() == 3 && pos_embed.size(0) == 1 && pos_embed.size(1) == prefix_tokens + old_h * old_w,
              "position embedding must be (1, ", prefix_tokens, " + ", old_h, "x", old_w, ", C), got ",
              pos_embed.sizes());
  TORCH_CHECK(new_h > 0 && new_w > 0, "position embedding: the new grid must be non-empty, got ", new_h, "x", new_w);
  if (new_h == old_h && new_w == old_w) return pos_embed;
  namespace F = torch::nn::functional;
  const int64_t C = pos_embed.size(2);
  auto grid = pos_embed.narrow(1, prefix_tokens, old_h * old_w)
                  .to(torch::kFloat32)  // timm: "interpolate needs float32"
                  .reshape({1, old_h, old_w, C})
                  .permute({0, 3, 1, 2});  // (1, C, old_h, old_w)
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{new_h, new_w})
                                  .mode(torch::kBicubic)
                                  .align_corners(false)
                                  .antialias(true));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_h * new_w, C}).to(pos_embed.scalar_type());
  return torch::cat({pos_embed.narrow(1, 0, prefix_tokens), grid}, 1);
}

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
  AttentionContext ctx;  // RoPE tables, where a variant uses them, come from the cache on demand
  ctx.height = grid_h;
  ctx.width = grid_w;
  ctx.probes = probes;
  if (probes) probes->on_layer(grid_h, grid_w, attn->options().prefix_tokens());
  auto y = x + rala::drop_path(attn->forward_tokens(norm1->forward(x), ctx), drop_path, is_training());
  auto m = fc2->forward(torch::gelu(fc1->forward(norm2->forward(y))));
  return y + rala::drop_path(m, drop_path, is_training());
}

std::vector<std::string> DeitImpl::harness_settings(const DeitOptions& options) {
  const auto grid = std::to_string(options.image_size() / options.patch_size());
  return {"softmax.gate=0", "softmax.rope=0", "softmax.lepe=0",  // timm's plain Attention unless told otherwise
          "agent.agent_num=49", "agent.bias_grid=" + grid};      // Agent-DeiT (agent_transformer/cfgs/agent_deit_*)
}

DeitImpl::DeitImpl(DeitOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  variant_ = parse_pattern(o.attn_pattern(), 1).front();  // one variant (letter or name) for all blocks
  const int64_t C = o.embed_dim(), grid = o.image_size() / o.patch_size();
  TORCH_CHECK(grid > 0, "DeiT: image size (", o.image_size(), ") must be at least the patch size (", o.patch_size(), ")");
  TORCH_CHECK(o.depth() > 0, "DeiT: depth must be positive, got ", o.depth());
  auto pe = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  patch_embed = pe->register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans(), C, o.patch_size()).stride(o.patch_size())));
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, C}));
  pos_embed = register_parameter("pos_embed", torch::randn({1, 1 + grid * grid, C}) * 0.02);
  const auto settings = distribute_settings({variant_}, o.attn_settings(), harness_settings(o));
  auto attn_options = AttentionOptions(C, o.heads()).settings(settings.front()).prefix_tokens(1).vit_layout(true);
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
  const int64_t grid = o.image_size() / o.patch_size();
  auto tokens = patch_embed->forward(x).flatten(2).transpose(1, 2);  // (B, N, C)
  auto pos = resample_abs_pos_embed(pos_embed, gh, gw, grid, grid, /*prefix_tokens=*/1);
  auto y = torch::cat({cls_token.expand({B, 1, -1}), tokens}, 1) + pos;  // (B, 1 + N, C)
  for (size_t i = 0; i < blocks.size(); ++i)
    y = blocks[i]->forward(y, gh, gw, probe_sinks ? probe_sinks(0, static_cast<int64_t>(i)) : nullptr);
  return head->forward(norm->forward(y).select(1, 0));
}

}  // namespace rala

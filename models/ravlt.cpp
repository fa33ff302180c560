#include "models/ravlt.h"

#include "attention_variants/common.h"
#include "attention_variants/fused.h"
#include "attention_variants/rope.h"

namespace rala {

LayerNorm2dImpl::LayerNorm2dImpl(int64_t channels) {
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}).eps(1e-6)));
}

torch::Tensor LayerNorm2dImpl::forward(const torch::Tensor& x) {
  if (fused::channels_last(x) && fused::applies({x, norm->weight, norm->bias}))
    return fused::layer_norm_channels_last(x, norm->weight, norm->bias, norm->options.eps());
  return norm->forward(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});  // (B, H, W, C) ↔ (B, C, H, W)
}

ConvFfnImpl::ConvFfnImpl(int64_t dim, int64_t hidden) {
  fc1 = register_module("fc1", conv1x1(dim, hidden));
  fc2 = register_module("fc2", conv1x1(hidden, dim));
  dwconv = register_module("dwconv", depthwise(hidden, 3));
}

torch::Tensor ConvFfnImpl::forward(const torch::Tensor& x) {
  auto h = fc1->forward(x);
  if (fused::channels_last(h) && fused::applies({h, dwconv->weight, dwconv->bias}))
    return fc2->forward(fused::gelu_dwconv_residual(h, dwconv->weight, dwconv->bias));  // one pass: GELU, dwconv, +
  h = torch::gelu(h);
  h = dwconv->forward(h) + h;
  return fc2->forward(h);
}

torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0.0) return x;
  const double keep = 1.0 - p;
  auto mask = torch::empty({x.size(0), 1, 1, 1}, x.options()).bernoulli_(keep);
  return x * mask / keep;
}

RavltBlockImpl::RavltBlockImpl(Variant variant, const AttentionOptions& attn_options, int64_t ffn_dim,
                               double drop_path_rate, double layer_init_value)
    : drop_path(drop_path_rate) {
  const int64_t C = attn_options.dim();
  pos = register_module("pos", depthwise(C, 3));
  norm1 = register_module("norm1", LayerNorm2d(C));
  attn = register_module("attn", make_attention(variant, attn_options));
  norm2 = register_module("norm2", LayerNorm2d(C));
  ffn = register_module("ffn", ConvFfn(C, ffn_dim));
  gamma_1 = register_parameter("gamma_1", torch::full({1, C, 1, 1}, layer_init_value));
  gamma_2 = register_parameter("gamma_2", torch::full({1, C, 1, 1}, layer_init_value));
}

torch::Tensor RavltBlockImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  if (!(is_training() && drop_path > 0) && fused::channels_last(x) &&
      fused::applies({x, pos->weight, pos->bias, norm1->norm->weight, norm1->norm->bias, norm2->norm->weight,
                      norm2->norm->bias, gamma_1, gamma_2})) {
    // Fused CPU path (same values): y = x + pos(x) and norm1(y) in one pass; y + γ1 ⊙ attn and norm2 of it in one
    // pass; y + γ2 ⊙ ffn in one pass.
    auto [y, n1] = fused::dwconv_residual_layer_norm(x, pos->weight, pos->bias, norm1->norm->weight,
                                                     norm1->norm->bias, norm1->norm->options.eps());
    auto a = attn->forward(n1, ctx).contiguous(torch::MemoryFormat::ChannelsLast);
    auto [y2, n2] = fused::residual_layer_norm(y, gamma_1, a, norm2->norm->weight, norm2->norm->bias,
                                               norm2->norm->options.eps());
    return fused::residual(y2, gamma_2, ffn->forward(n2).contiguous(torch::MemoryFormat::ChannelsLast));
  }
  auto y = x + pos->forward(x);
  if (is_training() && drop_path > 0) {
    y = y + rala::drop_path(gamma_1 * attn->forward(norm1->forward(y), ctx), drop_path, true);
    return y + rala::drop_path(gamma_2 * ffn->forward(norm2->forward(y)), drop_path, true);
  }
  // No stochastic depth: y + γ ⊙ f(y) as one addcmul pass (same values).
  y = torch::addcmul(y, gamma_1, attn->forward(norm1->forward(y), ctx));
  return torch::addcmul(y, gamma_2, ffn->forward(norm2->forward(y)));
}

RopeBufferImpl::RopeBufferImpl(int64_t head_dim) {
  // The official buffer exists for every stage; head dims not divisible by 4 (no RoPE possible) keep an empty one.
  angle = register_buffer("angle", head_dim % 4 == 0 ? rope_angle(head_dim) : torch::zeros({head_dim / 2}));
}

PatchMergingImpl::PatchMergingImpl(int64_t in, int64_t out) {
  reduction = register_module("reduction", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(2).padding(1)));
  norm = register_module("norm", BatchNorm2d(out));
}

torch::Tensor PatchMergingImpl::forward(const torch::Tensor& x) {
  auto y = reduction->forward(x);
  if (!norm->is_training() && fused::channels_last(y) &&
      fused::applies({y, norm->weight, norm->bias, norm->running_mean, norm->running_var})) {
    const auto [scale, shift] = fused::batch_norm_affine(*norm);
    fused::affine_(y, scale, shift, /*gelu=*/false);  // eval BatchNorm in place on the fresh conv output
    return y;
  }
  return norm->forward(y);
}

namespace {

/// Runs a Sequential of Conv2d / BatchNorm2d / GELU; in evaluation on the fused path each BatchNorm that follows a
/// convolution (and a GELU right after it) is one in-place pass over the convolution's fresh output.
torch::Tensor run_stem(torch::nn::Sequential& seq, const torch::Tensor& input) {
  torch::Tensor x = input;
  const size_t n = seq->size();
  for (size_t i = 0; i < n; ++i) {
    auto* bn = seq->ptr(i)->as<BatchNorm2d>();  // rala::BatchNorm2d (synchronised under a process group)
    const bool after_conv = i > 0 && seq->ptr(i - 1)->as<torch::nn::Conv2d>() != nullptr;
    if (bn != nullptr && after_conv && !bn->is_training() && fused::channels_last(x) &&
        fused::applies({x, bn->weight, bn->bias, bn->running_mean, bn->running_var})) {
      auto* next = i + 1 < n ? seq->ptr(i + 1)->as<torch::nn::GELU>() : nullptr;
      const bool gelu = next != nullptr && next->options.approximate() == "none";
      const auto [scale, shift] = fused::batch_norm_affine(*bn);
      fused::affine_(x, scale, shift, gelu);
      if (gelu) ++i;
      continue;
    }
    x = seq->begin()[static_cast<std::ptrdiff_t>(i)].forward(x);
  }
  return x;
}

}  // namespace

RavltStageImpl::RavltStageImpl(const RavltOptions& o, int64_t stage_index, Variant variant,
                               const std::vector<SettingPair>& settings,
                               const std::vector<double>& drop_paths)
    : stage(stage_index) {
  const int64_t C = o.embed_dims()[stage], h = o.heads()[stage];
  check_head_split(C, h, "RAVLT stage");
  head_dim = C / h;
  rope = register_module("RoPE", RopeBuffer(head_dim));
  auto attn_options = AttentionOptions(C, h).settings(settings);
  blocks = register_module("blocks", torch::nn::ModuleList());
  const auto ffn_dim = static_cast<int64_t>(o.mlp_ratio() * static_cast<double>(C));
  for (int64_t j = 0; j < o.depths()[stage]; ++j)
    blocks->push_back(RavltBlock(variant, attn_options, ffn_dim, drop_paths.at(j), o.layer_init_values()[stage]));
  if (stage + 1 < static_cast<int64_t>(o.embed_dims().size()))
    downsample = register_module("downsample", PatchMerging(C, o.embed_dims()[stage + 1]));
}

torch::Tensor RavltStageImpl::forward(const torch::Tensor& x, const std::function<ProbeSink*(int64_t, int64_t)>& sinks) {
  auto ctx = AttentionContext::for_input(x, head_dim);  // RoPE tables once per stage and grid size (cached)
  auto y = x;
  for (size_t j = 0; j < blocks->size(); ++j) {
    ctx.probes = sinks ? sinks(stage, static_cast<int64_t>(j)) : nullptr;
    if (ctx.probes) ctx.probes->on_layer(ctx.height, ctx.width, 0);
    y = blocks[j]->as<RavltBlock>()->forward(y, ctx);
  }
  return downsample.is_empty() ? y : downsample->forward(y);
}

RavltImpl::RavltImpl(RavltOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  const size_t stages_n = o.embed_dims().size();
  TORCH_CHECK(stages_n > 0 && o.depths().size() == stages_n && o.heads().size() == stages_n &&
                  o.layer_init_values().size() == stages_n,
              "RAVLT: embed_dims, depths, heads and layer_init_values need one entry per stage, got ",
              o.embed_dims().size(), ", ", o.depths().size(), ", ", o.heads().size(), ", ",
              o.layer_init_values().size());
  variants_ = parse_pattern(o.attn_pattern(), stages_n);
  const auto stage_settings = distribute_settings(variants_, o.attn_settings());
  const int64_t C0 = o.embed_dims()[0];
  TORCH_CHECK(C0 % 2 == 0, "RAVLT: the first embed dim must be even (the stem halves it), got ", C0);
  auto conv = [](int64_t in, int64_t out, int64_t stride) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
  };
  auto patch_embed = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  stem = patch_embed->register_module(
      "proj", torch::nn::Sequential(conv(o.in_chans(), C0 / 2, 2), BatchNorm2d(C0 / 2), torch::nn::GELU(),
                                    conv(C0 / 2, C0 / 2, 1), BatchNorm2d(C0 / 2), torch::nn::GELU(),
                                    conv(C0 / 2, C0 / 2, 1), BatchNorm2d(C0 / 2), torch::nn::GELU(),
                                    conv(C0 / 2, C0, 2), BatchNorm2d(C0)));
  int64_t total = 0;
  for (auto d : o.depths()) total += d;
  auto rates = torch::linspace(0, o.drop_path_rate(), total, torch::kFloat64);  // linear ramp over all blocks
  auto layers = register_module("layers", torch::nn::ModuleList());
  int64_t first = 0;
  for (size_t i = 0; i < stages_n; ++i) {
    std::vector<double> dp;
    for (int64_t j = 0; j < o.depths()[i]; ++j) dp.push_back(rates[first + j].item<double>());
    first += o.depths()[i];
    stages.push_back(RavltStage(o, static_cast<int64_t>(i), variants_[i], stage_settings[i], dp));
    layers->push_back(stages.back());
  }
  proj = register_module("proj", conv1x1(o.embed_dims().back(), o.projection()));
  norm = register_module("norm", BatchNorm2d(o.projection()));
  head = register_module("head", conv1x1(o.projection(), o.num_classes()));
  // Official init: every conv trunc_normal_(std 0.02) with zero bias (timm truncates at ±2 absolute, i.e. ±100σ, so
  // it is a plain normal); LayerNorm (1, 0); BN default; γ as given.
  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2d>()) {
      c->weight.normal_(0, 0.02);
      if (c->bias.defined()) c->bias.zero_();
    }
  }
}

torch::Tensor RavltImpl::forward_features(const torch::Tensor& x, std::vector<torch::Tensor>* features) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.in_chans(), "RAVLT input must be (B, ", options_.in_chans(),
              ", H, W), got ", x.sizes());
  // Channels-last memory from the stem on: (B, C, H, W) views of token-major (B, H, W, C) storage, so LayerNorm over
  // channels, the 1×1 convolutions and the head split need no layout copies (values unchanged).
  auto y = run_stem(stem, x.contiguous(torch::MemoryFormat::ChannelsLast));
  if (features) features->push_back(y);
  for (auto& stage : stages) {
    y = stage->forward(y, probe_sinks);
    if (features) features->push_back(y);
  }
  return y;
}

torch::Tensor RavltImpl::forward(const torch::Tensor& x) {
  auto y = forward_features(x);
  y = norm->forward(proj->forward(y));
  y = y * torch::sigmoid(y);                                  // swish
  y = torch::adaptive_avg_pool2d(y, {1, 1});                  // (B, projection, 1, 1)
  return head->forward(y).flatten(1);                         // (B, classes)
}

}  // namespace rala

#include "attention_variants/litemla.h"

#include <functional>
#include <sstream>

#include "attention_variants/registry.h"

namespace rala {

namespace {

constexpr const char* kName = "litemla";
constexpr int64_t kScaleKernels[] = {3, 5, 7, 9};

/// "none" and every ascending, non-empty list of the kernels above, shortest first, each length in lexicographic order
/// ("3", "5", "7", "9", "3,5", "3,7", ..., "3,5,7,9").
std::vector<std::string> scale_choices() {
  constexpr int kCount = sizeof(kScaleKernels) / sizeof(kScaleKernels[0]);
  std::vector<std::string> out{"none"};
  std::function<void(int, int, std::string)> extend = [&](int from, int left, std::string prefix) {
    if (left == 0) return out.push_back(prefix);
    for (int i = from; i <= kCount - left; ++i)
      extend(i + 1, left - 1, prefix + (prefix.empty() ? "" : ",") + std::to_string(kScaleKernels[i]));
  };
  for (int size = 1; size <= kCount; ++size) extend(0, size, "");
  return out;
}

std::vector<int64_t> parse_scales(const std::string& text) {
  std::vector<int64_t> out;
  if (text == "none") return out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

LitemlaConvLayerImpl::LitemlaConvLayerImpl(int64_t in, int64_t out, bool with_norm) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).bias(false)));
  if (with_norm) norm = register_module("norm", BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(1e-5)));
}

torch::Tensor LitemlaConvLayerImpl::forward(const torch::Tensor& x) {
  auto y = conv->forward(x);
  return norm.is_empty() ? y : norm->forward(y);
}

const SettingsSchema& LitemlaAttentionImpl::schema() {
  static const SettingsSchema s = {
      choice_setting("scales", "5", scale_choices(),
                     "kernels of the multi-scale aggregation branches (each adds h heads), or none"),
      real_setting("eps", 1e-15, 0.0, 1.0, "ε added to the denominator Σ_j k_j·q_i")};
  return s;
}

std::vector<SettingPair> LitemlaAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::string scales;
  for (int i = 0;; ++i) {
    auto it = shapes.find("aggreg." + std::to_string(i) + ".0.weight");
    if (it == shapes.end() || it->second.size() != 4) break;
    scales += (scales.empty() ? "" : ",") + std::to_string(it->second[2]);
  }
  if (scales.empty() && !shapes.count("qkv.conv.weight")) return {};
  return {{"scales", scales.empty() ? "none" : scales}};
}

LitemlaAttentionImpl::LitemlaAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::litemla),
      scales_(parse_scales(settings_.choice("scales"))),
      eps_(settings_.real("eps")) {
  check_head_split(options_.dim(), options_.heads(), kName);
  const int64_t C = options_.dim(), h = options_.heads(), d = C / h, total = 3 * h * d;
  qkv = register_module("qkv", LitemlaConvLayer(C, total, /*with_norm=*/false));
  aggreg = register_module("aggreg", torch::nn::ModuleList());
  for (const int64_t k : scales_) {
    torch::nn::Sequential branch(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(total, total, k).padding(k / 2).groups(total).bias(false)),
        torch::nn::Conv2d(torch::nn::Conv2dOptions(total, total, 1).groups(3 * h).bias(false)));
    aggreg->push_back(branch);
    aggreg_.push_back(branch);
  }
  proj = register_module("proj", LitemlaConvLayer(h * d * (1 + static_cast<int64_t>(scales_.size())), C,
                                                  /*with_norm=*/true));
}

torch::Tensor LitemlaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, kName);
  auto prefix = context_prefix(ctx, options_, x, kName);
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), d = head_dim(), hp = total_heads();
  const int64_t P = ctx.prefix_tokens(), N = P + H * W;  // all tokens, the prefix first

  auto qkv_map = qkv->forward(x);  // (B, 3hd, H, W)
  torch::Tensor multi = qkv_map;
  if (!aggreg_.empty()) {
    std::vector<torch::Tensor> parts{qkv_map};
    for (auto& branch : aggreg_) parts.push_back(branch->forward(qkv_map));
    multi = torch::cat(parts, 1);  // (B, 3hd(1+S), H, W)
  }
  emit_internal(ctx, "qkv_multiscale", multi);
  auto all = multi.flatten(2);  // (B, 3hd(1+S), N)
  if (P > 0) {
    // Prefix tokens as a (B, C, 1, P) map: the 1×1 qkv conv, and per scale only the grouped 1×1 (the k×k depthwise
    // conv is bound to the grid).
    auto pre = qkv->forward(prefix.transpose(1, 2).unsqueeze(2));  // (B, 3hd, 1, P)
    std::vector<torch::Tensor> parts{pre};
    for (auto& branch : aggreg_) parts.push_back(branch->at<torch::nn::Conv2dImpl>(1).forward(pre));
    all = torch::cat({torch::cat(parts, 1).flatten(2), all}, 2);  // (B, 3hd(1+S), P + H·W)
  }

  // The attention runs in fp32 at least (the official autocast-off region casts fp16 up).
  const bool low = multi.scalar_type() == torch::kHalf || multi.scalar_type() == torch::kBFloat16;
  auto t = (low ? all.to(torch::kFloat) : all).reshape({B, hp, 3 * d, N});  // per head [q | k | v]
  auto q = torch::relu(t.narrow(2, 0, d));                                     // (B, h', d, N)
  auto k = torch::relu(t.narrow(2, d, d));
  auto v = t.narrow(2, 2 * d, d);
  auto vk = torch::matmul(torch::constant_pad_nd(v, {0, 0, 0, 1}, 1.0), k.transpose(-1, -2));  // (B, h', d+1, d)
  auto num = torch::matmul(vk, q);                                                            // (B, h', d+1, N)
  auto den = num.narrow(2, d, 1);                                                             // (B, h', 1, N)
  auto o = num.narrow(2, 0, d) / (den + eps_);                                                // (B, h', d, N)
  emit_probe(ctx, Probe::kv_buffer, vk);
  emit_internal(ctx, "normalizer", den.squeeze(2));
  emit_internal(ctx, "output_heads", o);
  if (probe_wanted(ctx, Probe::normalizer_z)) emit_probe(ctx, Probe::normalizer_z, 1.0 / (den.squeeze(2) + eps_));
  emit_probe(ctx, Probe::output, o.transpose(-1, -2));        // (B, h', N, d)
  emit_probe(ctx, Probe::output_gated, o.transpose(-1, -2));  // no gate and no local term
  if (probe_wanted(ctx, Probe::attention, N)) {
    auto scores = torch::matmul(q.transpose(-1, -2), k);  // (B, h', N, N): q_i · k_j
    emit_probe(ctx, Probe::attention, scores / (scores.sum(-1, true) + eps_));
  }
  if (P > 0) {  // proj (1×1 conv + BN) on all tokens as one (B, h'd, 1, P + H·W) map: BN statistics over all tokens
    auto o_all = o.reshape({B, hp * d, 1, N}).to(multi.scalar_type());
    emit_internal(ctx, "output_pre_proj", o_all);
    return finish_tokens(ctx, proj->forward(o_all).squeeze(2).transpose(1, 2), H, W);
  }
  auto o_map = o.reshape({B, hp * d, H, W}).to(multi.scalar_type());  // channel n·d + i = feature i of head n
  emit_internal(ctx, "output_pre_proj", o_map);
  return proj->forward(o_map);  // (B, C, H, W)
}

AttentionMacs LitemlaAttentionImpl::macs(int64_t height, int64_t width) const {
  // G grid tokens, N = P + G tokens in all (the depthwise convs run on the grid only).
  const int64_t G = height * width, N = options_.prefix_tokens() + G, C = options_.dim(), d = head_dim();
  const int64_t total = 3 * C;
  AttentionMacs m;
  m.projections = total * C * N;                                            // qkv.conv
  for (const int64_t k : scales_) m.projections += (k * k * G + d * N) * total;  // depthwise k×k + grouped 1×1
  m.projections += total_heads() * d * C * N;                               // proj.conv
  m.matmuls = total_heads() * 2 * (d + 1) * d * N;                           // [v;1]kᵀ and vk·q
  return m;
}

}  // namespace rala

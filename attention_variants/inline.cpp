#include "attention_variants/inline.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& InlineAttentionImpl::schema() {
  static const SettingsSchema s = {
      choice_setting("kernel_func", "identity", {"identity", "relu", "leakyrelu", "exp"},
                     "φ on q and k: identity (the PVT/DeiT InLine), or the Swin copy's relu, leakyrelu (0.01), exp(0.2x)"),
      flag_setting("residual", true, "the per-sample dynamic depthwise residual on v (its residual.* parameters)"),
      integer_setting("residual_kernel", 3, 1, 15, "kernel of the dynamic depthwise residual (official: 3)",
                      /*odd=*/true)};
  return s;
}

InlineAttentionImpl::InlineAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::inline_attention),
      kernel_func_(settings_.choice("kernel_func")),
      residual_on_(settings_.flag("residual")),
      residual_kernel_(settings_.integer("residual_kernel")) {
  check_head_split(dim(), heads(), "inline");
  const int64_t C = dim(), h = heads(), kk = residual_kernel_ * residual_kernel_;
  if (options_.vit_layout()) {  // the DeiT port's one qkv Linear, rows [q | k | v]
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(C, 3 * C).bias(true)));
  } else {
    q = register_module("q", torch::nn::Linear(torch::nn::LinearOptions(C, C).bias(true)));
    kv = register_module("kv", torch::nn::Linear(torch::nn::LinearOptions(C, 2 * C).bias(true)));
  }
  proj = register_module("proj", torch::nn::Linear(C, C));
  if (residual_on_)
    residual = register_module(
        "residual", torch::nn::Sequential(torch::nn::Conv1d(torch::nn::Conv1dOptions(C, C, 1).groups(h)),
                                          torch::nn::GELU(),
                                          torch::nn::Conv1d(torch::nn::Conv1dOptions(C, kk * C, 1).groups(h))));
}

namespace {

/// φ of the Swin copy (models/inline_swin.py): identity, ReLU, LeakyReLU (slope 0.01), exp(0.2·x).
torch::Tensor kernel(const torch::Tensor& x, const std::string& name) {
  if (name == "relu") return torch::relu(x);
  if (name == "leakyrelu") return torch::leaky_relu(x, 0.01);
  if (name == "exp") return torch::exp(x * 0.2);
  return x;
}
}  // namespace

std::vector<SettingPair> InlineAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  const auto* w0 = find_state_entry(shapes, "residual.0.weight", "inline");
  const auto* w2 = find_state_entry(shapes, "residual.2.weight", "inline");
  if (w0 == nullptr || w2 == nullptr) return {{"residual", "0"}};
  TORCH_CHECK(w0->size() == 3 && w2->size() == 3 && (*w0)[0] > 0 && (*w2)[0] % (*w0)[0] == 0,
              "inline: residual.0.weight / residual.2.weight must be (C, C/h, 1) / (k²C, C/h, 1), got ",
              c10::IntArrayRef(*w0), " / ", c10::IntArrayRef(*w2));
  const int64_t kk = (*w2)[0] / (*w0)[0];
  auto k = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(kk))));
  TORCH_CHECK(k * k == kk, "inline: residual.2.weight has ", (*w2)[0], " = ", kk, "·C rows, not k²·C");
  return {{"residual", "1"}, {"residual_kernel", std::to_string(k)}};
}

torch::Tensor InlineAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "inline");
  auto prefix = context_prefix(ctx, options_, x, "inline");
  const int64_t B = x.size(0), C = dim(), h = heads(), d = C / h, H = x.size(2), W = x.size(3);
  const int64_t P = ctx.prefix_tokens(), G = H * W, N = P + G;  // all tokens, the prefix first
  const double s = 1.0 / std::sqrt(static_cast<double>(d));

  auto tokens = with_prefix(prefix, map_to_tokens(x));  // (B, N, C)
  torch::Tensor q_out, kv_out;                          // (B, N, C), (B, N, 2C)
  if (!qkv.is_empty()) {
    auto all = qkv->forward(tokens);
    q_out = all.narrow(-1, 0, C);
    kv_out = all.narrow(-1, C, 2 * C);
  } else {
    kv_out = kv->forward(tokens);
    q_out = q->forward(tokens);
  }
  auto qh = token_heads(kernel(q_out, kernel_func_), h);                       // (B, h, N, d)
  auto kh = token_heads(kernel(kv_out.narrow(-1, 0, C), kernel_func_), h);     // (B, h, N, d)
  auto v = kv_out.narrow(-1, C, C);
  auto vh = token_heads(v, h);

  const double f = std::sqrt(s / static_cast<double>(N));
  auto kv_buffer = torch::matmul(kh.transpose(-2, -1) * f, vh * f);  // (B, h, d, d) = (s/N) Σ kᵀv
  auto k_mean = kh.mean(2, true), v_mean = vh.mean(2, true);        // (B, h, 1, d)
  auto correction = 1.0 - torch::matmul(qh, k_mean.transpose(-2, -1)) * s;  // (B, h, N, 1)
  auto o = torch::matmul(qh, kv_buffer) + correction * v_mean;               // (B, h, N, d)
  auto pre_proj = merge_token_heads(o);                                      // (B, N, C)

  if (residual_on_) {
    const int64_t k = residual_kernel_;
    // One k×k kernel per sample and channel from the token mean of the input, prefix tokens included (the DeiT
    // port's x.mean(dim=1)): (B, k²C, 1) → (B·C, 1, k, k). The conv runs on the grid's v and adds to the grid.
    auto mean = P > 0 ? tokens.mean(1) : x.mean({2, 3});  // (B, C)
    auto weight = residual->forward(mean.unsqueeze(-1)).reshape({B * C, 1, k, k});
    auto v_map = tokens_to_map(v.narrow(1, P, G), H, W).reshape({1, B * C, H, W});
    auto local = torch::conv2d(v_map, weight, {}, 1, k / 2, 1, B * C).reshape({B, C, G}).transpose(1, 2);  // (B,G,C)
    if (internal_wanted(ctx, "residual_weight")) emit_internal(ctx, "residual_weight", weight.reshape({B, C, k, k}));
    emit_internal(ctx, "local_residual", local);
    pre_proj = P > 0 ? torch::cat({pre_proj.narrow(1, 0, P), pre_proj.narrow(1, P, G) + local}, 1) : pre_proj + local;
  }
  auto out = proj->forward(pre_proj);  // (B, N, C)

  emit_probe(ctx, Probe::kv_buffer, kv_buffer);
  emit_probe(ctx, Probe::output, o);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(pre_proj, h));
  emit_probe(ctx, Probe::feature_q, qh);
  emit_probe(ctx, Probe::feature_k, kh);
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention,
               torch::matmul(qh, (kh - k_mean).transpose(-2, -1)) * (s / static_cast<double>(N)) +
                   1.0 / static_cast<double>(N));
  emit_internal(ctx, "k_mean", k_mean.squeeze(2));
  emit_internal(ctx, "v_mean", v_mean.squeeze(2));
  emit_internal(ctx, "mean_correction", correction.squeeze(-1));
  emit_internal(ctx, "output_heads", o);
  emit_internal(ctx, "output_pre_proj", pre_proj);
  return finish_tokens(ctx, out, H, W);
}

AttentionMacs InlineAttentionImpl::macs(int64_t height, int64_t width) const {
  const int64_t G = height * width, N = options_.prefix_tokens() + G, C = dim(), h = heads(), d = C / h;
  const int64_t kk = residual_kernel_ * residual_kernel_;
  AttentionMacs m;
  // q (C outputs), kv (2C), proj: 4·N·C² on all N = P + H·W tokens; the residual branch: its two grouped 1×1 convs
  // run once per image on the token mean (C·C/h + k²C·C/h), the dynamic depthwise conv k²·C·H·W on the grid.
  m.projections = 4 * N * C * C;
  if (residual_on_) m.projections += (1 + kk) * C * (C / h) + kk * C * G;
  // Per head: kv = kᵀv: N·d²; q·kv: N·d²; q·mean k: N·d; the correction times mean v: N·d. Over h heads: 2·N·d·C + 2·N·C.
  m.matmuls = 2 * N * d * C + 2 * N * C;
  return m;
}

}  // namespace rala

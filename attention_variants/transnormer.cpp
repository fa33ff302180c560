#include "attention_variants/transnormer.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

torch::Tensor simple_rms_norm(const torch::Tensor& x, double eps) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(x.size(-1)));
  return x / (x.norm(2, {-1}, /*keepdim=*/true) * scale + eps);
}

TransnormerUrpeImpl::TransnormerUrpeImpl(int64_t head_dim) {
  TORCH_CHECK(head_dim >= 2, "transnormer URPE: head dim must be at least 2, got ", head_dim);
  auto k = torch::arange(head_dim / 2, torch::kFloat64);
  theta = register_parameter(
      "theta", torch::pow(10000.0, k * (-2.0 / static_cast<double>(head_dim))).to(torch::kFloat32).reshape({1, 1, -1}));
  auto u = torch::randn({head_dim});
  v = register_buffer("v", u / u.norm());
}

torch::Tensor TransnormerUrpeImpl::forward(const torch::Tensor& x) const {
  const int64_t L = x.size(-2), d = x.size(-1), e = d - d % 2;
  TORCH_CHECK(d == v.size(0), "transnormer URPE: features have width ", d, ", the URPE was built for ", v.size(0));
  auto y = reflect(x);  // (..., L, d)
  // RoPE with learned θ on consecutive pairs: angle (L, e) = l · [θ0, θ0, θ1, θ1, ...]
  auto angle = torch::arange(L, x.options()).unsqueeze(1) * theta.reshape({-1}).repeat_interleave(2);
  auto rot = e == d ? y : y.narrow(-1, 0, e);
  // (−x1, x0, −x3, x2, ...)
  auto half = torch::stack({-rot.slice(-1, 1, e, 2), rot.slice(-1, 0, e, 2)}, -1).flatten(-2);
  auto out = rot * angle.cos() + half * angle.sin();
  return e == d ? out : torch::cat({out, y.narrow(-1, e, d - e)}, -1);
}

torch::Tensor TransnormerUrpeImpl::reflect(const torch::Tensor& x) const {
  // Householder: x − 2 (x·v) v
  return x - 2.0 * torch::matmul(x, v).unsqueeze(-1) * v;
}

namespace detail {
torch::Tensor transnormer_qkv(const torch::Tensor& tokens, const torch::nn::Linear& q_proj,
                              const torch::nn::Linear& k_proj, const torch::nn::Linear& v_proj) {
  auto w = torch::cat({q_proj->weight, k_proj->weight, v_proj->weight});  // (3C, C)
  auto b = torch::cat({q_proj->bias, k_proj->bias, v_proj->bias});
  return torch::linear(tokens, w, b);
}
}  // namespace detail

const SettingsSchema& TransnormerAttentionImpl::schema() {
  static const SettingsSchema s = {
      choice_setting("phi", "elu", {"elu", "1+elu"},
                     "feature map on q and k: elu = F.elu without +1 (T1, can be negative), 1+elu (T2)"),
      flag_setting("urpe", false,
                   "URPE on φ(q), φ(k): Householder with a fixed unit v, then RoPE with learned θ, raster index"),
      flag_setting("norm", true, "SimpleRMSNorm over the full C before out_proj (off: no normalisation at all)")};
  return s;
}

std::vector<SettingPair> TransnormerAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  if (shapes.count("urpe.theta") > 0 || shapes.count("urpe.v") > 0) return {{"urpe", "1"}};
  return {};
}

TransnormerAttentionImpl::TransnormerAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::transnormer),
      phi_(settings_.choice("phi") == "1+elu" ? TransnormerPhi::one_plus_elu : TransnormerPhi::elu),
      urpe_on_(settings_.flag("urpe")),
      norm_on_(settings_.flag("norm")) {
  check_head_split(options_.dim(), options_.heads(), "transnormer");
  const int64_t C = options_.dim();
  q_proj = register_module("q_proj", torch::nn::Linear(C, C));
  k_proj = register_module("k_proj", torch::nn::Linear(C, C));
  v_proj = register_module("v_proj", torch::nn::Linear(C, C));
  out_proj = register_module("out_proj", torch::nn::Linear(C, C));
  // Official init: xavier_uniform with gain 1/√2 on q/k/v, gain 1 on out_proj, out_proj bias 0.
  torch::NoGradGuard no_grad;
  for (auto* p : {&q_proj, &k_proj, &v_proj}) torch::nn::init::xavier_uniform_((*p)->weight, 1.0 / std::sqrt(2.0));
  torch::nn::init::xavier_uniform_(out_proj->weight);
  out_proj->bias.zero_();
  if (urpe_on_) urpe = register_module("urpe", TransnormerUrpe(head_dim()));
}

torch::Tensor TransnormerAttentionImpl::feature(const torch::Tensor& x) const {
  return phi_ == TransnormerPhi::elu ? torch::elu(x) : elu_feature(x);
}

torch::Tensor TransnormerAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "transnormer");
  const int64_t C = options_.dim(), h = options_.heads(), H = x.size(2), W = x.size(3);
  auto prefix = context_prefix(ctx, options_, x, "transnormer");
  const int64_t P = ctx.prefix_tokens(), N = P + H * W;  // all tokens, the prefix first
  auto qkv = detail::transnormer_qkv(with_prefix(prefix, map_to_tokens(x)), q_proj, k_proj, v_proj);  // (B, N, 3C)
  auto q = feature(token_heads(qkv.narrow(2, 0, C), h));                                             // (B, h, N, d)
  auto k = feature(token_heads(qkv.narrow(2, C, C), h));
  auto v = token_heads(qkv.narrow(2, 2 * C, C), h);
  if (urpe_on_) {  // positions along the grid's raster sequence; prefix tokens get URPE at index 0 (reflection only)
    auto urpe_of = [&](const torch::Tensor& t) {
      if (P == 0) return urpe->forward(t);
      return torch::cat({urpe->reflect(t.narrow(2, 0, P)), urpe->forward(t.narrow(2, P, N - P))}, 2);
    };
    q = urpe_of(q);
    k = urpe_of(k);
  }
  emit_probe(ctx, Probe::feature_q, q);
  emit_probe(ctx, Probe::feature_k, k);
  auto kv = torch::matmul(k.transpose(-2, -1), v);  // (B, h, d, d)
  auto y = torch::matmul(q, kv);                    // (B, h, N, d)
  emit_probe(ctx, Probe::kv_buffer, kv);
  emit_probe(ctx, Probe::output, y);
  if (probe_wanted(ctx, Probe::attention, N)) emit_probe(ctx, Probe::attention, torch::matmul(q, k.transpose(-2, -1)));
  auto merged = merge_token_heads(y);  // (B, N, C), channel n·d + i
  emit_internal(ctx, "output_pre_norm", merged);
  if (norm_on_) merged = simple_rms_norm(merged);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(merged, h));
  return finish_tokens(ctx, out_proj->forward(merged), H, W);
}

AttentionMacs TransnormerAttentionImpl::macs(int64_t height, int64_t width) const {
  // projections: q, k, v, out_proj, C² each per token; matmuls: kv = φ(K)ᵀV (N·d² per head) and φ(Q)·kv (N·d² per
  // head): 2·N·d·C, N = P + H·W tokens. φ, URPE and the norm are elementwise and not counted.
  const int64_t N = options_.prefix_tokens() + height * width, C = options_.dim();
  return {4 * C * C * N, 2 * N * head_dim() * C};
}

}  // namespace rala

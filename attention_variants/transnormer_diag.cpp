#include "attention_variants/transnormer_diag.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& TransnormerDiagAttentionImpl::schema() {
  static const SettingsSchema s = {
      integer_setting("chunk", 64, 1, int64_t{1} << 20,
                      "tokens per diagonal block, consecutive in raster order (the sequence is zero-padded to a multiple)"),
      choice_setting("kernel", "relu", {"relu", "softmax"},
                     "block weights: relu = ReLU(q kᵀ/√d) unnormalised (T1), softmax over the chunk's keys (T2)"),
      flag_setting("norm", true, "SimpleRMSNorm over the full C before out_proj (T1 on, T2 off)"),
      flag_setting("urpe", false,
                   "URPE on q, k: Householder with a fixed unit v, then RoPE with learned θ, index inside the chunk")};
  return s;
}

std::vector<SettingPair> TransnormerDiagAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  return TransnormerAttentionImpl::settings_from_state_shapes(shapes);
}

TransnormerDiagAttentionImpl::TransnormerDiagAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::transnormer_diag),
      chunk_(settings_.integer("chunk")),
      softmax_(settings_.choice("kernel") == "softmax"),
      norm_on_(settings_.flag("norm")),
      urpe_on_(settings_.flag("urpe")) {
  check_head_split(options_.dim(), options_.heads(), "transnormer_diag");
  const int64_t C = options_.dim();
  q_proj = register_module("q_proj", torch::nn::Linear(C, C));
  k_proj = register_module("k_proj", torch::nn::Linear(C, C));
  v_proj = register_module("v_proj", torch::nn::Linear(C, C));
  out_proj = register_module("out_proj", torch::nn::Linear(C, C));
  // Official init: xavier_uniform (gain 1) on all four weights, out_proj bias 0.
  torch::NoGradGuard no_grad;
  for (auto* p : {&q_proj, &k_proj, &v_proj, &out_proj}) torch::nn::init::xavier_uniform_((*p)->weight);
  out_proj->bias.zero_();
  if (urpe_on_) urpe = register_module("urpe", TransnormerUrpe(head_dim()));
}

torch::Tensor TransnormerDiagAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "transnormer_diag");
  const int64_t B = x.size(0), C = options_.dim(), h = options_.heads(), d = head_dim();
  const int64_t H = x.size(2), W = x.size(3), N = H * W, c = chunk_;
  const int64_t pad = (c - N % c) % c, padded = N + pad, chunks = padded / c;
  auto qkv = detail::transnormer_qkv(map_to_tokens(x), q_proj, k_proj, v_proj);  // (B, N, 3C)
  if (pad > 0) qkv = torch::constant_pad_nd(qkv, {0, 0, 0, pad});                 // (B, N', 3C), zero rows after N
  auto blocks = [&](int64_t c0) {
    return token_heads(qkv.narrow(2, c0, C), h).reshape({B, h, chunks, c, d});  // (B, h, N'/c, c, d)
  };
  auto q = blocks(0) * (1.0 / std::sqrt(static_cast<double>(d)));
  auto k = blocks(C), v = blocks(2 * C);
  if (urpe_on_) {
    q = urpe->forward(q);  // index along dim −2: the position inside the chunk
    k = urpe->forward(k);
  }
  auto logits = torch::matmul(q, k.transpose(-2, -1));  // (B, h, N'/c, c, c)
  auto weights = softmax_ ? torch::softmax(logits, -1) : torch::relu(logits);
  emit_probe(ctx, Probe::chunk_weights, weights);
  auto y = torch::matmul(weights, v).reshape({B, h, padded, d});  // (B, h, N', d)
  if (pad > 0) y = y.narrow(2, 0, N);                              // (B, h, N, d)
  emit_probe(ctx, Probe::output, y);
  if (probe_wanted(ctx, Probe::attention, N)) {
    // Block-diagonal (N', N') map: A[(g, i), (g', j)] = P[g, i, j] δ(g, g'); keep the real rows and columns.
    auto eye = torch::eye(chunks, weights.options()).view({1, 1, chunks, 1, chunks, 1});
    auto full = (weights.unsqueeze(4) * eye).reshape({B, h, padded, padded});
    emit_probe(ctx, Probe::attention, full.narrow(2, 0, N).narrow(3, 0, N));
  }
  auto merged = merge_token_heads(y);  // (B, N, C), channel n·d + i
  emit_internal(ctx, "output_pre_norm", merged);
  if (norm_on_) merged = simple_rms_norm(merged);
  emit_internal(ctx, "output_pre_proj", merged);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(merged, h));
  return tokens_to_map(out_proj->forward(merged), H, W);
}

AttentionMacs TransnormerDiagAttentionImpl::macs(int64_t height, int64_t width) const {
  // projections: q, k, v, out_proj, C² each per token (on the N real tokens). matmuls on the padded sequence
  // N' = ⌈N/c⌉·c: per head and chunk q kᵀ and P v, c²·d each: 2·(N'/c)·c²·d·h = 2·N'·c·C. Padding is counted: the
  // official code multiplies the zero rows too. Scaling, ReLU/softmax and the norm are elementwise and not counted.
  const int64_t N = height * width, C = options_.dim(), c = chunk_;
  const int64_t padded = (N + c - 1) / c * c;
  return {4 * C * C * N, 2 * padded * c * C};
}

}  // namespace rala

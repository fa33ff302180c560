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
  auto prefix = context_prefix(ctx, options_, x, "transnormer_diag");
  const int64_t P = ctx.prefix_tokens();
  auto all = detail::transnormer_qkv(with_prefix(prefix, map_to_tokens(x)), q_proj, k_proj, v_proj);  // (B, P+N, 3C)
  auto qkv = all.narrow(1, P, N);                                                  // (B, N, 3C): the grid
  if (pad > 0) qkv = torch::constant_pad_nd(qkv, {0, 0, 0, pad});                 // (B, N', 3C), zero rows after N
  auto blocks = [&](int64_t c0) {
    return token_heads(qkv.narrow(2, c0, C), h).reshape({B, h, chunks, c, d});  // (B, h, N'/c, c, d)
  };
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto q = blocks(0) * scale;
  auto k = blocks(C), v = blocks(2 * C);
  if (urpe_on_) {
    q = urpe->forward(q);  // index along dim −2: the position inside the chunk
    k = urpe->forward(k);
  }
  auto logits = torch::matmul(q, k.transpose(-2, -1));  // (B, h, N'/c, c, c)
  // Prefix tokens are global tokens (as Longformer's [CLS]): every grid query also reads the P prefix keys, in its
  // chunk's normalisation; each prefix query reads all P + N real tokens. URPE gives them index 0 (reflection only).
  torch::Tensor pq, pk, pv;  // (B, h, P, d)
  if (P > 0) {
    auto heads = [&](int64_t c0) { return token_heads(all.narrow(1, 0, P).narrow(2, c0, C), h); };
    pq = heads(0) * scale, pk = heads(C), pv = heads(2 * C);
    if (urpe_on_) {
      pq = urpe->reflect(pq);
      pk = urpe->reflect(pk);
    }
    logits = torch::cat({logits, torch::matmul(q, pk.unsqueeze(2).transpose(-2, -1))}, -1);  // (B, h, N'/c, c, c+P)
  }
  auto weights = softmax_ ? torch::softmax(logits, -1) : torch::relu(logits);
  emit_probe(ctx, Probe::chunk_weights, weights);
  auto local = P > 0 ? weights.narrow(-1, 0, c) : weights;
  auto y = torch::matmul(local, v);  // (B, h, N'/c, c, d)
  if (P > 0) y = y + torch::matmul(weights.narrow(-1, c, P), pv.unsqueeze(2));
  y = y.reshape({B, h, padded, d});     // (B, h, N', d)
  if (pad > 0) y = y.narrow(2, 0, N);  // (B, h, N, d)
  torch::Tensor prefix_weights;        // (B, h, P, P + N)
  if (P > 0) {
    auto keys = torch::cat({pk, k.reshape({B, h, padded, d}).narrow(2, 0, N)}, 2);  // (B, h, P + N, d)
    auto values = torch::cat({pv, v.reshape({B, h, padded, d}).narrow(2, 0, N)}, 2);
    auto prefix_logits = torch::matmul(pq, keys.transpose(-2, -1));
    prefix_weights = softmax_ ? torch::softmax(prefix_logits, -1) : torch::relu(prefix_logits);
    y = torch::cat({torch::matmul(prefix_weights, values), y}, 2);  // (B, h, P + N, d)
  }
  emit_probe(ctx, Probe::output, y);
  if (probe_wanted(ctx, Probe::attention, P + N)) {
    // Block-diagonal (N', N') map: A[(g, i), (g', j)] = P[g, i, j] δ(g, g'); keep the real rows and columns. With
    // prefix tokens: their rows on top, their columns on the left.
    auto eye = torch::eye(chunks, weights.options()).view({1, 1, chunks, 1, chunks, 1});
    auto full = (local.unsqueeze(4) * eye).reshape({B, h, padded, padded}).narrow(2, 0, N).narrow(3, 0, N);
    if (P > 0) {
      auto to_prefix = weights.narrow(-1, c, P).reshape({B, h, padded, P}).narrow(2, 0, N);  // (B, h, N, P)
      full = torch::cat({prefix_weights, torch::cat({to_prefix, full}, 3)}, 2);             // (B, h, P+N, P+N)
    }
    emit_probe(ctx, Probe::attention, full);
  }
  auto merged = merge_token_heads(y);  // (B, P + N, C), channel n·d + i
  emit_internal(ctx, "output_pre_norm", merged);
  if (norm_on_) merged = simple_rms_norm(merged);
  emit_internal(ctx, "output_pre_proj", merged);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(merged, h));
  return finish_tokens(ctx, out_proj->forward(merged), H, W);
}

AttentionMacs TransnormerDiagAttentionImpl::macs(int64_t height, int64_t width) const {
  // projections: q, k, v, out_proj, C² each per token (on the N real tokens). matmuls on the padded sequence
  // N' = ⌈N/c⌉·c: per head and chunk q kᵀ and P v, c²·d each: 2·(N'/c)·c²·d·h = 2·N'·c·C. Padding is counted: the
  // official code multiplies the zero rows too. Scaling, ReLU/softmax and the norm are elementwise and not counted.
  // Prefix tokens: their projections, the grid queries' P extra keys (2·N'·P·C) and their own rows over P + N keys
  // (2·P·(P + N)·C).
  const int64_t N = height * width, C = options_.dim(), c = chunk_, P = options_.prefix_tokens();
  const int64_t padded = (N + c - 1) / c * c;
  return {4 * C * C * (P + N), 2 * padded * c * C + 2 * padded * P * C + 2 * P * (P + N) * C};
}

}  // namespace rala

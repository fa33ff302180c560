#include "attention_variants/gla.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include "attention_variants/registry.h"

namespace rala {

// ------------------------------------------------------------------------------------------------
// The chunked gated scan
// ------------------------------------------------------------------------------------------------

GlaScanResult gla_chunked_scan(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& log_decay, int64_t chunk) {
  TORCH_CHECK(chunk >= 1, "gla: scan_chunk must be >= 1, got ", chunk);
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && log_decay.sizes() == q.sizes() && v.dim() == 4 &&
                  v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
              "gla scan: q, k, log_decay must be (B, h, N, d_k) and v (B, h, N, d_v), got q ", q.sizes(), ", k ",
              k.sizes(), ", v ", v.sizes(), ", log_decay ", log_decay.sizes());
  const int64_t B = q.size(0), h = q.size(1), N = q.size(2), dv = v.size(3);
  TORCH_CHECK(N > 0, "gla scan: no tokens");
  const int64_t T = std::min(chunk, N), nc = (N + T - 1) / T, pad = nc * T - N;
  // Zero padding after the last token: k = v = 0 adds nothing, log decay 0 keeps the state (α = 1).
  auto chunked = [&](const torch::Tensor& t) {
    auto p = pad > 0 ? at::constant_pad_nd(t, {0, 0, 0, pad}) : t;
    return p.reshape({B, h, nc, T, t.size(3)});  // (B, h, nc, T, d)
  };
  auto qc = chunked(q), kc = chunked(k), vc = chunked(v), gc = chunked(log_decay);
  auto b = gc.cumsum(3);                      // (B, h, nc, T, dk): b_t = Σ_{u≤t} log α_u within the chunk
  auto b_last = b.narrow(3, T - 1, 1);        // (B, h, nc, 1, dk)

  // Intra-chunk: w_tu = Σ_c q_tc k_uc e^{b_tc − b_uc} for u ≤ t, where the exponent is ≤ 0. For u > t the difference is
  // ≥ 0 and could overflow: it is replaced by −∞ before the exp (weight 0).
  auto upper = torch::ones({T, T}, b.options().dtype(torch::kBool)).triu(1).unsqueeze(-1);  // (T, T, 1): u > t
  auto decay = b.unsqueeze(4) - b.unsqueeze(3);  // (B, h, nc, T, T, dk): b_t − b_u
  const double minus_inf = -std::numeric_limits<double>::infinity();
  const bool needs_grad = torch::GradMode::is_enabled() &&
                          (q.requires_grad() || k.requires_grad() || v.requires_grad() || log_decay.requires_grad());
  if (needs_grad)
    decay = decay.masked_fill(upper, minus_inf).exp() * kc.unsqueeze(3) * qc.unsqueeze(4);
  else  // the same operations in the same order, in place
    decay.masked_fill_(upper, minus_inf).exp_().mul_(kc.unsqueeze(3)).mul_(qc.unsqueeze(4));
  auto o = decay.sum(-1).matmul(vc);  // (B, h, nc, T, dv)

  // Each chunk's own contribution to the state after it, and the decay of the state across it.
  auto u = (kc * (b_last - b).exp()).transpose(3, 4).matmul(vc);  // (B, h, nc, dk, dv)
  auto a = b_last.squeeze(3).exp().unsqueeze(-1);                 // (B, h, nc, dk, 1)
  // unbind once: one backward node for all chunks (a select per chunk would allocate a full-size gradient each).
  auto u_chunks = u.unbind(2), a_chunks = a.unbind(2);
  std::vector<torch::Tensor> entering;  // state entering chunks 1 … nc−1
  entering.reserve(nc);
  auto S = u_chunks[0];
  for (int64_t c = 1; c < nc; ++c) {
    entering.push_back(S);
    S = torch::addcmul(u_chunks[c], a_chunks[c], S);  // diag(e^{b_T}) S + U_c
  }
  if (nc > 1) {
    auto rest = [&](const torch::Tensor& t) { return t.narrow(2, 1, nc - 1); };
    auto inter = (rest(qc) * rest(b).exp()).matmul(torch::stack(entering, 2));  // (B, h, nc−1, T, dv)
    o = torch::cat({o.narrow(2, 0, 1), rest(o) + inter}, 2);
  }
  return {o.reshape({B, h, nc * T, dv}).narrow(2, 0, N), S};
}

// ------------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------------

GlaRmsNormImpl::GlaRmsNormImpl(int64_t size, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({size}));
}

torch::Tensor GlaRmsNormImpl::forward(const torch::Tensor& x) {
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_) * weight;
}

// ------------------------------------------------------------------------------------------------
// The layer
// ------------------------------------------------------------------------------------------------

const SettingsSchema& GlaAttentionImpl::schema() {
  static const SettingsSchema s = {
      real_setting("expand_k", 0.5, 1e-3, 16, "key channels K = int(C·expand_k), d_k = K/heads"),
      real_setting("expand_v", 1.0, 1e-3, 16,
                   "value channels V = int(C·expand_v); must give V = C (the local branch mixes xs per head with o)"),
      integer_setting("gate_low_rank_dim", 16, 1, 1 << 16, "rank r of the decay-gate projection gk_proj (C → r → 2K)"),
      integer_setting("gate_logit_normalizer", 16, 1, 1 << 20, "log decay = logsigmoid(gk_proj(xs)) / this"),
      flag_setting("use_act_in_conv", false, "SiLU after the depthwise 3×3 in_proj"),
      flag_setting("use_out_act", false, "SiLU on the gated mix before o_proj"),
      real_setting("rms_norm_eps", 1e-6, 1e-12, 1, "ε inside the square root of g_norm and l_norm"),
      integer_setting("scan_chunk", 16, 1, 1 << 20,
                      "tokens per chunk of the O(N) chunked scan (speed and rounding only; min(scan_chunk, N) is used)")};
  return s;
}

std::vector<SettingPair> GlaAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::vector<SettingPair> out;
  auto gk0 = shapes.find("gk_proj.0.weight"), qkv = shapes.find("qkv_proj.weight"), o = shapes.find("o_proj.weight");
  if (gk0 != shapes.end() && gk0->second.size() == 2) out.emplace_back("gate_low_rank_dim", std::to_string(gk0->second[0]));
  if (qkv != shapes.end() && o != shapes.end() && qkv->second.size() == 2 && o->second.size() == 2) {
    const int64_t C = o->second[0], V = o->second[1], K = (qkv->second[0] - V) / 2;
    auto ratio = [](int64_t part, int64_t whole) {
      std::ostringstream s;
      s << std::setprecision(17) << static_cast<double>(part) / static_cast<double>(whole);
      return s.str();
    };
    if (C > 0 && K > 0) {
      out.emplace_back("expand_k", ratio(K, C));
      out.emplace_back("expand_v", ratio(V, C));
    }
  }
  return out;
}

GlaAttentionImpl::GlaAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::gla),
      low_rank_(settings_.integer("gate_low_rank_dim")),
      gate_normalizer_(settings_.integer("gate_logit_normalizer")),
      chunk_(settings_.integer("scan_chunk")),
      act_in_conv_(settings_.flag("use_act_in_conv")),
      out_act_(settings_.flag("use_out_act")),
      eps_(settings_.real("rms_norm_eps")) {
  const int64_t C = options_.dim(), h = options_.heads();
  check_head_split(C, h, "gla");
  // int(d_model · expand) as the official code.
  key_dim_ = static_cast<int64_t>(static_cast<double>(C) * settings_.real("expand_k"));
  value_dim_ = static_cast<int64_t>(static_cast<double>(C) * settings_.real("expand_v"));
  TORCH_CHECK(key_dim_ >= h && key_dim_ % h == 0, "gla: expand_k=", settings_.text("expand_k"), " gives K = ", key_dim_,
              " key channels, which must be a positive multiple of heads (", h, ")");
  TORCH_CHECK(value_dim_ == C, "gla: expand_v=", settings_.text("expand_v"), " gives V = ", value_dim_,
              " value channels; GLA2D's local branch needs V = C = ", C, " (expand_v=1)");
  const int64_t K = key_dim_, V = value_dim_;

  auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(C, C, 3).padding(1).groups(C).bias(false));
  in_proj = register_module("in_proj", torch::nn::Sequential(conv));
  dwconv = conv;
  qkv_proj = register_module("qkv_proj", torch::nn::Linear(torch::nn::LinearOptions(C, 2 * K + V).bias(false)));
  gk_proj = register_module("gk_proj", torch::nn::Sequential(torch::nn::Linear(torch::nn::LinearOptions(C, low_rank_).bias(false)),
                                                             torch::nn::Linear(low_rank_, 2 * K)));
  g_proj = register_module("g_proj", torch::nn::Linear(C, V));
  g_norm = register_module("g_norm", GlaRmsNorm(V / h, eps_));
  l_norm = register_module("l_norm", GlaRmsNorm(V / h, eps_));
  o_proj = register_module("o_proj", torch::nn::Linear(torch::nn::LinearOptions(V, C).bias(false)));

  // Effective init of a ViG-H model: GLA2D.reset_parameters gives the depthwise conv xavier_uniform (gain 2^-2.5);
  // HierViG then re-initialises every Linear (Linear2d included) trunc_normal(std 0.02) with zero bias, so the decay
  // starts at α = exp(−ln 2 / 16) ≈ 0.958. RMSNorm weights 1.
  torch::NoGradGuard no_grad;
  torch::nn::init::xavier_uniform_(dwconv->weight, std::pow(2.0, -2.5));
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      lin->weight.normal_(0, 0.02);  // timm's trunc_normal_ cuts at ±2 absolute (±100σ): a plain normal
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
}

torch::Tensor GlaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "gla");
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const int64_t h = heads(), K = key_dim_, V = value_dim_, dk = K / h, dv = V / h;
  auto prefix = context_prefix(ctx, options_, x, "gla");
  const int64_t P = ctx.prefix_tokens(), G = H * W, N = P + G, mid = G / 2;

  auto xs = dwconv->forward(x);  // (B, C, H, W)
  if (act_in_conv_) xs = torch::silu(xs);
  // The scan order: the grid in raster order, with the prefix tokens inserted at the middle, G/2 (ViG's
  // use_middle_cls_token); a prefix token skips the depthwise conv and its SiLU (ViG's token_position path).
  auto tokens = map_to_tokens(xs);  // (B, N, C) in scan order
  if (P > 0) tokens = torch::cat({tokens.narrow(1, 0, mid), prefix, tokens.narrow(1, mid, G - mid)}, 1);
  // Scan order → the toolkit's token order (prefix first, then the grid) along `dim`, for outputs and probes.
  auto prefix_first = [&](const torch::Tensor& t, int64_t dim) {
    if (P == 0) return t;
    return torch::cat({t.narrow(dim, mid, P), t.narrow(dim, 0, mid), t.narrow(dim, mid + P, G - mid)}, dim);
  };
  auto qkv = qkv_proj->forward(tokens);      // (B, N, 2K + V)
  auto q = token_heads(qkv.narrow(2, 0, K), h), k = token_heads(qkv.narrow(2, K, K), h);  // (B, h, N, dk)
  auto v = token_heads(qkv.narrow(2, 2 * K, V), h);                                       // (B, h, N, dv)
  auto log_decay = torch::log_sigmoid(gk_proj->forward(tokens)) / static_cast<double>(gate_normalizer_);  // (B, N, 2K)
  auto log_fwd = token_heads(log_decay.narrow(2, 0, K), h), log_bwd = token_heads(log_decay.narrow(2, K, K), h);

  // Both directions in one scan: the backward scan is the forward scan of the reversed sequence with β.
  // Reduced-precision inputs scan in float32 (the official kernels accumulate in float32).
  const auto scan_type = (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf) ? torch::kFloat
                                                                                                   : x.scalar_type();
  const double scale = 1.0 / std::sqrt(static_cast<double>(dk));
  auto both = [&](const torch::Tensor& fwd, const torch::Tensor& bwd) {
    return torch::cat({fwd, bwd.flip(2)}, 0).to(scan_type);  // (2B, h, N, d)
  };
  auto q2 = both(q, q) * scale, k2 = both(k, k), g2 = both(log_fwd, log_bwd);
  auto scan = gla_chunked_scan(q2, k2, both(v, v), g2, chunk_);
  auto o_fwd = scan.output.narrow(0, 0, B), o_bwd = scan.output.narrow(0, B, B).flip(2);  // (B, h, N, dv)
  auto o = ((o_fwd + o_bwd) / 2).to(x.scalar_type());                                    // (B, h, N, dv)

  auto gate_logit = g_proj->forward(tokens);                                   // (B, N, V)
  auto gate = torch::sigmoid(gate_logit).view({B, N, h, dv});                  // (B, N, h, dv)
  auto o_tokens = o.transpose(1, 2);                                           // (B, N, h, dv)
  auto local = tokens.reshape({B, N, h, dv});                                  // xs per head (V = C)
  auto mixed = g_norm->forward(o_tokens) * gate + l_norm->forward(local) * (1 - gate);  // (B, N, h, dv)
  if (out_act_) mixed = torch::silu(mixed);
  auto y = o_proj->forward(mixed.reshape({B, N, V}));  // (B, N, C)

  emit_probe(ctx, Probe::kv_buffer, scan.state.narrow(0, 0, B));
  emit_probe(ctx, Probe::kv_buffer_bwd, scan.state.narrow(0, B, B));
  emit_probe(ctx, Probe::log_decay_fwd, prefix_first(log_fwd, 2));
  emit_probe(ctx, Probe::log_decay_bwd, prefix_first(log_bwd, 2));
  emit_probe(ctx, Probe::output, prefix_first(o, 2));
  emit_probe(ctx, Probe::output_gated, prefix_first(mixed.transpose(1, 2), 2));
  if (probe_wanted(ctx, Probe::attention, N)) {
    // The implied map: the same scans with v = I_N (row j of v is token j's one-hot), O(N²·(d_k + T)).
    auto eye = torch::eye(N, q2.options()).expand({2 * B, h, N, N});
    auto a2 = gla_chunked_scan(q2, k2, eye, g2, chunk_).output;  // (2B, h, N, N)
    auto a = ((a2.narrow(0, 0, B) + a2.narrow(0, B, B).flip({2, 3})) / 2).to(x.scalar_type());
    emit_probe(ctx, Probe::attention, prefix_first(prefix_first(a, 2), 3));
  }
  emit_internal(ctx, "q", prefix_first(q, 2));
  emit_internal(ctx, "k", prefix_first(k, 2));
  emit_internal(ctx, "v", prefix_first(v, 2));
  emit_internal(ctx, "output_fwd", prefix_first(o_fwd, 2));
  emit_internal(ctx, "output_bwd", prefix_first(o_bwd, 2));
  emit_internal(ctx, "output_pre_norm", prefix_first(o_tokens, 1));
  emit_internal(ctx, "local_pre_norm", prefix_first(local, 1));
  if (internal_wanted(ctx, "gate_logit"))
    emit_internal(ctx, "gate_logit", tokens_to_map(prefix_first(gate_logit, 1).narrow(1, P, G), H, W));
  return finish_tokens(ctx, prefix_first(y, 1), H, W);
}

AttentionMacs GlaAttentionImpl::macs(int64_t height, int64_t width) const {
  // N = P + H·W scanned tokens; the depthwise conv runs on the grid only.
  const int64_t G = height * width, N = options_.prefix_tokens() + G, C = dim(), h = heads();
  const int64_t K = key_dim_, V = value_dim_, dk = K / h, dv = V / h;
  AttentionMacs m;
  // Projections: depthwise 3×3 (9·C), qkv (C·(2K+V)), gk (C·r + r·2K), g (C·V), o (V·C), per token.
  m.projections = 9 * C * G + N * (C * (2 * K + V) + C * low_rank_ + low_rank_ * 2 * K + C * V + V * C);
  // Scans as computed, per direction and head on the zero-padded length Np = ⌈N/T⌉·T, T = min(scan_chunk, N):
  // intra-chunk weights Np·T·d_k, intra-chunk output Np·T·d_v, chunk states Np·d_k·d_v, inter-chunk read-out
  // Np·d_k·d_v. (The token-by-token recurrence would be 2·N·d_k·d_v.)
  const int64_t T = std::min(chunk_, N), Np = (N + T - 1) / T * T;
  m.matmuls = 2 * h * Np * (T * (dk + dv) + 2 * dk * dv);
  return m;
}

}  // namespace rala

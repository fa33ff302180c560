#include "attention_variants/chela.h"

#include <torch/fft.h>

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

namespace {

/// Smallest m ≥ n whose prime factors are 2, 3 and 5: an FFT length pocketfft transforms fast (86 = 2·43 takes about
/// twice as long as 90). Zero padding beyond H + kh − 1 leaves the linear convolution unchanged.
int64_t fast_fft_size(int64_t n) {
  for (int64_t m = std::max<int64_t>(n, 1);; ++m) {
    int64_t r = m;
    for (int64_t p : {2, 3, 5})
      while (r % p == 0) r /= p;
    if (r == 1) return m;
  }
}

}  // namespace

const SettingsSchema& ChelaAttentionImpl::schema() {
  static const SettingsSchema s = {
      integer_setting("zdim", 0, 0, int64_t{1} << 20,
                      "q/k width over all heads (MEGA's z); 0 = C/4 rounded down to a multiple of heads"),
      integer_setting("hdim", 0, 0, int64_t{1} << 20, "v width over all heads (MEGA's hidden dim); 0 = 2C"),
      integer_setting("short_kernel", 3, 1, 31, "kernel of the short depthwise conv", /*odd=*/true),
      choice_setting("long_conv", "global", {"global", "local"},
                     "global = (2·long_grid−1)² depthwise kernel reaching the whole grid (FFT); local = long_kernel² "
                     "(direct)"),
      integer_setting("long_kernel", 7, 1, 2047, "long_conv=local: kernel of the long depthwise conv", /*odd=*/true),
      integer_setting("long_grid", 16, 1, 1024,
                      "long_conv=global: largest grid side the kernel reaches entirely (kernel 2·long_grid − 1)"),
      choice_setting("long_method", "auto", {"auto", "direct", "fft"},
                     "how the long conv is computed: auto = FFT for global, direct for local"),
      choice_setting("value_input", "x", {"x", "conv"},
                     "input of v_proj: x (MEGA) or the short-long conv output mx (a reading of the CHELA summaries)"),
      choice_setting("phi", "1+elu", {"1+elu", "relu"}, "kernel feature map φ of q and k"),
      choice_setting("normalizer", "sum", {"sum", "mean"},
                     "sum = 1/(φq·Σφk + ε) (Katharopoulos), mean = 1/(φq·mean φk + ε) with kv ÷ N"),
      integer_setting("tile", 64, 0, int64_t{1} << 30, "tokens per tile of the linear attention; 0 = one tile"),
      choice_setting("output", "interpolate", {"interpolate", "gate"},
                     "interpolate = u ⊙ (h − x) (MEGA's x + u ⊙ (h − x) less the harness's residual); gate = u ⊙ h")};
  return s;
}

std::vector<SettingPair> ChelaAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::vector<SettingPair> out;
  auto find = [&](const char* key) -> const std::vector<int64_t>* {
    auto it = shapes.find(key);
    return it == shapes.end() ? nullptr : &it->second;
  };
  if (auto s = find("gamma"); s && s->size() == 2) out.push_back({"zdim", std::to_string((*s)[1])});
  if (auto s = find("v_proj.weight"); s && s->size() == 2) out.push_back({"hdim", std::to_string((*s)[0])});
  if (auto s = find("short_conv.weight"); s && s->size() == 4) out.push_back({"short_kernel", std::to_string((*s)[2])});
  if (auto s = find("long_conv.weight"); s && s->size() == 4) {
    out.push_back({"long_kernel", std::to_string((*s)[2])});
    out.push_back({"long_grid", std::to_string(((*s)[2] + 1) / 2)});
  }
  return out;
}

ChelaAttentionImpl::ChelaAttentionImpl(AttentionOptions options) : AttentionBase(std::move(options), Variant::chela) {
  const int64_t C = options_.dim(), h = options_.heads();
  check_head_split(C, h, "chela");
  zdim_ = settings_.integer("zdim");
  hdim_ = settings_.integer("hdim");
  if (zdim_ == 0) zdim_ = h * std::max<int64_t>(1, C / 4 / h);
  if (hdim_ == 0) hdim_ = 2 * C;
  TORCH_CHECK(zdim_ % h == 0, "chela: setting 'zdim' (", zdim_, ") must be divisible by heads (", h, ")");
  TORCH_CHECK(hdim_ % h == 0, "chela: setting 'hdim' (", hdim_, ") must be divisible by heads (", h, ")");
  tile_ = settings_.integer("tile");
  const bool global = settings_.choice("long_conv") == "global";
  const auto& method = settings_.choice("long_method");
  long_fft_ = method == "fft" || (method == "auto" && global);
  relu_phi_ = settings_.choice("phi") == "relu";
  normalizer_ = normalizer_from_name(settings_.choice("normalizer"));
  interpolate_ = settings_.choice("output") == "interpolate";
  value_from_conv_ = settings_.choice("value_input") == "conv";

  v_proj = register_module("v_proj", torch::nn::Linear(C, hdim_));
  mx_proj = register_module("mx_proj", torch::nn::Linear(C, zdim_ + hdim_ + 2 * C));
  h_proj = register_module("h_proj", torch::nn::Linear(hdim_, C));
  gamma = register_parameter("gamma", torch::empty({2, zdim_}));
  beta = register_parameter("beta", torch::empty({2, zdim_}));
  short_conv = register_module("short_conv", depthwise(C, settings_.integer("short_kernel")));
  const int64_t long_kernel = global ? 2 * settings_.integer("long_grid") - 1 : settings_.integer("long_kernel");
  long_conv = register_module("long_conv", depthwise(C, long_kernel));

  // MEGA's reset_parameters.
  torch::NoGradGuard no_grad;
  for (auto* l : {&v_proj, &mx_proj, &h_proj}) {
    (*l)->weight.normal_(0.0, 0.02);
    (*l)->bias.zero_();
  }
  gamma.normal_(0.0, 0.02);
  beta.zero_();
}

torch::Tensor ChelaAttentionImpl::long_convolution(const torch::Tensor& s, bool fft) const {
  const int64_t C = s.size(1), H = s.size(2), W = s.size(3);
  const int64_t K = long_conv->weight.size(2);
  // Taps at offsets ≥ H (≥ W) never meet the grid under zero padding: cropping them is exact.
  const int64_t kh = std::min(K, 2 * H - 1), kw = std::min(K, 2 * W - 1);
  auto w = long_conv->weight.narrow(2, (K - kh) / 2, kh).narrow(3, (K - kw) / 2, kw);  // (C, 1, kh, kw)
  if (!fft) return torch::conv2d(s, w, long_conv->bias, 1, {kh / 2, kw / 2}, 1, C);
  // Linear (zero-padded) convolution through FFTs of size ≥ (H + kh − 1, W + kw − 1): no wrap-around. conv2d is a
  // cross-correlation, so the kernel is flipped; output pixel (i, j) sits at (i + kh/2, j + kw/2) of the full result.
  // The input is transformed in the standard layout (the harness runs channels-last; strided rows transform slower).
  const std::vector<int64_t> size = {fast_fft_size(H + kh - 1), fast_fft_size(W + kw - 1)};
  auto wf = torch::fft::rfft2(w.squeeze(1).flip({-2, -1}), size);  // (C, ph, pw/2+1)
  auto sf = torch::fft::rfft2(s.contiguous(), size);                // (B, C, ph, pw/2+1)
  auto full = torch::fft::irfft2(sf * wf, size);                   // (B, C, ph, pw)
  return full.narrow(2, kh / 2, H).narrow(3, kw / 2, W) + long_conv->bias.view({1, C, 1, 1});
}

namespace {

struct TiledResult {
  torch::Tensor output;  ///< (B, h, N, dv)
  torch::Tensor kv;      ///< (B, h, dk, dv) as multiplied
  torch::Tensor z;       ///< (B, h, N, 1)
};

/// Non-causal linear attention tile by tile: kv = Σ_t φK_tᵀ V_t and s = Σ_t Σ φK_t over key tiles, then
/// o_t = φQ_t kv / (φQ_t·s + ε) over query tiles (mean: kv and s ÷ N).
TiledResult tiled_linear_attention(const torch::Tensor& fq, const torch::Tensor& fk, const torch::Tensor& v,
                                   Normalizer normalizer, int64_t tile, double eps) {
  const int64_t N = fk.size(2);
  const int64_t T = tile > 0 ? std::min(tile, N) : N;
  torch::Tensor kv, ksum;  // (B, h, dk, dv), (B, h, 1, dk)
  for (int64_t s = 0; s < N; s += T) {
    const int64_t n = std::min(T, N - s);
    auto kt = fk.narrow(2, s, n);
    auto kv_t = torch::matmul(kt.transpose(-2, -1), v.narrow(2, s, n));
    auto ks_t = kt.sum(2, true);
    kv = kv.defined() ? kv + kv_t : kv_t;
    ksum = ksum.defined() ? ksum + ks_t : ks_t;
  }
  if (normalizer == Normalizer::mean) {
    kv = kv / static_cast<double>(N);
    ksum = ksum / static_cast<double>(N);
  }
  std::vector<torch::Tensor> outs, zs;
  for (int64_t s = 0; s < N; s += T) {
    auto qt = fq.narrow(2, s, std::min(T, N - s));
    auto z = 1.0 / (torch::matmul(qt, ksum.transpose(-2, -1)) + eps);  // (B, h, n, 1)
    outs.push_back(torch::matmul(qt, kv) * z);
    zs.push_back(z);
  }
  TiledResult r;
  r.kv = kv;
  r.output = outs.size() == 1 ? outs[0] : torch::cat(outs, 2);
  r.z = zs.size() == 1 ? zs[0] : torch::cat(zs, 2);
  return r;
}

}  // namespace

torch::Tensor ChelaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "chela");
  auto prefix = context_prefix(ctx, options_, x, "chela");
  const int64_t C = options_.dim(), h = options_.heads(), H = x.size(2), W = x.size(3);
  const int64_t N = ctx.prefix_tokens() + H * W;  // all tokens, the prefix first
  auto xt = with_prefix(prefix, map_to_tokens(x));  // (B, N, C)
  auto s = torch::silu(short_conv->forward(x));
  emit_internal(ctx, "short_conv", s);
  auto mx = long_convolution(s, long_fft_);  // (B, C, H, W)
  emit_internal(ctx, "long_conv", mx);
  // The short-long convolutions (and the SiLU between them) are bound to the grid: a prefix token's mx is itself.
  auto mxt = with_prefix(prefix, map_to_tokens(mx));  // (B, N, C)
  auto v = torch::silu(v_proj->forward(value_from_conv_ ? mxt : xt));  // (B, N, hdim)
  auto base = mx_proj->forward(mxt);                                    // (B, N, C + zdim + hdim + C)
  auto u = torch::sigmoid(base.narrow(-1, 0, C));
  auto zr = torch::silu(base.narrow(-1, C, zdim_ + hdim_));
  auto hx = base.narrow(-1, C + zdim_ + hdim_, C);
  if (internal_wanted(ctx, "update_gate"))
    emit_internal(ctx, "update_gate", tokens_to_map(u.narrow(1, ctx.prefix_tokens(), H * W), H, W));
  auto z = zr.narrow(-1, 0, zdim_), r = zr.narrow(-1, zdim_, hdim_);
  auto q = z * gamma[0] + beta[0], k = z * gamma[1] + beta[1];  // (B, N, zdim)
  auto phi = [&](const torch::Tensor& t) { return relu_phi_ ? torch::relu(t) : elu_feature(t); };
  auto fq = phi(token_heads(q, h)), fk = phi(token_heads(k, h));  // (B, h, N, zdim/h)
  auto att = tiled_linear_attention(fq, fk, token_heads(v, h), normalizer_, tile_, kEps);
  emit_probe(ctx, Probe::feature_q, fq);
  emit_probe(ctx, Probe::feature_k, fk);
  emit_probe(ctx, Probe::kv_buffer, att.kv);
  emit_probe(ctx, Probe::normalizer_z, att.z.squeeze(-1));
  emit_probe(ctx, Probe::output, att.output);
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, implied_attention(fq, fk, att.z, normalizer_));
  auto gated = merge_token_heads(att.output) * r;  // (B, N, hdim)
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(gated, h));
  auto hh = torch::silu(hx + h_proj->forward(gated));  // (B, N, C)
  auto out = interpolate_ ? u * (hh - xt) : u * hh;
  return finish_tokens(ctx, out, H, W);
}

AttentionMacs ChelaAttentionImpl::macs(int64_t height, int64_t width) const {
  // Token-wise parts on N = P + H·W tokens; the convolutions on the grid.
  const int64_t C = options_.dim(), h = options_.heads(), G = height * width, N = options_.prefix_tokens() + G;
  const int64_t ks = short_conv->weight.size(2), K = long_conv->weight.size(2);
  const int64_t kh = std::min(K, 2 * height - 1), kw = std::min(K, 2 * width - 1);
  AttentionMacs m;
  m.projections = N * (C * hdim_ + C * (2 * C + zdim_ + hdim_) + hdim_ * C) + G * ks * ks * C;
  if (long_fft_) {
    const int64_t ph = fast_fft_size(height + kh - 1), pw = fast_fft_size(width + kw - 1), P = ph * pw;
    const double transforms = 3.0 * static_cast<double>(P) * std::log2(static_cast<double>(P));
    m.projections += C * (static_cast<int64_t>(std::llround(transforms)) + 4 * ph * (pw / 2 + 1));
  } else {
    m.projections += G * kh * kw * C;
  }
  m.matmuls = 2 * N * zdim_ * (hdim_ / h) + N * zdim_;
  return m;
}

}  // namespace rala

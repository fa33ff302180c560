#include "attention_variants/focused.h"

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& FocusedAttentionImpl::schema() {
  static const SettingsSchema s = {
      integer_setting("focusing_factor", 3, 1, 64, "focusing power p of f_p(x) = ‖x‖·x^p/‖x^p‖"),
      integer_setting("dwc_kernel", 5, 1, 31, "kernel of the depthwise conv on v (shared across heads)", /*odd=*/true),
      integer_setting("position_tokens", 0, 0, int64_t{1} << 24,
                      "> 0: FLatten's learnable absolute positional encoding on k for exactly this many tokens")};
  return s;
}

std::vector<SettingPair> FocusedAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  auto it = shapes.find("positional_encoding");
  if (it == shapes.end() || it->second.size() != 3) return {};
  return {{"position_tokens", std::to_string(it->second[1])}};
}

FocusedAttentionImpl::FocusedAttentionImpl(AttentionOptions options)
    : ProjectedAttention(std::move(options), Variant::focused, "focused linear attention"),
      focusing_factor_(settings_.integer("focusing_factor")),
      dwc_kernel_(settings_.integer("dwc_kernel")) {
  build_projections(/*gated=*/false, /*with_lepe=*/false);
  const int64_t C = options_.dim();
  const int64_t position_tokens = settings_.integer("position_tokens");
  scale = register_parameter("scale", torch::zeros({1, 1, C}));
  if (position_tokens > 0)
    positional_encoding = register_parameter("positional_encoding", torch::zeros({1, position_tokens, C}));
  dwc = register_module("dwc", depthwise(head_dim(), dwc_kernel_));
}

namespace {
/// f_p over the last (full channel) dim.
torch::Tensor focus(const torch::Tensor& x, int64_t p) {
  auto norm = x.norm(2, -1, true);
  auto xp = x.pow(static_cast<double>(p));
  return xp / xp.norm(2, -1, true) * norm;
}
}  // namespace

torch::Tensor FocusedAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  auto p = project(x, ctx);
  const int64_t B = x.size(0), C = options_.dim(), h = options_.heads(), d = head_dim();
  const int64_t H = x.size(2), W = x.size(3), N = H * W, P = p.prefix;
  auto q = p.token_channels(0, C), k = p.token_channels(C, C);  // (B, P + N, C)
  if (positional_encoding.defined()) {  // on the grid tokens' keys only
    TORCH_CHECK(positional_encoding.size(1) == N, "focused linear attention: the positional encoding has ",
                positional_encoding.size(1), " tokens, the input has ", N, " (", H, "x", W, ")");
    auto grid = k.narrow(1, P, N) + positional_encoding;
    k = P > 0 ? torch::cat({k.narrow(1, 0, P), grid}, 1) : grid;
  }
  auto s = torch::softplus(scale);
  q = (torch::relu(q) + kEps) / s;
  k = (torch::relu(k) + kEps) / s;
  q = token_heads(focus(q, focusing_factor_), h);  // (B, h, N, d)
  k = token_heads(focus(k, focusing_factor_), h);
  auto r = linear_attention(q, k, q, k, p.v, Normalizer::mean, kEps);
  emit_probe(ctx, Probe::kv_buffer, r.kv);
  emit_probe(ctx, Probe::normalizer_z, r.z.squeeze(-1));
  if (probe_wanted(ctx, Probe::attention, P + N))
    emit_probe(ctx, Probe::attention, implied_attention(q, k, r.z, Normalizer::mean));
  // DWC over the d channels of every head, weights shared across heads: (B·h, d, H, W).
  auto v_heads = p.v_map.reshape({B * h, d, H, W});
  auto positional = dwc->forward(v_heads).reshape({B, C, H, W});
  return finish(r.output, p, ctx, positional);
}

int64_t FocusedAttentionImpl::matmul_macs(int64_t tokens) const {
  // kv and q·kv: 2·N·d·C; normaliser: N·C
  return 2 * tokens * head_dim() * options_.dim() + tokens * options_.dim();
}

int64_t FocusedAttentionImpl::extra_projection_macs(int64_t tokens) const {
  // DWC over the d channels of every head: k²·C·N
  return dwc_kernel_ * dwc_kernel_ * options_.dim() * tokens;
}

}  // namespace rala

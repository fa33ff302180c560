#include "attention_variants/pola.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

const SettingsSchema& PolaAttentionImpl::schema() {
  static const SettingsSchema s = {
      real_setting("power_alpha", 4.0, 0.0, 64.0,
                   "α of the learned exponents p = 1 + α·sigmoid(power) (the official `alpha`; 0 gives p = 1)"),
      integer_setting("dwc_kernel", 5, 1, 31, "kernel of the depthwise conv on v (d channels, shared across heads)",
                      /*odd=*/true),
      integer_setting("pe_height", 7, 0, int64_t{1} << 16,
                      "rows of the grid the learned positional encoding on k is laid out on (0 with pe_width 0: none)"),
      integer_setting("pe_width", 9, 0, int64_t{1} << 16,
                      "columns of the positional encoding's grid (table = pe_height·pe_width tokens; 0: none)"),
      choice_setting("pe_resample", "bicubic", {"bicubic", "bicubic_antialias", "bilinear"},
                     "how the positional encoding is resampled to another grid (align_corners=False)")};
  return s;
}

PolaAttentionImpl::PolaAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::pola),
      alpha_(settings_.real("power_alpha")),
      dwc_kernel_(settings_.integer("dwc_kernel")),
      pe_height_(settings_.integer("pe_height")),
      pe_width_(settings_.integer("pe_width")),
      pe_resample_(settings_.choice("pe_resample")) {
  check_head_split(dim(), heads(), "pola");
  TORCH_CHECK((pe_height_ == 0) == (pe_width_ == 0), "pola: settings pe_height and pe_width must both be 0 (no ",
              "positional encoding) or both positive, got pe_height=", pe_height_, ", pe_width=", pe_width_);
  const int64_t C = dim(), h = heads(), d = C / h;
  qg = register_module("qg", torch::nn::Linear(torch::nn::LinearOptions(C, 2 * C).bias(true)));
  kv = register_module("kv", torch::nn::Linear(torch::nn::LinearOptions(C, 2 * C).bias(true)));
  proj = register_module("proj", torch::nn::Linear(C, C));
  dwc = register_module("dwc", depthwise(d, dwc_kernel_));
  power = register_parameter("power", torch::zeros({1, h, 1, d}));
  scale = register_parameter("scale", torch::zeros({1, 1, C}));
  if (pe_height_ > 0)
    positional_encoding = register_parameter("positional_encoding", torch::zeros({1, pe_height_ * pe_width_, C}));
}


std::vector<SettingPair> PolaAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::vector<SettingPair> out;
  if (const auto* pe = find_state_entry(shapes, "positional_encoding", "pola")) {
    TORCH_CHECK(pe->size() == 3 && (*pe)[0] == 1 && (*pe)[1] > 0,
                "pola: positional_encoding must be (1, N, C), got ", c10::IntArrayRef(*pe));
    const int64_t n = (*pe)[1];
    // The official table does not tell its grid: the most square factorisation, rows ≤ columns (a square when N is a
    // square number, as in every released config; 63 → 7×9).
    auto rows = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
    while (rows * rows > n) --rows;
    while ((rows + 1) * (rows + 1) <= n) ++rows;
    while (n % rows != 0) --rows;
    out.emplace_back("pe_height", std::to_string(rows));
    out.emplace_back("pe_width", std::to_string(n / rows));
  } else {
    out.emplace_back("pe_height", "0");
    out.emplace_back("pe_width", "0");
  }
  if (const auto* w = find_state_entry(shapes, "dwc.weight", "pola")) {
    TORCH_CHECK(w->size() == 4 && (*w)[2] == (*w)[3], "pola: dwc.weight must be (d, 1, k, k), got ",
                c10::IntArrayRef(*w));
    out.emplace_back("dwc_kernel", std::to_string((*w)[2]));
  }
  return out;
}

torch::Tensor PolaAttentionImpl::positional_encoding_for(int64_t height, int64_t width) const {
  if (!positional_encoding.defined()) return {};
  if (height == pe_height_ && width == pe_width_) return positional_encoding;  // the official grid: as is
  namespace F = torch::nn::functional;
  const int64_t C = dim();
  // (1, N_pe, C) → (1, C, pe_height, pe_width), resample to (H, W), back to raster rows (1, H·W, C).
  auto grid = positional_encoding.reshape({1, pe_height_, pe_width_, C}).permute({0, 3, 1, 2});
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).align_corners(false);
  if (pe_resample_ == "bilinear")
    options.mode(torch::kBilinear);
  else
    options.mode(torch::kBicubic).antialias(pe_resample_ == "bicubic_antialias");
  return F::interpolate(grid, options).permute({0, 2, 3, 1}).reshape({1, height * width, C});
}

torch::Tensor PolaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, "pola");
  auto prefix = context_prefix(ctx, options_, x, "pola");
  const int64_t B = x.size(0), C = dim(), h = heads(), d = C / h, H = x.size(2), W = x.size(3);
  const int64_t P = ctx.prefix_tokens(), G = H * W, N = P + G;  // all tokens, the prefix first
  const int64_t d1 = (d + 1) / 2;  // torch.chunk(v, 2, -1): the first ⌈d/2⌉ channels feed the same-sign stream

  auto tokens = with_prefix(prefix, map_to_tokens(x));  // (B, N, C)
  auto qg_out = qg->forward(tokens), kv_out = kv->forward(tokens);  // (B, N, 2C)
  auto q = qg_out.narrow(-1, 0, C), g = qg_out.narrow(-1, C, C);
  auto k = kv_out.narrow(-1, 0, C), v = kv_out.narrow(-1, C, C);
  if (positional_encoding.defined()) {  // on the grid tokens' keys
    auto pe = positional_encoding_for(H, W);  // (1, H·W, C)
    emit_internal(ctx, "positional_encoding", pe);
    k = P > 0 ? torch::cat({k.narrow(1, 0, P), k.narrow(1, P, G) + pe}, 1) : k + pe;
  }
  auto s = torch::softplus(scale);                // (1, 1, C)
  auto p = 1.0 + alpha_ * torch::sigmoid(power);  // (1, h, 1, d)
  emit_internal(ctx, "scale_softplus", s);
  emit_internal(ctx, "power_effective", p);

  auto qh = token_heads(q / s, h), kh = token_heads(k / s, h), vh = token_heads(v, h);  // (B, h, N, d)
  auto q_pos = torch::relu(qh).pow(p), q_neg = torch::relu(-qh).pow(p);
  auto k_pos = torch::relu(kh).pow(p), k_neg = torch::relu(-kh).pow(p);
  auto q_sim = torch::cat({q_pos, q_neg}, -1), q_opp = torch::cat({q_neg, q_pos}, -1);  // (B, h, N, 2d)
  auto k_feat = torch::cat({k_pos, k_neg}, -1);                                           // (B, h, N, 2d)

  auto k_mean_t = k_feat.mean(-2, true).transpose(-2, -1);     // (B, h, 2d, 1)
  auto z_sim = 1.0 / (torch::matmul(q_sim, k_mean_t) + kEps);  // (B, h, N, 1)
  auto z_opp = 1.0 / (torch::matmul(q_opp, k_mean_t) + kEps);
  const double n_scale = std::pow(static_cast<double>(N), -0.5);
  auto kv_buffer = torch::matmul(k_feat.transpose(-2, -1) * n_scale, vh * n_scale);  // (B, h, 2d, d) = Σ Kᵀv / N
  auto x_sim = torch::matmul(q_sim, kv_buffer.narrow(-1, 0, d1)) * z_sim;           // (B, h, N, ⌈d/2⌉)
  auto x_opp = torch::matmul(q_opp, kv_buffer.narrow(-1, d1, d - d1)) * z_opp;      // (B, h, N, ⌊d/2⌋)
  auto o = torch::cat({x_sim, x_opp}, -1);                                           // (B, h, N, d)

  // DWC over the d channels of every head of the grid tokens, weights shared across heads: (B·h, d, H, W).
  auto dwc_v = dwc->forward(vh.narrow(2, P, G).transpose(-2, -1).reshape({B * h, d, H, W}))
                   .reshape({B, C, G})
                   .transpose(1, 2);                        // (B, H·W, C)
  auto pre_gate = merge_token_heads(o);                     // (B, N, C)
  pre_gate = P > 0 ? torch::cat({pre_gate.narrow(1, 0, P), pre_gate.narrow(1, P, G) + dwc_v}, 1) : pre_gate + dwc_v;
  auto pre_proj = pre_gate * g;
  auto out = proj->forward(pre_proj);  // (B, N, C)

  emit_probe(ctx, Probe::kv_buffer, kv_buffer);
  emit_probe(ctx, Probe::output, o);
  if (probe_wanted(ctx, Probe::output_gated)) emit_probe(ctx, Probe::output_gated, token_heads(pre_proj, h));
  emit_probe(ctx, Probe::normalizer_z, z_sim.squeeze(-1));
  emit_probe(ctx, Probe::feature_q, q_sim);
  emit_probe(ctx, Probe::feature_k, k_feat);
  if (probe_wanted(ctx, Probe::attention, N))
    emit_probe(ctx, Probe::attention, torch::matmul(q_sim, k_feat.transpose(-2, -1)) * (z_sim / N));
  if (internal_wanted(ctx, "attention_opp"))
    emit_internal(ctx, "attention_opp", torch::matmul(q_opp, k_feat.transpose(-2, -1)) * (z_opp / N));
  emit_internal(ctx, "phi_q_sim", q_sim);
  emit_internal(ctx, "phi_q_opp", q_opp);
  emit_internal(ctx, "phi_k", k_feat);
  emit_internal(ctx, "normalizer_z_sim", z_sim.squeeze(-1));
  emit_internal(ctx, "normalizer_z_opp", z_opp.squeeze(-1));
  emit_internal(ctx, "output_heads", o);
  emit_internal(ctx, "dwc_v", dwc_v);
  emit_internal(ctx, "output_pre_gate", pre_gate);
  emit_internal(ctx, "gate", g);
  emit_internal(ctx, "output_pre_proj", pre_proj);
  return finish_tokens(ctx, out, H, W);
}

AttentionMacs PolaAttentionImpl::macs(int64_t height, int64_t width) const {
  const int64_t G = height * width, N = options_.prefix_tokens() + G, C = dim(), d = C / heads();
  AttentionMacs m;
  // qg and kv (2C outputs each), proj: 5·N·C² on all N = P + H·W tokens; the DWC on the grid: k²·C·H·W (d channels
  // per head, every head).
  m.projections = 5 * N * C * C + dwc_kernel_ * dwc_kernel_ * C * G;
  // Per head: kv = Kᵀv (2d × d over N): 2·N·d²; the two streams q_sim·kv1, q_opp·kv2 (2d × d/2 each): 2·N·d²;
  // the two normalisers q_*·mean K: 4·N·d. Over h heads: 4·N·d·C + 4·N·C. (Powers, gate and the PE are element-wise.)
  m.matmuls = 4 * N * d * C + 4 * N * C;
  return m;
}

}  // namespace rala

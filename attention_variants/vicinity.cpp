#include "attention_variants/vicinity.h"

#include <cmath>

#include "attention_variants/registry.h"

namespace rala {

namespace {
constexpr const char* kName = "vicinity";
}  // namespace

const SettingsSchema& VicinityAttentionImpl::schema() {
  static const SettingsSchema s = {
      choice_setting("form", "sum", {"sum", "product"},
                     "2-D re-weighting: sum = cos(a_i-a_j)+cos(b_i-b_j) (VVT), product = cos(a_i-a_j)*cos(b_i-b_j)"),
      integer_setting("feature_reduction", 2, 1, int64_t{1} << 20,
                      "fr: q, k, v projected to C/fr channels (per-head width (C/h)/fr)"),
      integer_setting(
          "spatial_reduction", 1, 1, 64,
          "sr: keys/values from a stride-sr sr x sr conv + LayerNorm (grid zero-padded to a multiple of sr)"),
      integer_setting("se_reduction", 1, 1, int64_t{1} << 20, "r: SE bottleneck of C/r channels"),
      flag_setting("abs_clamp", true, "the official sign-keeping clamp of |t| to [1e-4, 1e4] at its six places")};
  return s;
}

std::vector<SettingPair> VicinityAttentionImpl::settings_from_state_shapes(const StateShapes& shapes) {
  std::vector<SettingPair> out;
  auto q = shapes.find("q_proj.weight");
  if (q != shapes.end() && q->second.size() == 2 && q->second[0] > 0)
    out.emplace_back("feature_reduction", std::to_string(q->second[1] / q->second[0]));
  auto conv = shapes.find("sr.weight");
  if (conv != shapes.end() && conv->second.size() == 4)
    out.emplace_back("spatial_reduction", std::to_string(conv->second[2]));
  auto se = shapes.find("se_fc.0.weight");
  if (se != shapes.end() && se->second.size() == 2 && se->second[0] > 0)
    out.emplace_back("se_reduction", std::to_string(se->second[1] / se->second[0]));
  return out;
}

VicinityAttentionImpl::VicinityAttentionImpl(AttentionOptions options)
    : AttentionBase(std::move(options), Variant::vicinity),
      product_(settings_.choice("form") == "product"),
      clamp_(settings_.flag("abs_clamp")),
      fr_(settings_.integer("feature_reduction")),
      sr_(settings_.integer("spatial_reduction")),
      se_reduction_(settings_.integer("se_reduction")) {
  check_head_split(options_.dim(), options_.heads(), kName);
  const int64_t C = options_.dim(), h = options_.heads();
  TORCH_CHECK(C % fr_ == 0, kName, ": feature_reduction (", fr_, ") must divide the channels (", C, ")");
  TORCH_CHECK((C / fr_) % h == 0, kName, ": channels / feature_reduction (", C, "/", fr_, " = ", C / fr_,
              ") must be divisible by heads (", h, ")");
  TORCH_CHECK(se_reduction_ <= C, kName, ": se_reduction (", se_reduction_, ") must be at most the channels (", C, ")");
  const int64_t Cr = C / fr_;
  // Registration order as the official constructor.
  k_proj = register_module("k_proj", torch::nn::Linear(C, Cr));
  v_proj = register_module("v_proj", torch::nn::Linear(C, Cr));
  q_proj = register_module("q_proj", torch::nn::Linear(C, Cr));
  if (sr_ > 1) {
    sr = register_module("sr", torch::nn::Conv2d(torch::nn::Conv2dOptions(C, C, sr_).stride(sr_)));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({C}).eps(1e-5)));
  }
  out_proj = register_module("out_proj", torch::nn::Linear(Cr, C));
  const int64_t se_hidden = C / se_reduction_;
  se_fc = register_module(
      "se_fc", torch::nn::Sequential(
                   torch::nn::Linear(torch::nn::LinearOptions(C, se_hidden).bias(false)), torch::nn::ReLU(),
                   torch::nn::Linear(torch::nn::LinearOptions(se_hidden, C).bias(false)), torch::nn::Sigmoid()));
}

torch::Tensor VicinityAttentionImpl::abs_clamp(const torch::Tensor& t) {
  return t.abs().clamp(kClampMin, kClampMax) * t.sign();
}

std::pair<int64_t, int64_t> VicinityAttentionImpl::key_grid(int64_t height, int64_t width) const {
  return {(height + sr_ - 1) / sr_, (width + sr_ - 1) / sr_};
}

torch::Tensor VicinityAttentionImpl::reweight_table(bool product, int64_t rows, int64_t cols, int64_t step,
                                                    int64_t height, int64_t width,
                                                    const torch::TensorOptions& options) {
  const double half_pi = M_PI / 2.0;
  auto l = torch::arange(rows * cols, torch::kInt64);
  auto a = torch::floor_divide(l, cols).to(torch::kFloat64) * (half_pi * step / static_cast<double>(height));
  auto b = torch::remainder(l, cols).to(torch::kFloat64) * (half_pi * step / static_cast<double>(width));
  auto ca = a.cos(), sa = a.sin(), cb = b.cos(), sb = b.sin();
  auto table = product ? torch::stack({ca * cb, ca * sb, sa * cb, sa * sb}, 1) : torch::stack({ca, sa, cb, sb}, 1);
  return table.to(options);  // (rows·cols, 4)
}

namespace {
/// φ̃: x (B, h, n, d) re-weighted by table (n, 4) → (B, h, n, 4d), block m = x ⊙ table[:, m].
torch::Tensor reweight(const torch::Tensor& x, const torch::Tensor& table) {
  return (x.unsqueeze(-2) * table.unsqueeze(-1)).flatten(-2);
}
}  // namespace

torch::Tensor VicinityAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx) {
  check_attention_input(x, options_, kName);
  const int64_t H = x.size(2), W = x.size(3), N = H * W, h = options_.heads();
  auto clamp = [this](const torch::Tensor& t) { return clamp_ ? abs_clamp(t) : t; };
  auto prefix = context_prefix(ctx, options_, x, kName);
  const int64_t P = ctx.prefix_tokens();
  auto tokens = with_prefix(prefix, map_to_tokens(x));  // (B, P + N, C), prefix first

  auto s = se_fc->forward(tokens.mean(1));  // (B, C): the mean over all tokens, prefix tokens included
  emit_internal(ctx, "se_weight", s);

  torch::Tensor src = tokens;  // key / value source (B, P + N', C)
  int64_t Hk = H, Wk = W;
  if (sr_ > 1) {  // the grid is reduced; prefix tokens enter k_proj / v_proj as they are
    std::tie(Hk, Wk) = key_grid(H, W);
    auto xs = x;
    if (Hk * sr_ != H || Wk * sr_ != W) xs = torch::constant_pad_nd(x, {0, Wk * sr_ - W, 0, Hk * sr_ - H}, 0.0);
    src = with_prefix(prefix, norm->forward(map_to_tokens(sr->forward(xs))));  // (B, P + H'·W', C)
  }
  auto q = token_heads(torch::relu(q_proj->forward(tokens)), h);  // (B, h, P + N, d')
  auto k = token_heads(torch::relu(k_proj->forward(src)), h);     // (B, h, P + N', d')
  auto v = token_heads(v_proj->forward(src), h);                  // (B, h, P + N', d')

  auto fq = reweight(q.narrow(2, P, N), reweight_table(product_, H, W, 1, H, W, x.options()));              // (B,h,N,4d')
  auto fk = reweight(k.narrow(2, P, Hk * Wk), reweight_table(product_, Hk, Wk, sr_, H, W, x.options()));  // (B,h,N',4d')
  if (P > 0) {  // prefix tokens: un-re-weighted pairs with the weight of zero distance (sum form 2, product form 1)
    const double w0 = product_ ? 1.0 : 2.0;
    fq = prefix_reweighted_features(fq, q, P, w0, /*query=*/true);  // (B, h, P + N, 4d' + 2d')
    fk = prefix_reweighted_features(fk, k, P, w0, /*query=*/false);
  }
  emit_probe(ctx, Probe::feature_q, fq);
  emit_probe(ctx, Probe::feature_k, fk);

  auto kv = clamp(torch::matmul(fk.transpose(-2, -1), v));                               // (B, h, 4d', d')
  auto z = clamp(1.0 / (torch::matmul(fq, fk.sum(-2, true).transpose(-2, -1)) + kEps));  // (B, h, N, 1)
  auto o = clamp(clamp(torch::matmul(fq, kv)) * z);                                      // (B, h, N, d')
  emit_probe(ctx, Probe::kv_buffer, kv);
  emit_probe(ctx, Probe::normalizer_z, z.squeeze(-1));
  emit_probe(ctx, Probe::output, o);
  emit_probe(ctx, Probe::output_gated, o);  // no gate or positional term: what enters out_proj
  if (probe_wanted(ctx, Probe::attention, P + N))
    emit_probe(ctx, Probe::attention, torch::matmul(fq, fk.transpose(-2, -1)) * z);  // (B, h, P + N, P + N')

  auto merged = merge_token_heads(o);  // (B, P + N, C/fr)
  emit_internal(ctx, "output_pre_proj", merged);
  auto y = clamp(out_proj->forward(merged));  // (B, P + N, C)
  y = clamp(y + y * s.unsqueeze(1));
  return finish_tokens(ctx, y, H, W);
}

AttentionMacs VicinityAttentionImpl::macs(int64_t height, int64_t width) const {
  const int64_t C = options_.dim(), Cr = C / fr_, h = options_.heads(), d = head_dim();
  // With P prefix tokens: P more queries and keys, features 6d' wide instead of 4d'.
  const int64_t P = options_.prefix_tokens(), N = P + height * width;
  const auto [Hk, Wk] = key_grid(height, width);
  const int64_t Nk = P + Hk * Wk;
  const int64_t f = P > 0 ? 6 : 4;
  AttentionMacs m;
  m.projections = N * C * Cr                             // q_proj
                  + 2 * Nk * C * Cr                      // k_proj, v_proj
                  + N * Cr * C                           // out_proj
                  + 2 * C * (C / se_reduction_);         // se_fc.0, se_fc.2 (once per image)
  if (sr_ > 1) m.projections += C * C * sr_ * sr_ * (Nk - P);  // stride-sr conv on the grid
  m.matmuls = f * d * d * h * Nk                         // kv = Σ φ̃(k)ᵀ v
              + f * d * d * h * N                        // φ̃(q) · kv
              + f * d * h * N;                           // φ̃(q) · Σ φ̃(k)
  return m;
}

}  // namespace rala

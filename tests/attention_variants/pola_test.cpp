// PolaFormer (P): golden parity with the official PVT PolaLinearAttention (every probe), the O(N) path vs a naive
// float64 O(N²) reference written from the formulas (own grid, other grid with an independently resampled PE, odd
// head width, no PE), the PE resampling vs independent bicubic / bilinear / antialiased-bicubic resamplers, settings
// from state-dict shapes, bad settings, and the model dimensions it must run at.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "attention_variants/pola.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "pola_linear_attention.h5";


/// |Δ|max / max(1, |ref|max): the golden comparison (φ reaches ~2·10³, so the limit scales with the reference).
double golden_dev(const torch::Tensor& got, const torch::Tensor& ref) {
  return test::max_abs_err(got, ref) / std::max(1.0, ref.abs().max().item<double>());
}

/// (B, N, C) tokens of a 7×9 raster as the (B, C, H, W) map the layer takes.
torch::Tensor as_map(const torch::Tensor& tokens, int64_t H, int64_t W) {
  return tokens.transpose(1, 2).reshape({tokens.size(0), tokens.size(2), H, W});
}

const std::set<std::string> kInternals = {"scale_softplus",   "power_effective",  "phi_q_sim",       "phi_q_opp",
                                          "phi_k",            "normalizer_z_sim", "normalizer_z_opp", "output_heads",
                                          "dwc_v",            "output_pre_gate",  "gate",             "output_pre_proj",
                                          "attention_opp",    "positional_encoding"};
const std::set<Probe> kProbes = {Probe::kv_buffer, Probe::output,    Probe::output_gated, Probe::attention,
                                 Probe::normalizer_z, Probe::feature_q, Probe::feature_k};

TEST(PolaGolden, OutputAndEveryProbeMatchOfficialCode) {
  auto x_tokens = golden(kGolden, "input");  // (2, 63, 64), 7×9 raster
  const int64_t B = 2, C = 64, h = 2, d = 32, H = 7, W = 9;
  PolaAttention attn(AttentionOptions(C, h).set("pe_height", 7).set("pe_width", 9).set("power_alpha", 4.0)
                         .set("dwc_kernel", 5));
  test::load_state(*attn, kGolden);
  attn->eval();
  auto x = as_map(x_tokens, H, W);
  ProbeCollector probes(kProbes, 4096, kInternals);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, d, &probes)).flatten(2).transpose(1, 2);  // (B, N, C)

  auto check = [](const char* what, const torch::Tensor& got, const torch::Tensor& ref) {
    ASSERT_EQ(got.sizes(), ref.sizes()) << what;
    const double dev = golden_dev(got, ref);
    std::printf("  pola golden %-34s max|Δ|/max(1,max|ref|) = %.3g\n", what, dev);
    EXPECT_LE(dev, 1e-5) << what;
  };
  auto g = [](const char* name) { return golden(kGolden, std::string("probes/") + name); };
  check("output", y, golden(kGolden, "output"));
  check("kv_buffer", probes.get(Probe::kv_buffer), g("kv_buffer"));
  check("output (output_heads)", probes.get(Probe::output), g("output_heads"));
  check("normalizer_z (normalizer_z_sim)", probes.get(Probe::normalizer_z), g("normalizer_z_sim"));
  check("feature_q (phi_q_sim)", probes.get(Probe::feature_q), g("phi_q_sim"));
  check("feature_k (phi_k)", probes.get(Probe::feature_k), g("phi_k"));
  check("output_gated (output_pre_proj)", probes.get(Probe::output_gated),
        g("output_pre_proj").reshape({B, H * W, h, d}).transpose(1, 2));
  for (const char* name : {"scale_softplus", "power_effective", "phi_q_sim", "phi_q_opp", "phi_k", "normalizer_z_sim",
                           "normalizer_z_opp", "output_heads", "dwc_v", "output_pre_gate", "gate", "output_pre_proj"})
    check(name, probes.get_internal(name), g(name));
  // On its own grid the table is added as is.
  EXPECT_TRUE(torch::equal(probes.get_internal("positional_encoding"), golden(kGolden, "state_dict/positional_encoding")));
  // The implied maps reproduce the official per-head output: same-sign stream on v[:16], opposite-sign on v[16:].
  auto kv_w = golden(kGolden, "state_dict/kv.weight").narrow(0, C, C), kv_b = golden(kGolden, "state_dict/kv.bias").narrow(0, C, C);
  auto v = (torch::matmul(x_tokens, kv_w.t()) + kv_b).reshape({B, H * W, h, d}).transpose(1, 2);  // (B, h, N, d)
  check("attention · v[:16] (output_heads[:16])", torch::matmul(probes.get(Probe::attention), v.narrow(-1, 0, 16)),
        g("output_heads").narrow(-1, 0, 16));
  check("attention_opp · v[16:] (output_heads[16:])",
        torch::matmul(probes.get_internal("attention_opp"), v.narrow(-1, 16, 16)), g("output_heads").narrow(-1, 16, 16));
}

StateShapes golden_shapes() {
  StateShapes shapes;
  for (const char* key : {"qg.weight", "qg.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias", "dwc.weight",
                          "dwc.bias", "power", "scale", "positional_encoding"}) {
    auto t = golden(kGolden, std::string("state_dict/") + key);
    shapes[key] = t.sizes().vec();
  }
  return shapes;
}

TEST(PolaSettings, FromStateShapesGiveTheTableGrid) {
  const std::vector<SettingPair> golden_settings = {{"pe_height", "7"}, {"pe_width", "9"}, {"dwc_kernel", "5"}};
  EXPECT_EQ(settings_from_state_shapes(Variant::pola, golden_shapes()), golden_settings);
  // A layer built from those settings alone loads the file strictly and reproduces the official output.
  auto attn = make_attention(Variant::pola, AttentionOptions(64, 2).settings(golden_settings));
  test::load_state(*attn, kGolden);
  auto x = as_map(golden(kGolden, "input"), 7, 9);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 32)).flatten(2).transpose(1, 2);
  EXPECT_LE(golden_dev(y, golden(kGolden, "output")), 1e-5);

  auto pe_only = [](int64_t n, const std::string& key = "positional_encoding") {
    return PolaAttentionImpl::settings_from_state_shapes({{key, {1, n, 64}}});
  };
  EXPECT_EQ(pe_only(3136), (std::vector<SettingPair>{{"pe_height", "56"}, {"pe_width", "56"}}));  // PVT stage 1
  EXPECT_EQ(pe_only(49), (std::vector<SettingPair>{{"pe_height", "7"}, {"pe_width", "7"}}));
  EXPECT_EQ(pe_only(160), (std::vector<SettingPair>{{"pe_height", "10"}, {"pe_width", "16"}}));
  EXPECT_EQ(pe_only(7), (std::vector<SettingPair>{{"pe_height", "1"}, {"pe_width", "7"}}));
  EXPECT_EQ(pe_only(196, "block3.0.attn.positional_encoding"),
            (std::vector<SettingPair>{{"pe_height", "14"}, {"pe_width", "14"}}));
  EXPECT_EQ(PolaAttentionImpl::settings_from_state_shapes({{"qg.weight", {128, 64}}}),
            (std::vector<SettingPair>{{"pe_height", "0"}, {"pe_width", "0"}}));
  EXPECT_NE(test::error_message([] {
              PolaAttentionImpl::settings_from_state_shapes(
                  {{"a.positional_encoding", {1, 49, 64}}, {"b.positional_encoding", {1, 196, 64}}});
            }).find("several 'positional_encoding' entries"),
            std::string::npos);
  EXPECT_NE(test::error_message([] { PolaAttentionImpl::settings_from_state_shapes({{"positional_encoding", {49, 64}}}); })
                .find("positional_encoding must be (1, N, C)"),
            std::string::npos);
}

TEST(PolaSettings, BadSettingsGiveOneLineErrors) {
  auto msg = [](const AttentionOptions& o) { return test::error_message([&] { PolaAttention attn(o); }); };
  auto has = [](const std::string& m, const std::string& text) {
    EXPECT_NE(m.find(text), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  };
  has(msg(AttentionOptions(32, 2).set("pe_height", 0)),
      "pola: settings pe_height and pe_width must both be 0 (no positional encoding) or both positive, got "
      "pe_height=0, pe_width=9");
  has(msg(AttentionOptions(32, 2).set("pe_width", -1)), "setting 'pe_width' of attention variant pola expects an integer");
  has(msg(AttentionOptions(32, 2).set("dwc_kernel", 4)),
      "setting 'dwc_kernel' of attention variant pola expects an odd integer in [1, 31], got '4'");
  has(msg(AttentionOptions(32, 2).set("power_alpha", -1.0)), "setting 'power_alpha' of attention variant pola expects");
  has(msg(AttentionOptions(32, 2).set("pe_resample", "nearest")),
      "expects one of: bicubic, bicubic_antialias, bilinear, got 'nearest'");
  has(msg(AttentionOptions(32, 2).set("alpha", 4.0)), "unknown setting 'alpha' for attention variant pola");
  has(msg(AttentionOptions(30, 4)), "channels (30) must be divisible by heads (4)");
}

TEST(PolaSettings, DefaultsAndParameters) {
  PolaAttention attn(AttentionOptions(32, 2));
  EXPECT_EQ(attn->settings().describe(), "power_alpha=4 dwc_kernel=5 pe_height=7 pe_width=9 pe_resample=bicubic");
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : attn->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"qg.weight", {64, 32}}, {"qg.bias", {64}},         {"kv.weight", {64, 32}},     {"kv.bias", {64}},
      {"proj.weight", {32, 32}}, {"proj.bias", {32}},     {"dwc.weight", {16, 1, 5, 5}}, {"dwc.bias", {16}},
      {"power", {1, 2, 1, 16}}, {"scale", {1, 1, 32}},    {"positional_encoding", {1, 63, 32}}};
  EXPECT_EQ(shapes, expected);
  // Official init: power 0 → p = 3, scale 0 → softplus = ln 2, PE 0.
  EXPECT_EQ(attn->power.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(attn->positional_encoding.abs().sum().item<double>(), 0.0);
  PolaAttention none(AttentionOptions(32, 2).set("pe_height", 0).set("pe_width", 0));
  EXPECT_FALSE(none->positional_encoding.defined());
  EXPECT_EQ(none->named_parameters().size(), 10u);
  EXPECT_FALSE(none->positional_encoding_for(5, 5).defined());
}

TEST(PolaMacs, CountsProjectionsDwcAndTheTwoStreams) {
  PolaAttention attn(AttentionOptions(64, 2));
  const int64_t N = 63, C = 64, d = 32;
  auto m = attn->macs(7, 9);
  EXPECT_EQ(m.projections, 5 * N * C * C + 25 * C * N);
  EXPECT_EQ(m.matmuls, 4 * N * d * C + 4 * N * C);
}

// ------------------------------------------------------------------------------------------------
// Independent resamplers (float64, separable, by the definitions in PyTorch's upsampling kernels)
// ------------------------------------------------------------------------------------------------

/// Keys' cubic convolution kernel with parameter a.
double cubic(double t, double a) {
  t = std::abs(t);
  if (t <= 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

/// (out × in) interpolation matrix along one axis, align_corners=False.
torch::Tensor resample_matrix(int64_t in, int64_t out, const std::string& mode) {
  auto m = torch::zeros({out, in}, torch::kFloat64);
  auto ma = m.accessor<double, 2>();
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t i = 0; i < out; ++i) {
    if (mode == "bicubic") {  // a = −0.75, 4 taps, border indices clamped
      const double src = (i + 0.5) * scale - 0.5;
      const auto x0 = static_cast<int64_t>(std::floor(src));
      const double t = src - static_cast<double>(x0);
      for (int64_t tap = -1; tap <= 2; ++tap) {
        const int64_t j = std::min(std::max(x0 + tap, int64_t{0}), in - 1);
        ma[i][j] += cubic(static_cast<double>(tap) - t, -0.75);
      }
    } else if (mode == "bilinear") {  // source clamped at 0, upper neighbour clamped
      const double src = std::max((i + 0.5) * scale - 0.5, 0.0);
      const auto x0 = static_cast<int64_t>(src);
      const int64_t x1 = std::min(x0 + 1, in - 1);
      const double l1 = src - static_cast<double>(x0);
      ma[i][x0] += 1 - l1;
      ma[i][x1] += l1;
    } else {  // bicubic_antialias: PIL-style filter, a = −0.5, support widened by the scale when shrinking, normalised
      const double support = scale >= 1 ? 2.0 * scale : 2.0, inv = scale >= 1 ? 1.0 / scale : 1.0;
      const double center = scale * (i + 0.5);
      const int64_t lo = std::max(static_cast<int64_t>(center - support + 0.5), int64_t{0});
      const int64_t hi = std::min(static_cast<int64_t>(center + support + 0.5), in);
      double total = 0;
      for (int64_t j = lo; j < hi; ++j) total += cubic((static_cast<double>(j) - center + 0.5) * inv, -0.5);
      for (int64_t j = lo; j < hi; ++j) ma[i][j] = cubic((static_cast<double>(j) - center + 0.5) * inv, -0.5) / total;
    }
  }
  return m;
}

/// The table (1, ph·pw, C) resampled to (1, H·W, C): out[r, c] = Σ_{a, b} Ry[r, a] Rx[c, b] table[a, b], by loops.
torch::Tensor naive_resample(const torch::Tensor& table, int64_t ph, int64_t pw, int64_t H, int64_t W,
                             const std::string& mode) {
  const int64_t C = table.size(2);
  auto t = table.to(torch::kFloat64).reshape({ph, pw, C});
  auto ry = resample_matrix(ph, H, mode), rx = resample_matrix(pw, W, mode);
  auto out = torch::zeros({1, H * W, C}, torch::kFloat64);
  auto ta = t.accessor<double, 3>();
  auto oa = out.accessor<double, 3>();
  auto ya = ry.accessor<double, 2>();
  auto xa = rx.accessor<double, 2>();
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < W; ++c)
      for (int64_t a = 0; a < ph; ++a)
        for (int64_t b = 0; b < pw; ++b)
          for (int64_t ch = 0; ch < C; ++ch) oa[0][r * W + c][ch] += ya[r][a] * xa[c][b] * ta[a][b][ch];
  return out;
}

TEST(PolaPositionalEncoding, ResampledTableEqualsIndependentResamplers) {
  for (const std::string mode : {"bicubic", "bilinear", "bicubic_antialias"}) {
    PolaAttention attn(AttentionOptions(32, 2).set("pe_resample", mode));  // 7×9 table
    test::randomize(*attn, 5);
    attn->to(torch::kFloat64);
    // On its own grid: the table itself.
    EXPECT_TRUE(torch::equal(attn->positional_encoding_for(7, 9), attn->positional_encoding));
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{10, 16}, {14, 14}, {3, 4}, {5, 6}, {9, 7}, {1, 1}, {7, 20}}) {
      auto got = attn->positional_encoding_for(hw.first, hw.second);
      auto ref = naive_resample(attn->positional_encoding.detach(), 7, 9, hw.first, hw.second, mode);
      EXPECT_LE(test::max_rel_err(got, ref), 1e-12) << mode << " " << hw.first << "x" << hw.second;
    }
  }
  // Every rule trains: the table gets a finite, non-zero gradient through the resampling on another grid.
  for (const std::string mode : {"bicubic", "bilinear", "bicubic_antialias"}) {
    PolaAttention attn(AttentionOptions(32, 2).set("pe_resample", mode));
    test::randomize(*attn, 7, 0.2);
    auto x = test::random_input(2, 32, 12, 5, 8, torch::kFloat32);
    attn->forward(x, AttentionContext::for_input(x, 16)).square().sum().backward();
    const auto& grad = attn->positional_encoding.grad();
    ASSERT_TRUE(grad.defined()) << mode;
    EXPECT_TRUE(torch::isfinite(grad).all().item<bool>()) << mode;
    EXPECT_GT(grad.abs().sum().item<double>(), 0.0) << mode;
  }
  // Bicubic upsampling keeps a constant table constant; a table of one token is that token everywhere.
  PolaAttention one(AttentionOptions(32, 2).set("pe_height", 1).set("pe_width", 1));
  test::randomize(*one, 6);
  auto spread = one->positional_encoding_for(4, 5);
  EXPECT_LE((spread - one->positional_encoding).abs().max().item<double>(), 1e-6);
}

// ------------------------------------------------------------------------------------------------
// Naive float64 O(N²) reference
// ------------------------------------------------------------------------------------------------

/// y = x Wᵀ + b by its definition; x (N, I).
torch::Tensor naive_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const int64_t N = x.size(0), I = x.size(1), O = weight.size(0);
  auto w = weight.detach().to(torch::kFloat64), b = bias.detach().to(torch::kFloat64);
  auto y = torch::empty({N, O}, torch::kFloat64);
  auto xa = x.accessor<double, 2>();
  auto wa = w.accessor<double, 2>();
  auto ba = b.accessor<double, 1>();
  auto ya = y.accessor<double, 2>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double acc = ba[o];
      for (int64_t i = 0; i < I; ++i) acc += wa[o][i] * xa[n][i];
      ya[n][o] = acc;
    }
  return y;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct PolaNaive {
  torch::Tensor final;          // (B, C, H, W)
  torch::Tensor output;         // (B, h, N, d)
  torch::Tensor output_gated;   // (B, h, N, d)
  torch::Tensor kv_buffer;      // (B, h, 2d, d)
  torch::Tensor attention_sim;  // (B, h, N, N)
  torch::Tensor attention_opp;  // (B, h, N, N)
  torch::Tensor z_sim, z_opp;   // (B, h, N)
  torch::Tensor phi_q_sim, phi_k;  // (B, h, N, 2d)
};

/// PolaFormer by its formulas: A_sim[i, j] = (q_sim_i·K_j / N) / (q_sim_i·mean K + 1e-6), output channel c of head n
/// = Σ_j A_sim[i, j] v_j[c] for c < ⌈d/2⌉, else Σ_j A_opp[i, j] v_j[c]; DWC by its definition (zero padding).
/// `pe`: (1, N, C) or undefined.
PolaNaive naive_pola(PolaAttentionImpl& m, const torch::Tensor& x, const torch::Tensor& pe, double alpha) {
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  const int64_t d1 = (d + 1) / 2, kd = m.dwc->weight.size(2);
  auto scale = m.scale.detach().to(torch::kFloat64).reshape({C});
  auto power = m.power.detach().to(torch::kFloat64).reshape({h, d});
  auto dwc_w = m.dwc->weight.detach().to(torch::kFloat64);
  auto dwc_b = m.dwc->bias.detach().to(torch::kFloat64);
  PolaNaive r;
  r.final = torch::zeros({B, C, H, W}, torch::kFloat64);
  r.output = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.output_gated = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.kv_buffer = torch::zeros({B, h, 2 * d, d}, torch::kFloat64);
  r.attention_sim = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.attention_opp = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.z_sim = torch::zeros({B, h, N}, torch::kFloat64);
  r.z_opp = torch::zeros({B, h, N}, torch::kFloat64);
  r.phi_q_sim = torch::zeros({B, h, N, 2 * d}, torch::kFloat64);
  r.phi_k = torch::zeros({B, h, N, 2 * d}, torch::kFloat64);
  auto sa = scale.accessor<double, 1>();
  auto pa = power.accessor<double, 2>();
  auto wa = dwc_w.accessor<double, 4>();
  auto wb = dwc_b.accessor<double, 1>();
  for (int64_t b = 0; b < B; ++b) {
    auto xt = x[b].to(torch::kFloat64).reshape({C, N}).t().contiguous();  // (N, C), l = row·W + col
    auto qg = naive_linear(xt, m.qg->weight, m.qg->bias), kv = naive_linear(xt, m.kv->weight, m.kv->bias);
    auto qga = qg.accessor<double, 2>();
    auto kva = kv.accessor<double, 2>();
    torch::Tensor pe_d = pe.defined() ? pe.to(torch::kFloat64).reshape({N, C}) : torch::zeros({N, C}, torch::kFloat64);
    auto pea = pe_d.accessor<double, 2>();
    auto pre_gate = torch::zeros({N, C}, torch::kFloat64);
    auto pga = pre_gate.accessor<double, 2>();
    for (int64_t n = 0; n < h; ++n) {
      // Features: x± = ReLU(±x / softplus(scale))^p, p = 1 + α·sigmoid(power).
      std::vector<std::vector<double>> qs(N), qo(N), kf(N);
      for (int64_t l = 0; l < N; ++l) {
        std::vector<double> qp(d), qn(d), kp(d), kn(d);
        for (int64_t i = 0; i < d; ++i) {
          const int64_t c = n * d + i;
          const double sp = std::log1p(std::exp(sa[c]));
          const double p = 1 + alpha / (1 + std::exp(-pa[n][i]));
          const double qv = qga[l][c] / sp, kvv = (kva[l][c] + pea[l][c]) / sp;
          qp[i] = qv > 0 ? std::pow(qv, p) : 0.0;
          qn[i] = qv < 0 ? std::pow(-qv, p) : 0.0;
          kp[i] = kvv > 0 ? std::pow(kvv, p) : 0.0;
          kn[i] = kvv < 0 ? std::pow(-kvv, p) : 0.0;
        }
        qs[l] = qp;
        qs[l].insert(qs[l].end(), qn.begin(), qn.end());
        qo[l] = qn;
        qo[l].insert(qo[l].end(), qp.begin(), qp.end());
        kf[l] = kp;
        kf[l].insert(kf[l].end(), kn.begin(), kn.end());
        for (int64_t f = 0; f < 2 * d; ++f) {
          r.phi_q_sim[b][n][l][f] = qs[l][f];
          r.phi_k[b][n][l][f] = kf[l][f];
        }
      }
      std::vector<double> kmean(2 * d, 0.0);
      for (int64_t j = 0; j < N; ++j)
        for (int64_t f = 0; f < 2 * d; ++f) kmean[f] += kf[j][f] / static_cast<double>(N);
      for (int64_t f = 0; f < 2 * d; ++f)
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j) acc += kf[j][f] * kva[j][C + n * d + c];
          r.kv_buffer[b][n][f][c] = acc / static_cast<double>(N);
        }
      for (int64_t i = 0; i < N; ++i) {
        const double den_sim = dot(qs[i], kmean) + 1e-6, den_opp = dot(qo[i], kmean) + 1e-6;
        r.z_sim[b][n][i] = 1 / den_sim;
        r.z_opp[b][n][i] = 1 / den_opp;
        std::vector<double> a_sim(N), a_opp(N);
        for (int64_t j = 0; j < N; ++j) {
          a_sim[j] = dot(qs[i], kf[j]) / static_cast<double>(N) / den_sim;
          a_opp[j] = dot(qo[i], kf[j]) / static_cast<double>(N) / den_opp;
          r.attention_sim[b][n][i][j] = a_sim[j];
          r.attention_opp[b][n][i][j] = a_opp[j];
        }
        for (int64_t c = 0; c < d; ++c) {
          const auto& a = c < d1 ? a_sim : a_opp;
          double acc = 0;
          for (int64_t j = 0; j < N; ++j) acc += a[j] * kva[j][C + n * d + c];
          r.output[b][n][i][c] = acc;
          pga[i][n * d + c] = acc;
        }
      }
      // DWC: channel i of every head through kernel i (shared), zero padding kd/2.
      for (int64_t i = 0; i < d; ++i)
        for (int64_t row = 0; row < H; ++row)
          for (int64_t col = 0; col < W; ++col) {
            double acc = wb[i];
            for (int64_t a = 0; a < kd; ++a)
              for (int64_t bb = 0; bb < kd; ++bb) {
                const int64_t rr = row + a - kd / 2, cc = col + bb - kd / 2;
                if (rr >= 0 && rr < H && cc >= 0 && cc < W) acc += wa[i][0][a][bb] * kva[rr * W + cc][C + n * d + i];
              }
            pga[row * W + col][n * d + i] += acc;
          }
    }
    auto pre_proj = torch::empty({N, C}, torch::kFloat64);
    for (int64_t l = 0; l < N; ++l)
      for (int64_t c = 0; c < C; ++c) pre_proj[l][c] = pga[l][c] * qga[l][C + c];  // ⊙ g (raw)
    for (int64_t n = 0; n < h; ++n) r.output_gated[b][n] = pre_proj.narrow(1, n * d, d);
    r.final[b] = naive_linear(pre_proj, m.proj->weight, m.proj->bias).t().reshape({C, H, W});
  }
  return r;
}

void expect_matches_naive(PolaAttentionImpl& attn, const torch::Tensor& x, const torch::Tensor& pe, double alpha,
                          const std::string& label) {
  const int64_t d = attn.dim() / attn.heads();
  ProbeCollector probes(kProbes, 4096, kInternals);
  torch::NoGradGuard no_grad;
  auto y = attn.forward(x, AttentionContext::for_input(x, d, &probes));
  auto ref = naive_pola(attn, x, pe, alpha);
  auto check = [&](const char* what, const torch::Tensor& got, const torch::Tensor& want) {
    ASSERT_EQ(got.sizes(), want.sizes()) << label << " " << what;
    const double err = test::max_rel_err(got, want);
    std::printf("  pola naive [%s] %-14s rel err %.3g\n", label.c_str(), what, err);
    EXPECT_LE(err, 1e-10) << label << " " << what;
  };
  check("final", y, ref.final);
  check("output", probes.get(Probe::output), ref.output);
  check("output_gated", probes.get(Probe::output_gated), ref.output_gated);
  check("kv_buffer", probes.get(Probe::kv_buffer), ref.kv_buffer);
  check("attention", probes.get(Probe::attention), ref.attention_sim);
  check("attention_opp", probes.get_internal("attention_opp"), ref.attention_opp);
  check("normalizer_z", probes.get(Probe::normalizer_z), ref.z_sim);
  check("z_opp", probes.get_internal("normalizer_z_opp"), ref.z_opp);
  check("feature_q", probes.get(Probe::feature_q), ref.phi_q_sim);
  check("feature_k", probes.get(Probe::feature_k), ref.phi_k);
}

TEST(PolaNaive, LinearPathEqualsNaiveFormulaWithPeOnItsOwnGrid) {
  const int64_t H = 4, W = 5;  // non-square, the table's own grid
  PolaAttention attn(AttentionOptions(32, 2).set("pe_height", H).set("pe_width", W));
  test::randomize(*attn, 17);
  attn->to(torch::kFloat64);
  auto x = test::random_input(2, 32, H, W, 3);
  expect_matches_naive(*attn, x, attn->positional_encoding.detach(), 4.0, "own grid 4x5");
}

TEST(PolaNaive, LinearPathEqualsNaiveFormulaWithPeResampledToAnotherGrid) {
  // A 4×5 table on a 6×3 grid (down- and up-sampled axes), PE from the independent bicubic resampler.
  PolaAttention attn(AttentionOptions(32, 2).set("pe_height", 4).set("pe_width", 5));
  test::randomize(*attn, 19);
  attn->to(torch::kFloat64);
  auto x = test::random_input(3, 32, 6, 3, 4);
  auto pe = naive_resample(attn->positional_encoding.detach(), 4, 5, 6, 3, "bicubic");
  expect_matches_naive(*attn, x, pe, 4.0, "4x5 PE on 6x3");
  // The other resampling rules, end to end.
  for (const std::string mode : {"bilinear", "bicubic_antialias"}) {
    PolaAttention other(AttentionOptions(32, 2).set("pe_height", 4).set("pe_width", 5).set("pe_resample", mode));
    test::randomize(*other, 19);
    other->to(torch::kFloat64);
    expect_matches_naive(*other, x, naive_resample(other->positional_encoding.detach(), 4, 5, 6, 3, mode), 4.0,
                         "4x5 PE on 6x3, " + mode);
  }
}

TEST(PolaNaive, OddHeadWidthOtherAlphaKernelAndNoPe) {
  // d = 9: torch.chunk gives the same-sign stream 5 channels, the opposite-sign 4.
  PolaAttention attn(AttentionOptions(18, 2).set("pe_height", 0).set("pe_width", 0).set("power_alpha", 1.5)
                         .set("dwc_kernel", 3));
  test::randomize(*attn, 23);
  attn->to(torch::kFloat64);
  auto x = test::random_input(2, 18, 3, 7, 5);
  expect_matches_naive(*attn, x, {}, 1.5, "d=9 alpha=1.5 k=3 no PE");
  PolaAttention linear_power(AttentionOptions(16, 1).set("power_alpha", 0.0));  // p = 1
  test::randomize(*linear_power, 29);
  linear_power->to(torch::kFloat64);
  auto x2 = test::random_input(2, 16, 5, 2, 6);
  expect_matches_naive(*linear_power, x2, naive_resample(linear_power->positional_encoding.detach(), 7, 9, 5, 2, "bicubic"),
                       0.0, "alpha=0 7x9 PE on 5x2");
}

TEST(PolaSink, AttentionRowsSumToOneButForEpsilon) {
  PolaAttention attn(AttentionOptions(32, 2));
  test::randomize(*attn, 31, 0.2);
  attn->to(torch::kFloat64);
  auto x = test::random_input(2, 32, 5, 6, 7);
  ProbeCollector probes(kProbes, 4096, {"attention_opp"});
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  // Σ_j A_ij = den_i / (den_i + ε) = 1 − ε·z_i for each stream.
  auto rows = probes.get(Probe::attention).sum(-1);
  EXPECT_LE((rows - (1 - 1e-6 * probes.get(Probe::normalizer_z))).abs().max().item<double>(), 1e-12);
  EXPECT_GE(probes.get(Probe::attention).min().item<double>(), 0.0);
  EXPECT_GE(probes.get_internal("attention_opp").min().item<double>(), 0.0);
}

TEST(PolaDims, DefaultsRunAtRavltMicroAndDeitDims) {
  torch::NoGradGuard no_grad;
  struct Case {
    int64_t C, heads, H, W;
  };
  for (const auto& c : std::vector<Case>{{16, 1, 16, 24}, {32, 2, 8, 12}, {64, 4, 4, 6}, {128, 4, 2, 3}, {16, 1, 7, 7},
                                          {192, 3, 14, 14}, {192, 3, 10, 16}, {32, 2, 1, 1}}) {
    PolaAttention attn(AttentionOptions(c.C, c.heads));
    test::randomize(*attn, 37, 0.1);
    auto x = test::random_input(2, c.C, c.H, c.W, 8, torch::kFloat32);
    auto y = attn->forward(x, AttentionContext::for_input(x, c.C / c.heads));
    EXPECT_EQ(y.sizes(), x.sizes()) << c.C << " " << c.H << "x" << c.W;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << c.C << " " << c.H << "x" << c.W;
  }
}

}  // namespace
}  // namespace rala

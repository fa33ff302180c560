// CHELA (K), a reconstruction without official code: no golden exists. The fast path (FFT or direct long conv, tiled
// linear attention) is held to a step-by-step float64 reference of the formula in chela.h: convolutions by their
// definition with the full (uncropped) kernel, the O(N²) attention matrix, MEGA's gated block written out.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "attention_variants/chela.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using torch::Tensor;


Tensor elementwise(const Tensor& t, double (*f)(double)) {
  auto out = t.to(torch::kFloat64).contiguous().clone();
  auto* p = out.data_ptr<double>();
  for (int64_t i = 0; i < out.numel(); ++i) p[i] = f(p[i]);
  return out;
}
double silu_def(double v) { return v / (1.0 + std::exp(-v)); }
double sigmoid_def(double v) { return 1.0 / (1.0 + std::exp(-v)); }
double relu_def(double v) { return v > 0 ? v : 0.0; }
double elu1_def(double v) { return v > 0 ? v + 1.0 : std::exp(v); }

/// max relative error of a against b, recorded as a test property (--gtest_output=xml shows it) and held to tol.
void expect_rel(const std::string& what, const Tensor& a, const Tensor& b, double tol) {
  const double e = test::max_rel_err(a, b);
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", e);
  ::testing::Test::RecordProperty(what, text);
  EXPECT_LE(e, tol) << what;
}

/// y[..., o] = Σ_i w[o, i] x[..., i] + b[o].
Tensor linear_def(const Tensor& x, const Tensor& w, const Tensor& b) {
  return torch::einsum("oi,...i->...o", {w, x}) + b;
}

/// Depthwise cross-correlation with zero padding by its definition, the kernel (C, 1, kh, kw) centred:
/// y[b, c, i, j] = bias[c] + Σ_{a, e} w[c, 0, a, e] · x[b, c, i + a − kh/2, j + e − kw/2] (0 outside the grid).
Tensor depthwise_def(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), kh = w.size(2), kw = w.size(3);
  auto xc = x.to(torch::kFloat64).contiguous();
  auto wc = w.to(torch::kFloat64).contiguous();
  auto bc = bias.to(torch::kFloat64).contiguous();
  auto y = torch::empty({B, C, H, W}, torch::kFloat64);
  auto xa = xc.accessor<double, 4>();
  auto wa = wc.accessor<double, 4>();
  auto ba = bc.accessor<double, 1>();
  auto ya = y.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          double s = ba[c];
          for (int64_t a = 0; a < kh; ++a)
            for (int64_t e = 0; e < kw; ++e) {
              const int64_t ii = i + a - kh / 2, jj = j + e - kw / 2;
              if (ii >= 0 && ii < H && jj >= 0 && jj < W) s += wa[c][0][a][e] * xa[b][c][ii][jj];
            }
          ya[b][c][i][j] = s;
        }
  return y;
}

struct ChelaReference {
  Tensor final;      ///< (B, C, H, W)
  Tensor output;     ///< (B, h, N, dv)
  Tensor gated;      ///< (B, h, N, dv)
  Tensor attention;  ///< (B, h, N, N)
  Tensor kv;         ///< (B, h, dz, dv)
  Tensor z;          ///< (B, h, N)
  Tensor fq, fk;     ///< (B, h, N, dz)
  Tensor short_conv, long_conv, update_gate;  ///< (B, C, H, W)
};

/// The block of chela.h written out step by step in float64 (no code of the module is used, only its parameters).
/// `prefix` (B, P, C): prefix tokens ahead of the grid (their mx is the token itself); then `final` is (B, P + N, C).
ChelaReference naive_chela(ChelaAttentionImpl& m, const Tensor& x_in, bool relu, bool mean, bool interpolate,
                           bool value_from_conv, const Tensor& prefix = {}) {
  const double eps = 1e-6;
  auto x = x_in.to(torch::kFloat64);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), h = m.heads();
  const int64_t P = prefix.defined() ? prefix.size(1) : 0, G = H * W, N = P + G;  // N: all tokens
  const int64_t Z = m.zdim(), V = m.hdim(), dz = Z / h, dv = V / h;
  auto Par = [&](const std::string& name) { return test::param(m, name).to(torch::kFloat64); };
  auto to_tokens = [&](const Tensor& map) { return map.flatten(2).transpose(1, 2).contiguous(); };  // l = row·W + col
  auto to_map = [&](const Tensor& t) { return t.transpose(1, 2).reshape({B, C, H, W}); };
  ChelaReference r;
  auto with_prefix = [&](const Tensor& t) { return P > 0 ? torch::cat({prefix.to(torch::kFloat64), t}, 1) : t; };
  auto xt = with_prefix(to_tokens(x));  // (B, N, C)
  r.short_conv = elementwise(depthwise_def(x, Par("short_conv.weight"), Par("short_conv.bias")), silu_def);
  r.long_conv = depthwise_def(r.short_conv, Par("long_conv.weight"), Par("long_conv.bias"));
  auto mxt = with_prefix(to_tokens(r.long_conv));  // a prefix token's mx is the token itself
  auto v_in = value_from_conv ? mxt : xt;
  auto v = elementwise(linear_def(v_in, Par("v_proj.weight"), Par("v_proj.bias")), silu_def);  // (B, N, V)
  auto base = linear_def(mxt, Par("mx_proj.weight"), Par("mx_proj.bias"));  // (B, N, 2C + Z + V)
  auto u = elementwise(base.narrow(-1, 0, C), sigmoid_def);
  r.update_gate = to_map(u.narrow(1, P, G));
  auto zr = elementwise(base.narrow(-1, C, Z + V), silu_def);
  auto hx = base.narrow(-1, C + Z + V, C);
  auto z = zr.narrow(-1, 0, Z), gate_r = zr.narrow(-1, Z, V);
  auto gamma = Par("gamma"), beta = Par("beta");
  auto q = z * gamma[0] + beta[0], k = z * gamma[1] + beta[1];  // (B, N, Z)
  auto phi = relu ? relu_def : elu1_def;
  auto fq = elementwise(q, phi), fk = elementwise(k, phi);
  r.fq = torch::zeros({B, h, N, dz}, torch::kFloat64);
  r.fk = torch::zeros_like(r.fq);
  r.output = torch::zeros({B, h, N, dv}, torch::kFloat64);
  r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.kv = torch::zeros({B, h, dz, dv}, torch::kFloat64);
  r.z = torch::zeros({B, h, N}, torch::kFloat64);
  auto fqa = fq.accessor<double, 3>(), fka = fk.accessor<double, 3>(), va = v.accessor<double, 3>();
  auto Aa = r.attention.accessor<double, 4>(), oa = r.output.accessor<double, 4>(), kva = r.kv.accessor<double, 4>();
  auto za = r.z.accessor<double, 3>();
  const double scale = mean ? 1.0 / N : 1.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < h; ++n) {
      for (int64_t i = 0; i < N; ++i) {
        double den = 0;
        std::vector<double> num(N);
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t c = 0; c < dz; ++c) s += fqa[b][i][n * dz + c] * fka[b][j][n * dz + c];
          num[j] = s * scale;
          den += num[j];
        }
        za[b][n][i] = 1.0 / (den + eps);
        for (int64_t j = 0; j < N; ++j) Aa[b][n][i][j] = num[j] / (den + eps);
        for (int64_t c = 0; c < dv; ++c) {
          double s = 0;
          for (int64_t j = 0; j < N; ++j) s += Aa[b][n][i][j] * va[b][j][n * dv + c];
          oa[b][n][i][c] = s;
        }
      }
      for (int64_t a = 0; a < dz; ++a)
        for (int64_t c = 0; c < dv; ++c) {
          double s = 0;
          for (int64_t j = 0; j < N; ++j) s += fka[b][j][n * dz + a] * va[b][j][n * dv + c];
          kva[b][n][a][c] = s * scale;
        }
      r.fq[b][n] = fq[b].narrow(-1, n * dz, dz);
      r.fk[b][n] = fk[b].narrow(-1, n * dz, dz);
    }
  auto o_tokens = r.output.permute({0, 2, 1, 3}).reshape({B, N, V});  // channel n·dv + c
  auto gated = o_tokens * gate_r;
  r.gated = gated.reshape({B, N, h, dv}).permute({0, 2, 1, 3});
  auto hh = elementwise(hx + linear_def(gated, Par("h_proj.weight"), Par("h_proj.bias")), silu_def);  // (B, N, C)
  r.final = interpolate ? u * (hh - xt) : u * hh;
  if (P == 0) r.final = to_map(r.final);
  return r;
}

struct Case {
  std::vector<SettingPair> settings;
  bool relu = false, mean = false, interpolate = true, value_from_conv = false;
};

const std::set<std::string> kInternals = {"short_conv", "long_conv", "update_gate"};

TEST(ChelaNaive, FastPathEqualsStepByStepReference) {
  const std::vector<Case> cases = {
      {{}},  // defaults: global kernel 31×31 (long_grid 16) by FFT, 1+elu, sum, tile 64, interpolate
      {{{"long_conv", "local"}, {"long_kernel", "5"}, {"phi", "relu"}, {"normalizer", "mean"}, {"tile", "3"},
        {"output", "gate"}, {"short_kernel", "5"}, {"zdim", "6"}, {"hdim", "10"}, {"value_input", "conv"}},
       true, true, false, true},
      // a grid larger than the global kernel's reach (long_grid 3 → 5×5 kernel on 5×4), direct path, 7-token tiles
      {{{"long_grid", "3"}, {"long_method", "direct"}, {"tile", "7"}}},
      // a local kernel larger than the grid, by FFT
      {{{"long_conv", "local"}, {"long_kernel", "13"}, {"long_method", "fft"}, {"tile", "1"}}},
  };
  const int64_t C = 16, h = 2, H = 5, W = 4, N = H * W;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    SCOPED_TRACE("case " + std::to_string(ci));
    const auto& cs = cases[ci];
    ChelaAttention attn(AttentionOptions(C, h).settings(cs.settings));
    test::randomize(*attn, 11 + ci);
    attn->to(torch::kFloat64);
    auto x = test::random_input(2, C, H, W, 5 + ci);
    ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention, Probe::normalizer_z,
                           Probe::feature_q, Probe::feature_k},
                          4096, kInternals);
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, C / h, &probes));
    auto ref = naive_chela(*attn, x, cs.relu, cs.mean, cs.interpolate, cs.value_from_conv);
    expect_rel("case" + std::to_string(ci) + "_y", y, ref.final, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_output", probes.get(Probe::output), ref.output, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_output_gated", probes.get(Probe::output_gated), ref.gated, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_attention", probes.get(Probe::attention), ref.attention, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_kv_buffer", probes.get(Probe::kv_buffer), ref.kv, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_normalizer_z", probes.get(Probe::normalizer_z), ref.z, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_feature_q", probes.get(Probe::feature_q), ref.fq, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_feature_k", probes.get(Probe::feature_k), ref.fk, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_short_conv", probes.get_internal("short_conv"), ref.short_conv, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_long_conv", probes.get_internal("long_conv"), ref.long_conv, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_update_gate", probes.get_internal("update_gate"), ref.update_gate,
               1e-10);
    EXPECT_EQ(probes.get(Probe::attention).sizes(), (std::vector<int64_t>{2, h, N, N}));
  }
}

TEST(ChelaLongConv, FftEqualsDirectConvolution) {
  // Global and local kernels, grids smaller and larger than the kernel's reach, float64.
  const std::vector<std::pair<std::vector<SettingPair>, std::pair<int64_t, int64_t>>> cases = {
      {{}, {5, 4}}, {{}, {14, 14}}, {{}, {10, 16}}, {{{"long_grid", "4"}}, {9, 13}},
      {{{"long_conv", "local"}, {"long_kernel", "7"}}, {6, 11}},
      {{{"long_conv", "local"}, {"long_kernel", "31"}}, {3, 2}},
      {{{"long_conv", "local"}, {"long_kernel", "1"}}, {4, 4}}};
  for (const auto& [settings, grid] : cases) {
    ChelaAttention attn(AttentionOptions(8, 2).settings(settings));
    test::randomize(*attn, 3);
    attn->to(torch::kFloat64);
    auto s = test::random_input(2, 8, grid.first, grid.second, 9);
    torch::NoGradGuard no_grad;
    auto fft = attn->long_convolution(s, true), direct = attn->long_convolution(s, false);
    auto def = depthwise_def(s, attn->long_conv->weight, attn->long_conv->bias);
    const auto tag = std::to_string(attn->long_conv->weight.size(2)) + "_on_" + std::to_string(grid.first) + "x" +
                     std::to_string(grid.second);
    expect_rel("fft_vs_definition_kernel" + tag, fft, def, 1e-10);
    expect_rel("direct_vs_definition_kernel" + tag, direct, def, 1e-10);
  }
  // The whole layer: long_method=fft and =direct on the same weights.
  ChelaAttention a(AttentionOptions(16, 2).set("long_method", "fft"));
  ChelaAttention b(AttentionOptions(16, 2).set("long_method", "direct"));
  EXPECT_TRUE(a->long_fft());
  EXPECT_FALSE(b->long_fft());
  test::randomize(*a, 4);
  test::randomize(*b, 4);
  a->to(torch::kFloat64);
  b->to(torch::kFloat64);
  auto x = test::random_input(2, 16, 7, 9, 2);
  torch::NoGradGuard no_grad;
  expect_rel("layer_fft_vs_direct", a->forward(x, AttentionContext::for_input(x, 8)),
             b->forward(x, AttentionContext::for_input(x, 8)), 1e-10);
}

TEST(ChelaTiles, ResultDoesNotDependOnTheTileSize) {
  const int64_t C = 16, H = 5, W = 7;
  auto x = test::random_input(2, C, H, W, 21);
  Tensor ref;
  for (int64_t tile : {0, 1, 3, 8, 34, 35, 64}) {
    ChelaAttention attn(AttentionOptions(C, 2).set("tile", tile));
    test::randomize(*attn, 8);  // the same weights for every tile size
    attn->to(torch::kFloat64);
    ProbeCollector probes({Probe::kv_buffer});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, 8, &probes));
    if (!ref.defined()) {
      ref = y;
      continue;
    }
    expect_rel("tile" + std::to_string(tile) + "_vs_one_tile", y, ref, 1e-12);
  }
}

TEST(ChelaGradients, NonDefaultSettingsReachEveryParameter) {
  ChelaAttention attn(AttentionOptions(32, 2)
                          .set("long_conv", "local")
                          .set("long_kernel", 9)
                          .set("tile", 4)
                          .set("output", "gate")
                          .set("phi", "relu"));
  test::randomize(*attn, 2, 0.2);
  auto x = test::random_input(2, 32, 5, 6, 3, torch::kFloat32).requires_grad_(true);
  auto y = attn->forward(x, AttentionContext::for_input(x, 16));
  (y * y).sum().backward();
  for (const auto& p : attn->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(ChelaSettings, DefaultsAndDerivedWidths) {
  ChelaAttention a(AttentionOptions(64, 4));
  EXPECT_EQ(a->zdim(), 16);  // C/4, a multiple of heads
  EXPECT_EQ(a->hdim(), 128);  // 2C
  EXPECT_TRUE(a->long_fft());
  EXPECT_EQ(a->long_conv->weight.sizes(), (std::vector<int64_t>{64, 1, 31, 31}));
  EXPECT_EQ(a->short_conv->weight.sizes(), (std::vector<int64_t>{64, 1, 3, 3}));
  EXPECT_EQ(a->mx_proj->weight.sizes(), (std::vector<int64_t>{16 + 128 + 2 * 64, 64}));
  EXPECT_EQ(a->gamma.sizes(), (std::vector<int64_t>{2, 16}));
  EXPECT_EQ(ChelaAttention(AttentionOptions(16, 1))->zdim(), 4);
  EXPECT_EQ(ChelaAttention(AttentionOptions(192, 3))->zdim(), 48);
  EXPECT_EQ(ChelaAttention(AttentionOptions(12, 4))->zdim(), 4);  // C/4 = 3 → at least one per head
  EXPECT_EQ(ChelaAttention(AttentionOptions(30, 3))->zdim(), 6);  // C/4 = 7 → 6
  ChelaAttention local(AttentionOptions(16, 2).set("long_conv", "local").set("long_kernel", 11));
  EXPECT_FALSE(local->long_fft());
  EXPECT_EQ(local->long_conv->weight.size(2), 11);
  EXPECT_EQ(ChelaAttention(AttentionOptions(16, 2).set("long_grid", 5))->long_conv->weight.size(2), 9);

  // A state dict's shapes give back the settings that size it, whichever long_conv mode is chosen.
  ChelaAttention src(AttentionOptions(16, 2).set("zdim", 6).set("hdim", 20).set("short_kernel", 5).set("long_grid", 4));
  StateShapes shapes;
  for (const auto& p : src->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  auto pairs = settings_from_state_shapes(Variant::chela, shapes);
  for (const char* mode : {"global", "local"}) {
    auto o = AttentionOptions(16, 2).settings(pairs).set("long_conv", mode);
    ChelaAttention dst(o);
    for (const auto& p : src->named_parameters())
      EXPECT_EQ(dst->named_parameters()[p.key()].sizes(), p.value().sizes()) << mode << " " << p.key();
  }
}

TEST(ChelaSettings, BadSettingsGiveOneLineErrors) {
  auto make = [](AttentionOptions o) { return make_attention(Variant::chela, o); };
  const std::vector<std::pair<std::pair<std::string, std::string>, std::string>> cases = {
      {{"zdim", "3"}, "chela: setting 'zdim' (3) must be divisible by heads (2)"},
      {{"hdim", "5"}, "chela: setting 'hdim' (5) must be divisible by heads (2)"},
      {{"long_kernel", "4"},
       "setting 'long_kernel' of attention variant chela expects an odd integer in [1, 2047], got '4'"},
      {{"short_kernel", "33"}, "setting 'short_kernel' of attention variant chela expects an odd integer in [1, 31]"},
      {{"long_conv", "circular"}, "setting 'long_conv' of attention variant chela expects one of: global, local, got"},
      {{"long_method", "winograd"}, "expects one of: auto, direct, fft, got 'winograd'"},
      {{"long_grid", "0"}, "setting 'long_grid' of attention variant chela expects an integer in [1, 1024], got '0'"},
      {{"value_input", "v"}, "setting 'value_input' of attention variant chela expects one of: x, conv, got 'v'"},
      {{"phi", "softmax"}, "setting 'phi' of attention variant chela expects one of: 1+elu, relu, got 'softmax'"},
      {{"normalizer", "sum_clamp"}, "setting 'normalizer' of attention variant chela expects one of: sum, mean"},
      {{"tile", "-1"}, "setting 'tile' of attention variant chela expects an integer in [0, 1073741824], got '-1'"},
      {{"output", "residual"}, "setting 'output' of attention variant chela expects one of: interpolate, gate"},
      {{"ndim", "2"}, "unknown setting 'ndim' for attention variant chela"},
  };
  for (const auto& c : cases) {
    const auto& kv = c.first;
    const auto& text = c.second;
    auto msg = test::error_message([&] { make(AttentionOptions(32, 2).set(kv.first, kv.second)); });
    EXPECT_NE(msg.find(text), std::string::npos) << "message: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;
  }
}

/// Runs with default settings at the model dims this toolkit uses; output finite with the input's shape.
void expect_runs(int64_t C, int64_t h, int64_t H, int64_t W) {
  auto attn = make_attention(Variant::chela, AttentionOptions(C, h));
  auto x = test::random_input(2, C, H, W, 1, torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, C / h));
  EXPECT_EQ(y.sizes(), x.sizes()) << C << "/" << h << " " << H << "x" << W;
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << C << "/" << h << " " << H << "x" << W;
}

TEST(ChelaDims, RavltMicroAndDeitDimsAnyGrid) {
  // ravlt_micro: C 16/32/64/128, heads 1/2/4/4, 64-px images → 16, 8, 4, 2; plus non-square and a grid beyond the
  // global kernel's reach (long_grid 16).
  const std::vector<std::pair<int64_t, int64_t>> dims = {{16, 1}, {32, 2}, {64, 4}, {128, 4}};
  for (size_t s = 0; s < dims.size(); ++s) {
    const int64_t g = 16 >> s;
    expect_runs(dims[s].first, dims[s].second, g, g);
    expect_runs(dims[s].first, dims[s].second, 3, 7);
    expect_runs(dims[s].first, dims[s].second, 1, 1);
  }
  expect_runs(16, 1, 20, 18);
  // DeiT-tiny: C 192, 3 heads, 14×14 (224 px) and 10×16 (160×256 px).
  expect_runs(192, 3, 14, 14);
  expect_runs(192, 3, 10, 16);
}

TEST(ChelaMacs, CountsTheFormula) {
  // local (direct): projections are v_proj, mx_proj, h_proj, short and long conv; matmuls kv, φq·kv, normaliser.
  ChelaAttention local(AttentionOptions(16, 2).set("long_conv", "local").set("long_kernel", 5));
  const int64_t N = 6 * 7, C = 16, Z = 4, V = 32;
  auto m = local->macs(6, 7);
  EXPECT_EQ(m.projections, N * (C * V + C * (Z + V + 2 * C) + V * C + 9 * C + 25 * C));
  EXPECT_EQ(m.matmuls, 2 * N * Z * (V / 2) + N * Z);
  // A kernel larger than the grid counts only the taps that meet it: 31×31 on 2×3 → 3×5.
  ChelaAttention direct(AttentionOptions(16, 2).set("long_method", "direct"));
  EXPECT_EQ(direct->macs(2, 3).projections, 6 * (C * V + C * (Z + V + 2 * C) + V * C + 9 * C + 15 * C));
  // The FFT path grows as N log N, the direct global conv as N² (at 16×16, the grid the kernel spans).
  ChelaAttention fft(AttentionOptions(16, 2));
  EXPECT_LT(fft->macs(16, 16).projections, direct->macs(16, 16).projections);
  EXPECT_EQ(fft->macs(16, 16).matmuls, direct->macs(16, 16).matmuls);
}

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// Prefix tokens (DeiT's cls): the short-long convolutions are the grid's (a prefix token's mx is the token itself);
// the linear attention runs over all 1 + N tokens. Against the step-by-step reference with the prefix in front.
TEST(ChelaPrefix, TheClsTokensMxIsItselfAndItJoinsTheLinearAttention) {
  for (bool from_conv : {false, true}) {
    SCOPED_TRACE(from_conv ? "value_input=conv" : "value_input=x");
    const int64_t C = 16, h = 2, H = 4, W = 5, N = H * W;
    ChelaAttention attn(AttentionOptions(C, h).set("value_input", from_conv ? "conv" : "x").prefix_tokens(1));
    test::randomize(*attn, 17);
    attn->to(torch::kFloat64);
    auto tokens = test::random_input(2, 1 + N, C, 1, 6).squeeze(-1);
    AttentionContext ctx;
    ctx.height = H;
    ctx.width = W;
    ProbeCollector probes({Probe::attention, Probe::output});
    ctx.probes = &probes;
    torch::NoGradGuard no_grad;
    auto y = attn->forward_tokens(tokens, ctx);
    auto grid = tokens.narrow(1, 1, N).transpose(1, 2).reshape({2, C, H, W});
    auto ref = naive_chela(*attn, grid, false, false, true, from_conv, tokens.narrow(1, 0, 1));
    expect_rel("prefix_y", y, ref.final, 1e-10);
    expect_rel("prefix_attention", probes.get(Probe::attention), ref.attention, 1e-10);
    expect_rel("prefix_output", probes.get(Probe::output), ref.output, 1e-10);
  }
}

}  // namespace
}  // namespace rala

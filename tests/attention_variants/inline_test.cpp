// InLine attention (I): golden parity with the official PVT InLineAttention (every probe), the O(N) path vs a naive
// float64 O(N²) reference written from the formulas (every kernel function, another residual kernel, no residual),
// settings from state-dict shapes, bad settings, and the model dimensions it must run at.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "attention_variants/inline.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "inline_attention.h5";


double golden_dev(const torch::Tensor& got, const torch::Tensor& ref) {
  return test::max_abs_err(got, ref) / std::max(1.0, ref.abs().max().item<double>());
}

const std::set<std::string> kInternals = {"k_mean",          "v_mean",         "output_heads",   "residual_weight",
                                          "local_residual",  "output_pre_proj", "mean_correction"};
const std::set<Probe> kProbes = {Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention,
                                 Probe::feature_q, Probe::feature_k};

TEST(InlineGolden, OutputAndEveryProbeMatchOfficialCode) {
  auto x_tokens = golden(kGolden, "input");  // (2, 63, 64), 7×9 raster
  const int64_t B = 2, C = 64, h = 2, d = 32, H = 7, W = 9, N = 63;
  InlineAttention attn(AttentionOptions(C, h));
  test::load_state(*attn, kGolden);
  attn->eval();
  auto x = x_tokens.transpose(1, 2).reshape({B, C, H, W});
  ProbeCollector probes(kProbes, 4096, kInternals);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, d, &probes)).flatten(2).transpose(1, 2);  // (B, N, C)

  auto check = [](const char* what, const torch::Tensor& got, const torch::Tensor& ref) {
    ASSERT_EQ(got.sizes(), ref.sizes()) << what;
    const double dev = golden_dev(got, ref);
    std::printf("  inline golden %-30s max|Δ|/max(1,max|ref|) = %.3g\n", what, dev);
    EXPECT_LE(dev, 1e-5) << what;
  };
  auto g = [](const char* name) { return golden(kGolden, std::string("probes/") + name); };
  check("output", y, golden(kGolden, "output"));
  check("kv_buffer", probes.get(Probe::kv_buffer), g("kv_buffer"));
  check("output (output_heads)", probes.get(Probe::output), g("output_heads"));
  check("output_gated (output_pre_proj)", probes.get(Probe::output_gated),
        g("output_pre_proj").reshape({B, N, h, d}).transpose(1, 2));
  for (const char* name : {"k_mean", "v_mean", "output_heads", "residual_weight", "local_residual", "output_pre_proj"})
    check(name, probes.get_internal(name), g(name));
  // Identity kernel: the features are q and k themselves; the implied map (with the mean-value correction) gives the
  // official per-head output from v.
  auto w = golden(kGolden, "state_dict/kv.weight"), bias = golden(kGolden, "state_dict/kv.bias");
  auto kv = torch::matmul(x_tokens, w.t()) + bias;  // (B, N, 2C)
  auto heads = [&](const torch::Tensor& t) { return t.reshape({B, N, h, d}).transpose(1, 2); };
  check("feature_k (k)", probes.get(Probe::feature_k), heads(kv.narrow(-1, 0, C)));
  check("feature_k mean (k_mean)", probes.get(Probe::feature_k).mean(2), g("k_mean"));
  check("attention · v (output_heads)", torch::matmul(probes.get(Probe::attention), heads(kv.narrow(-1, C, C))),
        g("output_heads"));
}

TEST(InlineSettings, FromStateShapesAndDefaults) {
  StateShapes shapes;
  for (const char* key : {"q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias", "residual.0.weight",
                          "residual.0.bias", "residual.2.weight", "residual.2.bias"})
    shapes[key] = golden(kGolden, std::string("state_dict/") + key).sizes().vec();
  EXPECT_EQ(settings_from_state_shapes(Variant::inline_attention, shapes),
            (std::vector<SettingPair>{{"residual", "1"}, {"residual_kernel", "3"}}));
  EXPECT_EQ(InlineAttentionImpl::settings_from_state_shapes(
                {{"blocks.0.attn.residual.0.weight", {64, 32, 1}}, {"blocks.0.attn.residual.2.weight", {1600, 32, 1}}}),
            (std::vector<SettingPair>{{"residual", "1"}, {"residual_kernel", "5"}}));
  EXPECT_EQ(InlineAttentionImpl::settings_from_state_shapes({{"q.weight", {64, 64}}}),
            (std::vector<SettingPair>{{"residual", "0"}}));
  EXPECT_NE(test::error_message([] {
              InlineAttentionImpl::settings_from_state_shapes(
                  {{"residual.0.weight", {64, 32, 1}}, {"residual.2.weight", {128, 32, 1}}});
            }).find("not k²·C"),
            std::string::npos);

  InlineAttention attn(AttentionOptions(32, 2));
  EXPECT_EQ(attn->settings().describe(), "kernel_func=identity residual=1 residual_kernel=3");
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& p : attn->named_parameters()) got[p.key()] = p.value().sizes().vec();
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"q.weight", {32, 32}},           {"q.bias", {32}},          {"kv.weight", {64, 32}},
      {"kv.bias", {64}},                {"proj.weight", {32, 32}}, {"proj.bias", {32}},
      {"residual.0.weight", {32, 16, 1}}, {"residual.0.bias", {32}}, {"residual.2.weight", {288, 16, 1}},
      {"residual.2.bias", {288}}};
  EXPECT_EQ(got, expected);
  EXPECT_EQ(InlineAttention(AttentionOptions(32, 2).set("residual", false))->named_parameters().size(), 6u);
  EXPECT_EQ(InlineAttention(AttentionOptions(32, 2).set("residual_kernel", 5))
                ->named_parameters()["residual.2.weight"].sizes(),
            (std::vector<int64_t>{800, 16, 1}));
}

TEST(InlineSettings, BadSettingsGiveOneLineErrors) {
  auto msg = [](const AttentionOptions& o) { return test::error_message([&] { InlineAttention attn(o); }); };
  auto has = [](const std::string& m, const std::string& text) {
    EXPECT_NE(m.find(text), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  };
  has(msg(AttentionOptions(32, 2).set("kernel_func", "softmax")),
      "setting 'kernel_func' of attention variant inline expects one of: identity, relu, leakyrelu, exp, got 'softmax'");
  has(msg(AttentionOptions(32, 2).set("residual_kernel", 4)),
      "setting 'residual_kernel' of attention variant inline expects an odd integer in [1, 15], got '4'");
  has(msg(AttentionOptions(32, 2).set("residual", "sometimes")), "setting 'residual' of attention variant inline expects a boolean");
  has(msg(AttentionOptions(32, 2).set("kernel", "relu")), "unknown setting 'kernel' for attention variant inline");
  has(msg(AttentionOptions(30, 4)), "channels (30) must be divisible by heads (4)");
}

TEST(InlineMacs, CountsProjectionsResidualAndProducts) {
  const int64_t N = 63, C = 64, h = 2, d = 32;
  auto m = InlineAttention(AttentionOptions(C, h))->macs(7, 9);
  EXPECT_EQ(m.projections, 4 * N * C * C + 10 * C * (C / h) + 9 * C * N);
  EXPECT_EQ(m.matmuls, 2 * N * d * C + 2 * N * C);
  EXPECT_EQ(InlineAttention(AttentionOptions(C, h).set("residual", false))->macs(7, 9).projections, 4 * N * C * C);
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

double phi(double x, const std::string& kernel) {
  if (kernel == "relu") return std::max(x, 0.0);
  if (kernel == "leakyrelu") return x >= 0 ? x : 0.01 * x;
  if (kernel == "exp") return std::exp(0.2 * x);
  return x;
}

/// Grouped 1×1 Conv1d on one vector by its definition: y[o] = b[o] + Σ_i w[o][i] x[g·(C/groups) + i], g = o / (O/groups).
std::vector<double> grouped_1x1(const std::vector<double>& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                int64_t groups) {
  auto w = weight.detach().to(torch::kFloat64), b = bias.detach().to(torch::kFloat64);
  const int64_t O = w.size(0), in_per = w.size(1), out_per = O / groups;
  auto wa = w.accessor<double, 3>();
  auto ba = b.accessor<double, 1>();
  std::vector<double> y(O);
  for (int64_t o = 0; o < O; ++o) {
    const int64_t g = o / out_per;
    double acc = ba[o];
    for (int64_t i = 0; i < in_per; ++i) acc += wa[o][i][0] * x[g * in_per + i];
    y[o] = acc;
  }
  return y;
}

struct InlineNaive {
  torch::Tensor final;         // (B, C, H, W)
  torch::Tensor output;        // (B, h, N, d)
  torch::Tensor output_gated;  // (B, h, N, d)
  torch::Tensor attention;     // (B, h, N, N)
  torch::Tensor kv_buffer;     // (B, h, d, d)
  torch::Tensor residual_weight;  // (B, C, k, k)
};

/// InLine by its formulas: A_ij = 1/N + (s/N) φq_i·(φk_j − mean_m φk_m), o = A v; residual kernel of channel c of image
/// b = rows k²c… of Conv1d₂(GELU(Conv1d₀(mean_l x_l))) (GELU(x) = x·Φ(x) with erf), applied by the definition of a
/// depthwise correlation with zero padding; out = proj(o + residual).
InlineNaive naive_inline(InlineAttentionImpl& m, const torch::Tensor& x, const std::string& kernel, int64_t k,
                         bool with_residual) {
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  const double s = 1 / std::sqrt(static_cast<double>(d));
  InlineNaive r;
  r.final = torch::zeros({B, C, H, W}, torch::kFloat64);
  r.output = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.output_gated = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.attention = torch::zeros({B, h, N, N}, torch::kFloat64);
  r.kv_buffer = torch::zeros({B, h, d, d}, torch::kFloat64);
  r.residual_weight = torch::zeros({B, C, k, k}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b) {
    auto xt = x[b].to(torch::kFloat64).reshape({C, N}).t().contiguous();  // (N, C)
    auto q = naive_linear(xt, m.q->weight, m.q->bias), kv = naive_linear(xt, m.kv->weight, m.kv->bias);
    auto qa = q.accessor<double, 2>();
    auto kva = kv.accessor<double, 2>();
    auto xa = xt.accessor<double, 2>();
    auto pre = torch::zeros({N, C}, torch::kFloat64);
    auto pa = pre.accessor<double, 2>();
    for (int64_t n = 0; n < h; ++n) {
      std::vector<double> kmean(d, 0.0);
      for (int64_t j = 0; j < N; ++j)
        for (int64_t i = 0; i < d; ++i) kmean[i] += phi(kva[j][n * d + i], kernel) / static_cast<double>(N);
      for (int64_t a = 0; a < d; ++a)
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j) acc += phi(kva[j][n * d + a], kernel) * kva[j][C + n * d + c];
          r.kv_buffer[b][n][a][c] = s / static_cast<double>(N) * acc;
        }
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> row(N);
        for (int64_t j = 0; j < N; ++j) {
          double qk = 0;
          for (int64_t f = 0; f < d; ++f) qk += phi(qa[i][n * d + f], kernel) * (phi(kva[j][n * d + f], kernel) - kmean[f]);
          row[j] = 1 / static_cast<double>(N) + s / static_cast<double>(N) * qk;
          r.attention[b][n][i][j] = row[j];
        }
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j) acc += row[j] * kva[j][C + n * d + c];
          r.output[b][n][i][c] = acc;
          pa[i][n * d + c] = acc;
        }
      }
    }
    if (with_residual) {
      std::vector<double> mean(C, 0.0);
      for (int64_t l = 0; l < N; ++l)
        for (int64_t c = 0; c < C; ++c) mean[c] += xa[l][c] / static_cast<double>(N);
      auto r0 = m.residual->ptr<torch::nn::Conv1dImpl>(0);
      auto r2 = m.residual->ptr<torch::nn::Conv1dImpl>(2);
      auto hidden = grouped_1x1(mean, r0->weight, r0->bias, h);
      for (auto& v : hidden) v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
      auto weights = grouped_1x1(hidden, r2->weight, r2->bias, h);  // k²C
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t a = 0; a < k; ++a)
          for (int64_t bb = 0; bb < k; ++bb) r.residual_weight[b][c][a][bb] = weights[c * k * k + a * k + bb];
        for (int64_t row = 0; row < H; ++row)
          for (int64_t col = 0; col < W; ++col) {
            double acc = 0;
            for (int64_t a = 0; a < k; ++a)
              for (int64_t bb = 0; bb < k; ++bb) {
                const int64_t rr = row + a - k / 2, cc = col + bb - k / 2;
                if (rr >= 0 && rr < H && cc >= 0 && cc < W) acc += weights[c * k * k + a * k + bb] * kva[rr * W + cc][C + c];
              }
            pa[row * W + col][c] += acc;
          }
      }
    }
    for (int64_t n = 0; n < h; ++n) r.output_gated[b][n] = pre.narrow(1, n * d, d);
    r.final[b] = naive_linear(pre, m.proj->weight, m.proj->bias).t().reshape({C, H, W});
  }
  return r;
}

void expect_matches_naive(const AttentionOptions& options, int64_t B, int64_t H, int64_t W, uint64_t seed,
                          const std::string& label) {
  InlineAttention attn(options);
  test::randomize(*attn, seed);
  attn->to(torch::kFloat64);
  const int64_t C = options.dim(), d = C / options.heads();
  auto x = test::random_input(B, C, H, W, seed + 1);
  ProbeCollector probes(kProbes, 4096, kInternals);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, d, &probes));
  const auto& st = attn->settings();
  const bool with_residual = st.flag("residual");
  auto ref = naive_inline(*attn, x, st.choice("kernel_func"), st.integer("residual_kernel"), with_residual);
  auto check = [&](const char* what, const torch::Tensor& got, const torch::Tensor& want) {
    ASSERT_EQ(got.sizes(), want.sizes()) << label << " " << what;
    const double err = test::max_rel_err(got, want);
    std::printf("  inline naive [%s] %-15s rel err %.3g\n", label.c_str(), what, err);
    EXPECT_LE(err, 1e-10) << label << " " << what;
  };
  check("final", y, ref.final);
  check("output", probes.get(Probe::output), ref.output);
  check("output_gated", probes.get(Probe::output_gated), ref.output_gated);
  check("attention", probes.get(Probe::attention), ref.attention);
  check("kv_buffer", probes.get(Probe::kv_buffer), ref.kv_buffer);
  if (with_residual) check("residual_weight", probes.get_internal("residual_weight"), ref.residual_weight);
  EXPECT_EQ(probes.has_internal("local_residual"), with_residual);
  // The implied weights sum to one per query (they may be negative).
  EXPECT_LE((probes.get(Probe::attention).sum(-1) - 1).abs().max().item<double>(), 1e-12) << label;
}

TEST(InlineNaive, LinearPathEqualsNaiveFormula) {
  expect_matches_naive(AttentionOptions(32, 2), 2, 4, 5, 41, "identity 4x5");
}

TEST(InlineNaive, KernelFunctionsResidualKernelAndNoResidual) {
  expect_matches_naive(AttentionOptions(32, 2).set("kernel_func", "relu"), 2, 5, 3, 43, "relu 5x3");
  expect_matches_naive(AttentionOptions(32, 4).set("kernel_func", "leakyrelu"), 3, 3, 6, 45, "leakyrelu h=4 3x6");
  expect_matches_naive(AttentionOptions(24, 2).set("kernel_func", "exp").set("residual_kernel", 5), 2, 6, 4, 47,
                       "exp k=5 6x4");
  expect_matches_naive(AttentionOptions(32, 2).set("residual", false), 2, 4, 5, 49, "no residual 4x5");
  expect_matches_naive(AttentionOptions(16, 1).set("residual_kernel", 1), 2, 2, 7, 51, "k=1 2x7");
}

TEST(InlineDims, DefaultsRunAtRavltMicroAndDeitDims) {
  torch::NoGradGuard no_grad;
  struct Case {
    int64_t C, heads, H, W;
  };
  for (const auto& c : std::vector<Case>{{16, 1, 16, 24}, {32, 2, 8, 12}, {64, 4, 4, 6}, {128, 4, 2, 3}, {16, 1, 7, 7},
                                          {192, 3, 14, 14}, {192, 3, 10, 16}, {32, 2, 1, 1}}) {
    InlineAttention attn(AttentionOptions(c.C, c.heads));
    test::randomize(*attn, 53, 0.1);
    auto x = test::random_input(2, c.C, c.H, c.W, 9, torch::kFloat32);
    auto y = attn->forward(x, AttentionContext::for_input(x, c.C / c.heads));
    EXPECT_EQ(y.sizes(), x.sizes()) << c.C << " " << c.H << "x" << c.W;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << c.C << " " << c.H << "x" << c.W;
  }
}

}  // namespace
}  // namespace rala

namespace rala {
namespace {

// The official DeiT port (models/inline_deit.py InLineAttention; tests/data/make_deit_port_goldens.py): q, k, v, the
// buffer and the means over all 1 + N tokens, the residual kernel from the mean of all tokens (cls included), the
// dynamic conv on the grid's v only; one qkv Linear.
TEST(InlineDeitGolden, TheClsTokenEntersAsTheOfficialDeitPort) {
  const char* file = "inline_deit_attention.h5";
  auto tokens = golden(file, "input");  // (2, 1 + 64, 64): cls first, then the 8×8 grid
  InlineAttention attn(AttentionOptions(64, 2).prefix_tokens(1).vit_layout(true));
  test::load_state(*attn, file);  // qkv, proj, residual.0, residual.2: all of them
  attn->eval();
  AttentionContext ctx;
  ctx.height = ctx.width = 8;
  ProbeCollector probes({Probe::attention, Probe::output});
  ctx.probes = &probes;
  torch::NoGradGuard no_grad;
  auto y = attn->forward_tokens(tokens, ctx);
  const double dev = golden_dev(y, golden(file, "output"));
  std::printf("  inline DeiT-port golden output max|Δ|/max(1,max|ref|) = %.3g\n", dev);
  EXPECT_LE(dev, 1e-5);
  // The implied (1 + N)² map, mean-value correction included, reproduces the per-head output from v.
  auto v = attn->qkv->forward(tokens).narrow(2, 128, 64).reshape({2, 65, 2, 32}).transpose(1, 2);
  EXPECT_LE(test::max_rel_err(torch::matmul(probes.get(Probe::attention), v), probes.get(Probe::output)), 1e-5);
}

}  // namespace
}  // namespace rala

// EfficientViT LiteMLA (E): golden parity with the official module (7×9, d 32, scales (5,), BN after proj, every probe),
// the linear path vs a naive float64 reference (per-head Σ_j v_j (k_j·q_i)/(Σ_j k_j·q_i + ε), the multi-scale
// aggregation as explicit convolutions, BN by its formula), the official quadratic path (H·W ≤ d) vs ours, BN's
// training-mode statistics, settings, MACs and the harness dimensions.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "analysis/h5_store.h"
#include "attention_variants/litemla.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "litemla_attention.h5";



LitemlaAttention golden_module() {
  LitemlaAttention attn(AttentionOptions(64, 2));  // defaults = the golden's configuration (d 32, scales 5)
  test::load_state(*attn, kGolden);
  attn->eval();
  return attn;
}

TEST(LitemlaGolden, OutputAndEveryProbeMatchOfficialCode) {
  auto attn = golden_module();
  auto x = golden(kGolden, "input");  // (2, 64, 7, 9)
  const std::vector<std::string> internals{"qkv_multiscale", "normalizer", "output_heads", "output_pre_proj"};
  ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention, Probe::normalizer_z},
                        4096, {internals.begin(), internals.end()});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 32, &probes));
  test::expect_golden("output", y, golden(kGolden, "output"));
  for (const auto& name : internals) test::expect_golden(name, probes.get_internal(name), golden(kGolden, "probes/" + name));
  test::expect_golden("kv_buffer", probes.get(Probe::kv_buffer), golden(kGolden, "probes/kv_buffer"));
  // The golden output_heads is channel-major (B, h', d, N); the vocabulary's output is (B, h', N, d).
  auto heads = golden(kGolden, "probes/output_heads");
  test::expect_golden("output (output_heads transposed)", probes.get(Probe::output), heads.transpose(-1, -2));
  EXPECT_TRUE(torch::equal(probes.get(Probe::output_gated), probes.get(Probe::output)));
  auto normalizer = golden(kGolden, "probes/normalizer");
  test::expect_golden("normalizer_z (1/(normalizer + 1e-15))", probes.get(Probe::normalizer_z), 1.0 / (normalizer + 1e-15));
  // The normalised ReLU map applied to the golden's v (per head, interleaved [q | k | v]) gives the golden output.
  auto v = golden(kGolden, "probes/qkv_multiscale").reshape({2, 4, 96, 63}).narrow(2, 64, 32);  // (B, h', d, N)
  test::expect_golden("attention·v", torch::matmul(probes.get(Probe::attention), v.transpose(-1, -2)), heads.transpose(-1, -2));
}

TEST(LitemlaGolden, SettingsFromTheStateDictShapes) {
  h5::File f(test::data_path(kGolden), h5::Mode::read);
  StateShapes shapes;
  for (const auto& key : f.list("state_dict")) shapes[key] = f.shape("state_dict/" + key);
  EXPECT_EQ(settings_from_state_shapes(Variant::litemla, shapes), (std::vector<SettingPair>{{"scales", "5"}}));
  for (const std::string scales : {"3,7", "none", "3,5,7,9"}) {
    LitemlaAttention attn(AttentionOptions(32, 2).set("scales", scales));
    StateShapes own;
    for (const auto& p : attn->named_parameters()) own[p.key()] = p.value().sizes().vec();
    for (const auto& b : attn->named_buffers()) own[b.key()] = b.value().sizes().vec();
    EXPECT_EQ(settings_from_state_shapes(Variant::litemla, own), (std::vector<SettingPair>{{"scales", scales}}));
  }
}

// ------------------------------------------------------------------------------------------------
// Naive float64 reference
// ------------------------------------------------------------------------------------------------

struct LitemlaNaive {
  torch::Tensor final;       ///< (B, C, H, W)
  torch::Tensor multiscale;  ///< (B, 3hd(1+S), H, W)
  torch::Tensor kv;          ///< (B, h', d+1, d)
  torch::Tensor output;      ///< (B, h', N, d)
  torch::Tensor attention;   ///< (B, h', N, N)
  torch::Tensor normalizer;  ///< (B, h', N)
};

/// k×k depthwise conv with zero padding k/2, no bias, by definition. x (B, Ch, H, W), w (Ch, 1, k, k).
torch::Tensor naive_depthwise(const torch::Tensor& x, const torch::Tensor& w) {
  const int64_t B = x.size(0), Ch = x.size(1), H = x.size(2), W = x.size(3), k = w.size(2), pad = k / 2;
  auto y = torch::zeros_like(x);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < Ch; ++c)
      for (int64_t r = 0; r < H; ++r)
        for (int64_t col = 0; col < W; ++col) {
          double s = 0;
          for (int64_t u = 0; u < k; ++u)
            for (int64_t v = 0; v < k; ++v) {
              const int64_t sr = r + u - pad, sc = col + v - pad;
              if (sr >= 0 && sr < H && sc >= 0 && sc < W) s += wa[c][0][u][v] * xa[b][c][sr][sc];
            }
          ya[b][c][r][col] = s;
        }
  return y;
}

/// 1×1 conv in `groups` groups by definition: output channel o reads input channels [g·I, (g+1)·I) of its group
/// g = o / (O/groups), I = in/groups. x (B, in, H, W), w (O, I, 1, 1).
torch::Tensor naive_grouped_1x1(const torch::Tensor& x, const torch::Tensor& w, int64_t groups) {
  const int64_t B = x.size(0), O = w.size(0), I = w.size(1), H = x.size(2), W = x.size(3), per_group = O / groups;
  auto y = torch::zeros({B, O, H, W}, torch::kFloat64);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t o = 0; o < O; ++o) {
      const int64_t g = o / per_group;
      for (int64_t r = 0; r < H; ++r)
        for (int64_t c = 0; c < W; ++c) {
          double s = 0;
          for (int64_t i = 0; i < I; ++i) s += wa[o][i][0][0] * xa[b][g * I + i][r][c];
          ya[b][o][r][c] = s;
        }
    }
  return y;
}

LitemlaNaive naive_litemla(LitemlaAttentionImpl& m, const torch::Tensor& x /* (B, C, H, W) float64 */) {
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  const int64_t hp = m.total_heads();
  const double eps = m.eps();
  auto p = [&](const std::string& name) { return test::param(m, name).to(torch::kFloat64).contiguous(); };
  auto qkv = naive_grouped_1x1(x, p("qkv.conv.weight"), 1);  // (B, 3hd, H, W)
  std::vector<torch::Tensor> parts{qkv};
  for (size_t i = 0; i < m.scales().size(); ++i) {
    const std::string prefix = "aggreg." + std::to_string(i);
    auto dw = naive_depthwise(qkv, p(prefix + ".0.weight"));
    parts.push_back(naive_grouped_1x1(dw, p(prefix + ".1.weight"), 3 * h));
  }
  LitemlaNaive r;
  r.multiscale = torch::cat(parts, 1);
  auto ms = r.multiscale.reshape({B, -1, N}).contiguous();
  auto msa = ms.accessor<double, 3>();
  r.kv = torch::zeros({B, hp, d + 1, d}, torch::kFloat64);
  r.output = torch::zeros({B, hp, N, d}, torch::kFloat64);
  r.attention = torch::zeros({B, hp, N, N}, torch::kFloat64);
  r.normalizer = torch::zeros({B, hp, N}, torch::kFloat64);
  auto kva = r.kv.accessor<double, 4>();
  auto oa = r.output.accessor<double, 4>();
  auto aa = r.attention.accessor<double, 4>();
  auto na = r.normalizer.accessor<double, 3>();
  auto relu = [](double t) { return t > 0 ? t : 0.0; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < hp; ++n) {
      // Head n owns channels [3dn, 3dn + 3d) = [q | k | v].
      auto q = [&](int64_t tok, int64_t f) { return relu(msa[b][3 * d * n + f][tok]); };
      auto k = [&](int64_t tok, int64_t f) { return relu(msa[b][3 * d * n + d + f][tok]); };
      auto v = [&](int64_t tok, int64_t f) { return msa[b][3 * d * n + 2 * d + f][tok]; };
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> dots(N);
        double den = 0;
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t f = 0; f < d; ++f) s += k(j, f) * q(i, f);
          dots[j] = s;
          den += s;
        }
        na[b][n][i] = den;
        for (int64_t j = 0; j < N; ++j) aa[b][n][i][j] = dots[j] / (den + eps);
        for (int64_t f = 0; f < d; ++f) {
          double s = 0;
          for (int64_t j = 0; j < N; ++j) s += v(j, f) * dots[j] / (den + eps);
          oa[b][n][i][f] = s;
        }
      }
      for (int64_t c = 0; c < d; ++c) {
        for (int64_t rr = 0; rr < d; ++rr) {
          double s = 0;
          for (int64_t j = 0; j < N; ++j) s += v(j, rr) * k(j, c);
          kva[b][n][rr][c] = s;
        }
        double s = 0;
        for (int64_t j = 0; j < N; ++j) s += k(j, c);
        kva[b][n][d][c] = s;
      }
    }
  // proj: 1×1 conv of the heads (channel n·d + f), then BatchNorm with the running statistics.
  auto o_map = r.output.transpose(2, 3).reshape({B, hp * d, H, W}).contiguous();
  auto y = naive_grouped_1x1(o_map, p("proj.conv.weight"), 1);
  auto buf = m.named_buffers();
  auto mean = buf["proj.norm.running_mean"].to(torch::kFloat64), var = buf["proj.norm.running_var"].to(torch::kFloat64);
  auto gamma = p("proj.norm.weight"), beta = p("proj.norm.bias");
  auto ya = y.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t rr = 0; rr < H; ++rr)
        for (int64_t cc = 0; cc < W; ++cc)
          ya[b][c][rr][cc] = (ya[b][c][rr][cc] - mean[c].item<double>()) /
                                 std::sqrt(var[c].item<double>() + 1e-5) * gamma[c].item<double>() +
                             beta[c].item<double>();
  r.final = y;
  return r;
}

/// A module in float64 with random weights and random BN running statistics, in eval mode.
LitemlaAttention random_module(const AttentionOptions& o, uint64_t seed) {
  LitemlaAttention attn(o);
  test::randomize(*attn, seed);
  attn->to(torch::kFloat64);
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed + 1);
  auto& bn = attn->proj->norm;
  bn->running_mean.copy_(at::normal(0.0, 0.5, bn->running_mean.sizes(), gen, bn->running_mean.options()));
  bn->running_var.copy_(at::rand(bn->running_var.sizes(), gen, bn->running_var.options()) + 0.5);
  attn->eval();
  return attn;
}

struct NaiveCase {
  std::vector<SettingPair> settings;
  int64_t dim, heads, height, width;
};

class LitemlaNaiveTest : public ::testing::TestWithParam<NaiveCase> {};

TEST_P(LitemlaNaiveTest, LinearPathEqualsNaiveFormulas) {
  const auto& c = GetParam();
  AttentionOptions o(c.dim, c.heads);
  for (const auto& s : c.settings) o.set(s.first, s.second);
  auto attn = random_module(o, 21);
  auto x = test::random_input(2, c.dim, c.height, c.width, 7);
  ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention, Probe::normalizer_z},
                        4096, {"qkv_multiscale", "normalizer"});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, c.dim / c.heads, &probes));
  auto ref = naive_litemla(*attn, x);
  const std::string tag = attn->settings().describe() + " C=" + std::to_string(c.dim) + " h=" +
                          std::to_string(c.heads) + " on " + std::to_string(c.height) + "x" + std::to_string(c.width);
  auto check = [&](const char* name, const torch::Tensor& got, const torch::Tensor& want) {
    ASSERT_EQ(got.sizes(), want.sizes()) << name;
    const double e = test::max_rel_err(got, want);
    std::cout << "[litemla naive] " << tag << " " << name << ": rel " << e << "\n";
    EXPECT_LE(e, 1e-10) << name << " " << tag;
  };
  check("final", y, ref.final);
  check("qkv_multiscale", probes.get_internal("qkv_multiscale"), ref.multiscale);
  check("kv_buffer", probes.get(Probe::kv_buffer), ref.kv);
  check("output", probes.get(Probe::output), ref.output);
  check("output_gated", probes.get(Probe::output_gated), ref.output);
  check("attention", probes.get(Probe::attention), ref.attention);
  check("normalizer", probes.get_internal("normalizer"), ref.normalizer);
  check("normalizer_z", probes.get(Probe::normalizer_z), 1.0 / (ref.normalizer + attn->eps()));
}

INSTANTIATE_TEST_SUITE_P(Grids, LitemlaNaiveTest,
                         ::testing::Values(NaiveCase{{}, 32, 2, 5, 7},                      // the default scale 5
                                           NaiveCase{{{"scales", "3,5"}}, 32, 2, 6, 5},     // two scales: h' = 3h
                                           NaiveCase{{{"scales", "none"}, {"eps", "0.01"}}, 24, 3, 4, 7},
                                           NaiveCase{{{"scales", "7"}}, 16, 1, 3, 2}),      // kernel > grid
                         [](const auto& info) { return "case" + std::to_string(info.index); });

/// The official relu_quadratic_att, written with the same torch operations as the official code: att = kᵀq (keys ×
/// queries), normalised over the keys, out = v · att. qkv: (B, 3hd(1+S), H, W) → (B, h', d, N).
torch::Tensor official_quadratic(const torch::Tensor& qkv, int64_t d, double eps) {
  const int64_t B = qkv.size(0), N = qkv.size(2) * qkv.size(3);
  auto t = qkv.reshape({B, -1, 3 * d, N});
  auto q = torch::relu(t.narrow(2, 0, d)), k = torch::relu(t.narrow(2, d, d)), v = t.narrow(2, 2 * d, d);
  auto att = torch::matmul(k.transpose(-1, -2), q);  // (B, h', N, N)
  att = att / (att.sum(2, true) + eps);
  return torch::matmul(v, att);  // (B, h', d, N)
}

TEST(LitemlaQuadratic, OfficialQuadraticPathIsTheSameFunction) {
  // H·W ≤ d: the official module would take relu_quadratic_att; ours always runs the linear form.
  {
    auto attn = random_module(AttentionOptions(64, 2).set("scales", "3,5"), 4);
    for (auto grid : std::vector<std::pair<int64_t, int64_t>>{{4, 5}, {1, 1}, {2, 16}}) {
      auto x = test::random_input(2, 64, grid.first, grid.second, 8);
      ProbeCollector probes({}, 4096, {"qkv_multiscale", "output_heads"});
      torch::NoGradGuard no_grad;
      attn->forward(x, AttentionContext::for_input(x, 32, &probes));
      auto quadratic = official_quadratic(probes.get_internal("qkv_multiscale"), 32, attn->eps());
      const double e = test::max_rel_err(probes.get_internal("output_heads"), quadratic);
      std::cout << "[litemla quadratic] float64 " << grid.first << "x" << grid.second << ": rel " << e << "\n";
      EXPECT_LE(e, 1e-12);
    }
  }
  // In fp32 with the golden weights on a 4×8 grid (N = 32 = d, the official switch point).
  auto attn = golden_module();
  auto x = golden(kGolden, "input").narrow(2, 0, 4).narrow(3, 0, 8);
  ProbeCollector probes({}, 4096, {"qkv_multiscale", "output_heads"});
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, 32, &probes));
  auto quadratic = official_quadratic(probes.get_internal("qkv_multiscale"), 32, 1e-15);
  test::expect_golden("quadratic path 4x8 fp32", probes.get_internal("output_heads"), quadratic);
}

TEST(LitemlaNorm, TrainingModeUsesBatchStatisticsAndUpdatesRunningStats) {
  auto attn = random_module(AttentionOptions(32, 2), 6);
  attn->train();
  auto& bn = attn->proj->norm;
  auto mean0 = bn->running_mean.clone(), var0 = bn->running_var.clone();
  auto x = test::random_input(3, 32, 4, 5, 2);
  ProbeCollector probes({}, 4096, {"output_pre_proj"});
  torch::Tensor y, pre;
  {
    torch::NoGradGuard no_grad;
    y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
    pre = attn->proj->conv->forward(probes.get_internal("output_pre_proj"));  // (B, C, H, W) before BN
  }
  auto mean = pre.mean({0, 2, 3}), var_biased = pre.var({0, 2, 3}, /*unbiased=*/false);
  auto var_unbiased = pre.var({0, 2, 3}, /*unbiased=*/true);
  EXPECT_LE(test::max_rel_err(bn->running_mean, 0.9 * mean0 + 0.1 * mean), 1e-12);
  EXPECT_LE(test::max_rel_err(bn->running_var, 0.9 * var0 + 0.1 * var_unbiased), 1e-12);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1);
  auto expected = (pre - mean.view({1, -1, 1, 1})) / (var_biased.view({1, -1, 1, 1}) + 1e-5).sqrt() *
                      bn->weight.detach().view({1, -1, 1, 1}) +
                  bn->bias.detach().view({1, -1, 1, 1});
  EXPECT_LE(test::max_rel_err(y, expected), 1e-12);
}

TEST(LitemlaSettings, ScalesShapeTheModuleAndBadValuesGiveOneLineErrors) {
  LitemlaAttention none(AttentionOptions(32, 2).set("scales", "none"));
  EXPECT_EQ(none->total_heads(), 2);
  EXPECT_EQ(none->aggreg->size(), 0u);
  EXPECT_EQ(test::param(*none, "proj.conv.weight").sizes(), (std::vector<int64_t>{32, 32, 1, 1}));
  LitemlaAttention three(AttentionOptions(32, 2).set("scales", "3,5,7"));
  EXPECT_EQ(three->total_heads(), 8);
  EXPECT_EQ(test::param(*three, "aggreg.2.0.weight").sizes(), (std::vector<int64_t>{96, 1, 7, 7}));
  EXPECT_EQ(test::param(*three, "aggreg.2.1.weight").sizes(), (std::vector<int64_t>{96, 16, 1, 1}));
  EXPECT_EQ(test::param(*three, "proj.conv.weight").sizes(), (std::vector<int64_t>{32, 128, 1, 1}));
  EXPECT_EQ(LitemlaAttention(AttentionOptions(32, 2))->settings().describe(), "scales=5 eps=1e-15");

  auto msg = test::error_message([] { LitemlaAttention(AttentionOptions(32, 2).set("scales", "4")); });
  EXPECT_NE(msg.find("setting 'scales' of attention variant litemla expects one of: none, 3, 5, 7, 9, 3,5,"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("got '4'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  msg = test::error_message([] { LitemlaAttention(AttentionOptions(32, 2).set("scales", "5,3")); });
  EXPECT_NE(msg.find("got '5,3'"), std::string::npos) << msg;
  msg = test::error_message([] { LitemlaAttention(AttentionOptions(32, 2).set("eps", -1.0)); });
  EXPECT_NE(msg.find("setting 'eps' of attention variant litemla expects a finite number in [0, 1], got '-1'"),
            std::string::npos)
      << msg;
}

TEST(LitemlaMacs, AnalyticCount) {
  LitemlaAttention attn(AttentionOptions(64, 2));
  const auto m = attn->macs(7, 9);
  const int64_t N = 63;
  EXPECT_EQ(m.projections, 192 * 64 * N + (25 + 32) * 192 * N + 128 * 64 * N);  // qkv, dw 5×5 + grouped 1×1, proj
  EXPECT_EQ(m.matmuls, 4 * 2 * 33 * 32 * N);                                    // [v;1]kᵀ and vk·q for 4 heads
  LitemlaAttention none(AttentionOptions(64, 2).set("scales", "none"));
  EXPECT_EQ(none->macs(7, 9).projections, 192 * 64 * N + 64 * 64 * N);
  EXPECT_EQ(none->macs(7, 9).matmuls, 2 * 2 * 33 * 32 * N);
}

TEST(LitemlaDims, DefaultSettingsRunAtRavltMicroAndDeitDims) {
  struct Dims {
    int64_t C, heads, H, W;
  };
  for (const auto& s : std::vector<Dims>{{16, 1, 16, 24}, {32, 2, 8, 12}, {64, 4, 4, 6}, {128, 4, 2, 3},
                                         {192, 3, 14, 14}, {192, 3, 10, 16}, {32, 2, 1, 1}}) {
    LitemlaAttention attn(AttentionOptions(s.C, s.heads));
    attn->eval();
    auto x = test::random_input(2, s.C, s.H, s.W, 1, torch::kFloat32);
    ProbeCollector probes({Probe::kv_buffer, Probe::output});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, s.C / s.heads, &probes));
    const int64_t d = s.C / s.heads;
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << s.C << " " << s.H << "x" << s.W;
    EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{2, 2 * s.heads, d + 1, d}));
    EXPECT_EQ(probes.get(Probe::output).sizes(), (std::vector<int64_t>{2, 2 * s.heads, s.H * s.W, d}));
  }
}

}  // namespace
}  // namespace rala

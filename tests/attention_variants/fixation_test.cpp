// Feature Fixation (X), a reconstruction without official code: no golden exists. The O(N) path is held to the naive
// O(N²) float64 formula of fixation.h (neighbourhood mean / conv by definition, the ratio Linear by definition).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "attention_variants/fixation.h"
#include "attention_variants/linear.h"
#include "attention_variants/registry.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using torch::Tensor;


/// max relative error of a against b, recorded as a test property (--gtest_output=xml shows it) and held to tol.
void expect_rel(const std::string& what, const Tensor& a, const Tensor& b, double tol) {
  const double e = test::max_rel_err(a, b);
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", e);
  ::testing::Test::RecordProperty(what, text);
  EXPECT_LE(e, tol) << what;
}

struct Case {
  std::vector<SettingPair> settings;
  std::string neighbourhood = "mean";
  int64_t size = 3;
  std::string activation = "sigmoid";
  bool fixation = true, relu = false, mean = false;
};

/// The neighbourhood-associated ratio input a (B, 3C, H, W) from the projection (B, 3C, N), by definition.
Tensor neighbourhood_def(FixationAttentionImpl& m, const Tensor& proj, const Case& cs, int64_t H, int64_t W) {
  const int64_t B = proj.size(0), C3 = proj.size(1), k = cs.size, r = k / 2;
  auto p = proj.reshape({B, C3, H, W}).contiguous();
  if (cs.neighbourhood == "off") return p;
  auto out = torch::empty_like(p);
  auto pa = p.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  const bool conv = cs.neighbourhood == "conv";
  Tensor w, bias;
  if (conv) {
    w = m.neighbourhood_conv->weight.detach().to(torch::kFloat64).contiguous();
    bias = m.neighbourhood_conv->bias.detach().to(torch::kFloat64).contiguous();
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C3; ++c)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          double s = conv ? bias[c].item<double>() : 0.0;
          int64_t count = 0;
          for (int64_t a = -r; a <= r; ++a)
            for (int64_t e = -r; e <= r; ++e) {
              const int64_t ii = i + a, jj = j + e;
              if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;  // zero padding / not counted
              s += (conv ? w[c][0][a + r][e + r].item<double>() : 1.0) * pa[b][c][ii][jj];
              ++count;
            }
          oa[b][c][i][j] = conv ? s : s / count;
        }
  return out;
}

struct FixationReference {
  test::NaiveResult base;
  Tensor rq, rk, fq, fk, kv, z;  // (B, h, N, d) ×4, (B, h, d, d), (B, h, N)
};

FixationReference naive_fixation(FixationAttentionImpl& m, const Tensor& x, const Case& cs) {
  const double eps = 1e-6;
  const int64_t B = x.size(0), C = m.dim(), h = m.heads(), d = C / h, H = x.size(2), W = x.size(3), N = H * W;
  FixationReference r;
  r.rq = torch::ones({B, h, N, d}, torch::kFloat64);
  r.rk = torch::ones({B, h, N, d}, torch::kFloat64);
  r.fq = torch::zeros({B, h, N, d}, torch::kFloat64);
  r.fk = torch::zeros_like(r.fq);
  r.kv = torch::zeros({B, h, d, d}, torch::kFloat64);
  r.z = torch::zeros({B, h, N}, torch::kFloat64);
  if (cs.fixation) {
    auto proj = test::naive_conv1x1(x, m.qkv_projection()->weight.detach(), m.qkv_projection()->bias.detach());
    auto a = neighbourhood_def(m, proj, cs, H, W).reshape({B, 3 * C, N});
    auto aa = a.accessor<double, 3>();
    auto wr = m.ratio->weight.detach().to(torch::kFloat64).contiguous();  // (2d, 3d)
    auto br = m.ratio->bias.detach().to(torch::kFloat64).contiguous();
    auto wa = wr.accessor<double, 2>();
    auto ba = br.accessor<double, 1>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t n = 0; n < h; ++n)
        for (int64_t i = 0; i < N; ++i) {
          std::vector<double> in(3 * d), rho(2 * d);
          for (int64_t part = 0; part < 3; ++part)
            for (int64_t c = 0; c < d; ++c) in[part * d + c] = aa[b][part * C + n * d + c][i];
          for (int64_t o = 0; o < 2 * d; ++o) {
            double s = ba[o];
            for (int64_t c = 0; c < 3 * d; ++c) s += wa[o][c] * in[c];
            rho[o] = s;
          }
          for (int64_t half = 0; half < 2; ++half) {
            auto target = half == 0 ? r.rq : r.rk;
            double mx = -INFINITY, sum = 0;
            for (int64_t c = 0; c < d; ++c) mx = std::max(mx, rho[half * d + c]);
            for (int64_t c = 0; c < d; ++c) sum += std::exp(rho[half * d + c] - mx);
            for (int64_t c = 0; c < d; ++c) {
              const double v = rho[half * d + c];
              double ratio = 1.0 / (1.0 + std::exp(-v));
              if (cs.activation == "2sigmoid") ratio *= 2.0;
              if (cs.activation == "softmax") ratio = d * std::exp(v - mx) / sum;
              target[b][n][i][c] = ratio;
            }
          }
        }
  }
  auto phi = [&](double v) { return cs.relu ? (v > 0 ? v : 0.0) : (v > 0 ? v + 1.0 : std::exp(v)); };
  const double scale = cs.mean ? 1.0 / N : 1.0;
  r.base = test::naive_attention(m, x, [&](int64_t b, int64_t n, const Tensor& proj) {
    auto q = test::head_tokens(proj, b, 0, C, h, n) * r.rq[b][n];  // (N, d)
    auto k = test::head_tokens(proj, b, C, C, h, n) * r.rk[b][n];
    auto v = test::head_tokens(proj, b, 2 * C, C, h, n);
    auto fq = q.clone(), fk = k.clone();
    for (auto* t : {&fq, &fk}) {
      auto* p = t->data_ptr<double>();
      for (int64_t e = 0; e < t->numel(); ++e) p[e] = phi(p[e]);
    }
    r.fq[b][n] = fq;
    r.fk[b][n] = fk;
    auto fqa = fq.accessor<double, 2>(), fka = fk.accessor<double, 2>(), va = v.accessor<double, 2>();
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto Aa = A.accessor<double, 2>();
    for (int64_t i = 0; i < N; ++i) {
      std::vector<double> num(N);
      double den = 0;
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t c = 0; c < d; ++c) s += fqa[i][c] * fka[j][c];
        den += (num[j] = s * scale);
      }
      for (int64_t j = 0; j < N; ++j) Aa[i][j] = num[j] / (den + eps);
      r.z[b][n][i] = 1.0 / (den + eps);
    }
    for (int64_t e = 0; e < d; ++e)
      for (int64_t c = 0; c < d; ++c) {
        double s = 0;
        for (int64_t j = 0; j < N; ++j) s += fka[j][e] * va[j][c];
        r.kv[b][n][e][c] = s * scale;
      }
    return A;
  });
  return r;
}

TEST(FixationNaive, LinearPathEqualsNaiveQuadraticFormula) {
  const std::vector<Case> cases = {
      {{}},  // defaults: 3×3 mean neighbourhood, sigmoid, 1+elu, sum
      {{{"neighbourhood", "off"}, {"ratio_activation", "2sigmoid"}, {"phi", "relu"}, {"normalizer", "mean"}},
       "off", 3, "2sigmoid", true, true, true},
      {{{"neighbourhood", "conv"}, {"neighbourhood_size", "5"}, {"ratio_activation", "softmax"}}, "conv", 5, "softmax"},
      {{{"neighbourhood_size", "5"}}, "mean", 5},
      {{{"fixation", "0"}}, "mean", 3, "sigmoid", false},
  };
  const int64_t C = 16, h = 2, d = 8, H = 5, W = 4;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    SCOPED_TRACE("case " + std::to_string(ci));
    const auto& cs = cases[ci];
    FixationAttention attn(AttentionOptions(C, h).settings(cs.settings));
    test::randomize(*attn, 31 + ci);
    attn->to(torch::kFloat64);
    auto x = test::random_input(2, C, H, W, 7 + ci);
    ProbeCollector probes({Probe::kv_buffer, Probe::output, Probe::output_gated, Probe::attention, Probe::normalizer_z,
                           Probe::feature_q, Probe::feature_k},
                          4096, {"ratio_q", "ratio_k"});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, d, &probes));
    auto ref = naive_fixation(*attn, x, cs);
    expect_rel("case" + std::to_string(ci) + "_y", y, ref.base.final, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_output", probes.get(Probe::output), ref.base.output, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_output_gated", probes.get(Probe::output_gated), ref.base.output, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_attention", probes.get(Probe::attention), ref.base.attention, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_kv_buffer", probes.get(Probe::kv_buffer), ref.kv, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_normalizer_z", probes.get(Probe::normalizer_z), ref.z, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_feature_q", probes.get(Probe::feature_q), ref.fq, 1e-10);
    expect_rel("case" + std::to_string(ci) + "_feature_k", probes.get(Probe::feature_k), ref.fk, 1e-10);
    EXPECT_EQ(probes.has_internal("ratio_q"), cs.fixation);
    if (cs.fixation) {
      expect_rel("case" + std::to_string(ci) + "_ratio_q", probes.get_internal("ratio_q"), ref.rq, 1e-10);
      expect_rel("case" + std::to_string(ci) + "_ratio_k", probes.get_internal("ratio_k"), ref.rk, 1e-10);
    }
  }
}

TEST(FixationSettings, FixationOffIsLinearAttentionBitForBit) {
  FixationAttention fix(AttentionOptions(32, 2).set("fixation", false));
  LinearAttention lin(AttentionOptions(32, 2));
  test::randomize(*lin, 5);
  {
    torch::NoGradGuard no_grad;
    auto src = lin->named_parameters();
    for (auto& p : fix->named_parameters()) p.value().copy_(src[p.key()]);
    EXPECT_EQ(fix->named_parameters().size(), src.size());
  }
  auto x = test::random_input(2, 32, 5, 6, 4, torch::kFloat32);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(fix->forward(x, AttentionContext::for_input(x, 16)),
                           lin->forward(x, AttentionContext::for_input(x, 16))));
}

TEST(FixationSettings, ParametersAndMacs) {
  FixationAttention a(AttentionOptions(32, 2));
  EXPECT_EQ(a->ratio->weight.sizes(), (std::vector<int64_t>{32, 48}));  // (2d, 3d)
  EXPECT_TRUE(a->neighbourhood_conv.is_empty());
  FixationAttention conv(AttentionOptions(32, 2).set("neighbourhood", "conv").set("neighbourhood_size", 5));
  EXPECT_EQ(conv->neighbourhood_conv->weight.sizes(), (std::vector<int64_t>{96, 1, 5, 5}));
  const int64_t N = 5 * 6, C = 32, d = 16;
  auto m = a->macs(5, 6);
  EXPECT_EQ(m.projections, 3 * C * C * N + C * C * N + 6 * d * C * N);
  EXPECT_EQ(m.matmuls, 2 * N * d * C + N * C);
  EXPECT_EQ(conv->macs(5, 6).projections, m.projections + 25 * 3 * C * N);
  EXPECT_EQ(FixationAttention(AttentionOptions(32, 2).set("fixation", false))->macs(5, 6).projections,
            4 * C * C * N);
}

TEST(FixationGradients, ConvNeighbourhoodReachesEveryParameter) {
  for (const char* act : {"sigmoid", "2sigmoid", "softmax"}) {
    FixationAttention attn(AttentionOptions(32, 2).set("neighbourhood", "conv").set("ratio_activation", act));
    test::randomize(*attn, 2, 0.2);
    auto x = test::random_input(2, 32, 5, 6, 3, torch::kFloat32).requires_grad_(true);
    auto y = attn->forward(x, AttentionContext::for_input(x, 16));
    (y * y).sum().backward();
    for (const auto& p : attn->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << act << " " << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << act << " " << p.key();
    }
  }
}

TEST(FixationSettings, BadSettingsGiveOneLineErrors) {
  const std::vector<std::pair<std::pair<std::string, std::string>, std::string>> cases = {
      {{"neighbourhood", "avg"},
       "setting 'neighbourhood' of attention variant fixation expects one of: mean, conv, off"},
      {{"neighbourhood_size", "2"},
       "setting 'neighbourhood_size' of attention variant fixation expects an odd integer in [1, 31], got '2'"},
      {{"ratio_activation", "tanh"}, "expects one of: sigmoid, 2sigmoid, softmax, got 'tanh'"},
      {{"phi", "elu"}, "setting 'phi' of attention variant fixation expects one of: 1+elu, relu, got 'elu'"},
      {{"normalizer", "max"}, "setting 'normalizer' of attention variant fixation expects one of: sum, mean"},
      {{"fixation", "maybe"}, "setting 'fixation' of attention variant fixation expects a boolean"},
      {{"temporal", "1"}, "unknown setting 'temporal' for attention variant fixation"},
  };
  for (const auto& c : cases) {
    const auto& kv = c.first;
    const auto& text = c.second;
    auto msg = test::error_message(
        [&] { make_attention(Variant::fixation, AttentionOptions(32, 2).set(kv.first, kv.second)); });
    EXPECT_NE(msg.find(text), std::string::npos) << "message: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;
  }
}

void expect_runs(int64_t C, int64_t h, int64_t H, int64_t W) {
  auto attn = make_attention(Variant::fixation, AttentionOptions(C, h));
  auto x = test::random_input(2, C, H, W, 1, torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, C / h));
  EXPECT_EQ(y.sizes(), x.sizes()) << C << "/" << h << " " << H << "x" << W;
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << C << "/" << h << " " << H << "x" << W;
}

TEST(FixationDims, RavltMicroAndDeitDimsAnyGrid) {
  const std::vector<std::pair<int64_t, int64_t>> dims = {{16, 1}, {32, 2}, {64, 4}, {128, 4}};
  for (size_t s = 0; s < dims.size(); ++s) {
    const int64_t g = 16 >> s;
    expect_runs(dims[s].first, dims[s].second, g, g);
    expect_runs(dims[s].first, dims[s].second, 3, 7);
    expect_runs(dims[s].first, dims[s].second, 1, 1);
  }
  expect_runs(192, 3, 14, 14);
  expect_runs(192, 3, 10, 16);
}

}  // namespace
}  // namespace rala

// Hedgehog (H): golden parity with lolcats' feature maps, quadratic/linear attention, softmax teacher and mimicry
// losses; the O(N) layer against the dense float64 φ(q_i)·φ(k_j) map written out; settings; distillation mode.
#include <gtest/gtest.h>

#include <cmath>

#include "attention_variants/hedgehog.h"
#include "attention_variants/softmax.h"
#include "models/checkpoint.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "hedgehog_lolcats.h5";


/// |Δ| ≤ 1e-5 · max(1, max|ref|).
void expect_golden(const torch::Tensor& got, const std::string& dataset) {
  auto ref = golden(kGolden, dataset);
  ASSERT_EQ(got.sizes(), ref.sizes()) << dataset;
  const double err = test::max_abs_err(got.to(torch::kFloat32), ref);
  EXPECT_LE(err, 1e-5 * std::max(1.0, ref.abs().max().item<double>())) << dataset;
  std::printf("  %-16s max |Δ| = %.3g (max |ref| %.3g)\n", dataset.c_str(), err, ref.abs().max().item<double>());
}

HedgehogAttention golden_layer() {
  HedgehogAttention attn(AttentionOptions(64, 2));  // d = 32, f = 0 → 16, as the golden
  EXPECT_EQ(attn->feature_dim(), 16);
  torch::NoGradGuard no_grad;
  attn->feature_map_q->mlp->layer.copy_(golden(kGolden, "state_dict/feature_map_q.mlp.layer"));
  attn->feature_map_k->mlp->layer.copy_(golden(kGolden, "state_dict/feature_map_k.mlp.layer"));
  return attn;
}

TEST(HedgehogGolden, FeatureMapsStateAndLinearOutputMatchLolcats) {
  auto attn = golden_layer();
  auto input = golden(kGolden, "input");  // (3, B, h, N, d)
  torch::NoGradGuard no_grad;
  auto r = attn->attend(input[0], input[1], input[2]);
  expect_golden(r.phi_q, "probes/phi_q");
  expect_golden(r.phi_k, "probes/phi_k");
  expect_golden(r.kv, "probes/kv_buffer");
  expect_golden(r.k_sum, "probes/k_sum");
  expect_golden(r.output, "output");
}

TEST(HedgehogGolden, QuadraticMapTeacherAndLossesMatchLolcats) {
  auto attn = golden_layer();
  auto input = golden(kGolden, "input");
  torch::NoGradGuard no_grad;
  auto m = attn->mimic(input[0], input[1], input[2]);
  expect_golden(m.attention, "probes/attn_linear");
  expect_golden(m.output, "output");
  expect_golden(m.teacher.attention, "probes/attn_softmax");
  expect_golden(m.teacher.output, "probes/softmax_output");
  expect_golden(m.loss.xent, "probes/loss_xent");
  expect_golden(m.loss.mse, "probes/loss_mse");
  // lolcats' distill_alpaca_clean_xent1_mse1000: xent_factor 1, mse_factor 1000 (the golden's attributes)
  expect_golden(m.loss.total(1.0, 1000.0), "probes/loss_total");
  // The free functions are what the method uses.
  auto phi_q = hedgehog_feature_map(input[0], golden(kGolden, "state_dict/feature_map_q.mlp.layer"));
  auto phi_k = hedgehog_feature_map(input[1], golden(kGolden, "state_dict/feature_map_k.mlp.layer"));
  EXPECT_TRUE(torch::equal(hedgehog_quadratic_map(phi_q, phi_k), m.attention));
}

TEST(HedgehogGolden, LayerProbesCarryTheCoreOnTheLayersOwnProjections) {
  // The forward's probes are the core applied to the layer's (RoPE'd) q, k, v.
  auto attn = golden_layer();
  auto x = test::random_input(2, 64, 7, 9, 5, torch::kFloat32);
  ProbeCollector probes({Probe::feature_q, Probe::feature_k, Probe::kv_buffer, Probe::normalizer_z, Probe::output,
                         Probe::attention},
                        4096, {"k_sum", "attn_softmax", "softmax_output"});
  torch::NoGradGuard no_grad;
  auto ctx = AttentionContext::for_input(x, 32, &probes);
  attn->forward(x, ctx);
  auto all = torch::conv2d(x, attn->qkv_projection()->weight, attn->qkv_projection()->bias);
  auto q = theta_shift(split_heads(all, 0, 64, 2), ctx.rope_sin, ctx.rope_cos);
  auto k = theta_shift(split_heads(all, 64, 64, 2), ctx.rope_sin, ctx.rope_cos);
  auto v = split_heads(all, 128, 64, 2);
  auto r = attn->attend(q, k, v);
  auto t = softmax_teacher(q, k, v);
  EXPECT_TRUE(torch::equal(probes.get(Probe::feature_q), r.phi_q));
  EXPECT_TRUE(torch::equal(probes.get(Probe::feature_k), r.phi_k));
  EXPECT_TRUE(torch::equal(probes.get(Probe::kv_buffer), r.kv));
  EXPECT_TRUE(torch::equal(probes.get(Probe::normalizer_z), r.z.squeeze(-1)));
  EXPECT_TRUE(torch::equal(probes.get(Probe::output), r.output));
  EXPECT_TRUE(torch::equal(probes.get_internal("k_sum"), r.k_sum));
  EXPECT_TRUE(torch::equal(probes.get_internal("attn_softmax"), t.attention));
  EXPECT_TRUE(torch::equal(probes.get_internal("softmax_output"), t.output));
  EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{2, 2, 32, 32}));
  // The map A with output = A·v.
  EXPECT_LE(test::max_rel_err(torch::matmul(probes.get(Probe::attention), v), r.output), 1e-5);
}

/// The dense map written out in float64: R = RoPE or identity, φ(x)_c = max(softmax(xW)_c, ε) for c < f and
/// max(softmax(−xW)_{c−f}, ε) after, A_ij = φ(Rq_i)·φ(Rk_j) / (Σ_m φ(Rq_i)·φ(Rk_m) + ε).
test::AttentionFormula hedgehog_formula(HedgehogAttentionImpl& m, int64_t H, int64_t W) {
  auto Wq = m.feature_map_q->mlp->layer.detach().to(torch::kFloat64);
  auto Wk = m.feature_map_k->mlp->layer.detach().to(torch::kFloat64);
  return [C = m.dim(), h = m.heads(), with_rope = m.settings().flag("rope"), eps = m.eps(), f = m.feature_dim(), Wq,
          Wk, H, W](int64_t b, int64_t n, const torch::Tensor& proj) {
    const int64_t d = C / h, N = H * W;
    auto q = test::head_tokens(proj, b, 0, C, h, n), k = test::head_tokens(proj, b, C, C, h, n);  // (N, d)
    if (with_rope) {
      q = test::naive_rope(q, H, W);
      k = test::naive_rope(k, H, W);
    }
    auto phi = [&](const torch::Tensor& x, const torch::Tensor& Wn) {  // x (N, d), Wn (d, f) → (N, 2f)
      auto out = torch::empty({N, 2 * f}, torch::kFloat64);
      auto xa = x.accessor<double, 2>();
      auto wa = Wn.accessor<double, 2>();
      for (int64_t i = 0; i < N; ++i) {
        auto u = torch::empty({f}, torch::kFloat64);
        for (int64_t c = 0; c < f; ++c) {
          double s = 0;
          for (int64_t e = 0; e < d; ++e) s += xa[i][e] * wa[e][c];
          u[c] = s;
        }
        auto pos = test::naive_softmax(u), neg = test::naive_softmax(-u);
        for (int64_t c = 0; c < f; ++c) {
          out[i][c] = std::max(pos[c].item<double>(), eps);
          out[i][f + c] = std::max(neg[c].item<double>(), eps);
        }
      }
      return out;
    };
    auto pq = phi(q, Wq[n]), pk = phi(k, Wk[n]);
    auto qa = pq.accessor<double, 2>(), ka = pk.accessor<double, 2>();
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto aa = A.accessor<double, 2>();
    for (int64_t i = 0; i < N; ++i) {
      double den = 0;
      std::vector<double> dots(N);
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t c = 0; c < 2 * f; ++c) s += qa[i][c] * ka[j][c];
        dots[j] = s;
        den += s;
      }
      for (int64_t j = 0; j < N; ++j) aa[i][j] = dots[j] / (den + eps);
    }
    return A;
  };
}

struct Case {
  const char* name;
  std::vector<std::pair<std::string, std::string>> settings;
};

class HedgehogNaive : public ::testing::TestWithParam<Case> {};

TEST_P(HedgehogNaive, FastPathEqualsDenseFloat64Map) {
  auto o = AttentionOptions(32, 2);
  for (const auto& [k, v] : GetParam().settings) o.set(k, v);
  HedgehogAttention attn(o);
  test::randomize(*attn, 31);
  attn->to(torch::kFloat64);
  const int64_t H = 5, W = 6;  // non-square, N = 30
  auto x = test::random_input(3, 32, H, W, 17);
  ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention, Probe::kv_buffer, Probe::normalizer_z});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = test::naive_attention(*attn, x, hedgehog_formula(*attn, H, W));
  const double e_final = test::max_rel_err(y, ref.final), e_out = test::max_rel_err(probes.get(Probe::output), ref.output),
               e_map = test::max_rel_err(probes.get(Probe::attention), ref.attention);
  std::printf("  %s: final %.3g, output %.3g, attention %.3g\n", GetParam().name, e_final, e_out, e_map);
  EXPECT_LE(e_final, 1e-10);
  EXPECT_LE(e_out, 1e-10);
  EXPECT_LE(e_map, 1e-10);
  // Rows of the map sum to 1 − ε·z_i exactly (a normalised average of v).
  auto rows = probes.get(Probe::attention).sum(-1);
  EXPECT_LE((rows - (1 - attn->eps() * probes.get(Probe::normalizer_z))).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(probes.get(Probe::kv_buffer).size(2), 2 * attn->feature_dim());
}

INSTANTIATE_TEST_SUITE_P(
    Settings, HedgehogNaive,
    ::testing::Values(Case{"Defaults", {}},
                      Case{"NoGateNoRopeNoLepeF5Eps", {{"gate", "0"}, {"rope", "0"}, {"lepe", "0"}, {"feature_dim", "5"},
                                                       {"eps", "1e-3"}}},
                      Case{"WideFeaturesIdentityInit", {{"feature_dim", "24"}, {"feature_init", "identity"}}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(HedgehogSettings, InitsFollowLolcats) {
  torch::manual_seed(3);
  HedgehogAttention kaiming(AttentionOptions(128, 2));  // d = 64, f = 32
  const double bound = std::sqrt(6.0 / (64.0 * 32.0));
  for (auto* fm : {&kaiming->feature_map_q, &kaiming->feature_map_k}) {
    auto w = (*fm)->mlp->layer;
    EXPECT_EQ(w.sizes(), (std::vector<int64_t>{2, 64, 32}));
    EXPECT_LE(w.abs().max().item<double>(), bound);
    EXPECT_GE(w.abs().max().item<double>(), 0.99 * bound);
    EXPECT_NEAR(w.pow(2).mean().item<double>(), bound * bound / 3, 0.1 * bound * bound / 3);  // uniform(−b, b)
  }
  EXPECT_FALSE(torch::equal(kaiming->feature_map_q->mlp->layer, kaiming->feature_map_k->mlp->layer));
  HedgehogAttention identity(AttentionOptions(64, 2).set("feature_init", "identity").set("feature_dim", 8));
  auto eye = torch::eye(32, 8);
  for (int64_t n = 0; n < 2; ++n) {
    EXPECT_TRUE(torch::equal(identity->feature_map_q->mlp->layer[n], eye));
    EXPECT_TRUE(torch::equal(identity->feature_map_k->mlp->layer[n], eye));
  }
  // Official key names and shapes.
  auto params = identity->named_parameters();
  ASSERT_NE(params.find("feature_map_q.mlp.layer"), nullptr);
  ASSERT_NE(params.find("feature_map_k.mlp.layer"), nullptr);
  EXPECT_EQ(params["qkvo.weight"].size(0), 256);
  EXPECT_EQ(HedgehogAttentionImpl::settings_from_state_shapes({{"feature_map_q.mlp.layer", {2, 32, 12}}}),
            (std::vector<SettingPair>{{"feature_dim", "12"}}));
}

TEST(HedgehogSettings, BadValuesGiveOneLineErrors) {
  auto msg = test::error_message([] { HedgehogAttention(AttentionOptions(32, 2).set("feature_dim", "-1")); });
  EXPECT_NE(msg.find("feature_dim"), std::string::npos) << msg;
  msg = test::error_message([] { HedgehogAttention(AttentionOptions(32, 2).set("feature_init", "zeros")); });
  EXPECT_NE(msg.find("feature_init"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expects one of: kaiming, identity"), std::string::npos) << msg;
  msg = test::error_message([] { HedgehogAttention(AttentionOptions(32, 2).set("eps", "-1")); });
  EXPECT_NE(msg.find("eps"), std::string::npos) << msg;
  msg = test::error_message([] { HedgehogAttention(AttentionOptions(12, 2)); });
  EXPECT_NE(msg.find("hedgehog: RoPE needs a head dim divisible by 4, got 6"), std::string::npos) << msg;
  msg = test::error_message([] { HedgehogAttention(AttentionOptions(2, 2).set("rope", false)); });
  EXPECT_NE(msg.find("feature_dim=0 means head_dim/2, which is 0"), std::string::npos) << msg;
  for (const auto& m : {msg}) EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(HedgehogMacs, CountsFeatureMapsStateAndNormaliser) {
  HedgehogAttention attn(AttentionOptions(64, 2));  // d 32, f 16
  const int64_t N = 63, C = 64, f = 16, h = 2, d = 32;
  auto m = attn->macs(7, 9);
  EXPECT_EQ(m.projections, 4 * C * C * N + C * C * N + 25 * C * N + 2 * N * C * f);
  EXPECT_EQ(m.matmuls, 2 * N * h * 2 * f * d + N * h * 2 * f);
}

TEST(HedgehogDistillation, TeacherModeIsTheSoftmaxLayerBitForBitAndLossesReachOnlyTheFeatureMaps) {
  SoftmaxAttention softmax(AttentionOptions(32, 2));
  test::randomize(*softmax, 41, 0.3);
  HedgehogAttention hh(AttentionOptions(32, 2));
  {
    // The softmax layer's weights convert: every softmax key is a hedgehog key; only the feature maps are new.
    std::set<std::string> optional = {"feature_map_q.mlp.layer", "feature_map_k.mlp.layer"};
    load_state_dict(*hh, state_dict(*softmax), optional);
  }
  auto x = test::random_input(2, 32, 5, 6, 9, torch::kFloat32);
  auto ctx = AttentionContext::for_input(x, 16);
  for (auto& p : hh->named_parameters())
    if (p.key().rfind("feature_map_", 0) != 0) p.value().set_requires_grad(false);
  hh->set_distillation(true);
  auto y = hh->forward(x, ctx);
  torch::Tensor ref;
  {
    torch::NoGradGuard no_grad;
    ref = softmax->forward(x, ctx);
  }
  EXPECT_TRUE(torch::equal(y, ref));
  EXPECT_FALSE(y.requires_grad());  // the teacher's output goes on, without grad
  const auto& loss = hh->last_mimicry();
  ASSERT_TRUE(loss.xent.defined());
  EXPECT_GT(loss.xent.item<double>(), 0.0);
  loss.total(1.0, 1000.0).backward();
  for (const auto& p : hh->named_parameters()) {
    if (p.key().rfind("feature_map_", 0) == 0) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    } else {
      EXPECT_FALSE(p.value().grad().defined()) << p.key();
    }
  }
  // Off again: the linear attention runs (a different output).
  hh->set_distillation(false);
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(torch::allclose(hh->forward(x, ctx), ref));
}

TEST(HedgehogDistillation, LossIsZeroXentGapWhenTheStudentMapIsTheTeachers) {
  // xent(A, A) is the entropy of A's rows; MSE of equal outputs is 0.
  auto a = torch::softmax(torch::randn({2, 3, 7, 7}, torch::kFloat64), -1);
  auto y = torch::randn({2, 3, 7, 4}, torch::kFloat64);
  auto l = attention_mimicry_loss(a, a, y, y);
  auto entropy = -(a * a.log()).sum(-1).mean();
  EXPECT_NEAR(l.xent.item<double>(), entropy.item<double>(), 1e-12);
  EXPECT_EQ(l.mse.item<double>(), 0.0);
  EXPECT_NE(test::error_message([&] { attention_mimicry_loss(a, a.narrow(-1, 0, 6), y, y); }).find("shapes differ"),
            std::string::npos);
}

}  // namespace
}  // namespace rala

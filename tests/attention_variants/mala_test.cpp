// MALA (Y): golden parity with the official AddLinearAttention (qhfan/MALA classfication_release/model.py) and every
// probe in the golden, the O(N) path vs the naive float64 O(N²) formula for every switch combination on a non-square
// grid, settings, and the model dims.
#include <gtest/gtest.h>

#include "attention_variants/mala.h"
#include "attention_variants/rope.h"
#include "tests/test_util.h"

namespace rala {
namespace {

using test::golden;

constexpr const char* kGolden = "mala_attention.h5";



TEST(MalaGolden, OutputAndEveryProbeMatchOfficialCode) {
  MalaAttention attn(AttentionOptions(64, 2));
  test::load_state(*attn, kGolden);
  auto x = golden(kGolden, "input");  // (2, 64, 7, 9)
  AttentionContext ctx;
  ctx.height = 7;
  ctx.width = 9;
  ctx.rope_sin = golden(kGolden, "rope_sin");
  ctx.rope_cos = golden(kGolden, "rope_cos");
  ProbeCollector probes({Probe::feature_q, Probe::feature_k, Probe::kv_buffer, Probe::output, Probe::output_gated,
                         Probe::attention, Probe::normalizer_z},
                        4096, {"z", "lepe", "gate_o"});
  ctx.probes = &probes;
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, ctx);
  test::expect_golden("output", y, golden(kGolden, "output"));
  test::expect_golden("phi_q", probes.get(Probe::feature_q), golden(kGolden, "probes/phi_q"));
  test::expect_golden("phi_k", probes.get(Probe::feature_k), golden(kGolden, "probes/phi_k"));
  test::expect_golden("z", probes.get_internal("z"), golden(kGolden, "probes/z"));
  test::expect_golden("kv_buffer", probes.get(Probe::kv_buffer), golden(kGolden, "probes/kv_buffer"));
  test::expect_golden("output_pre_lepe", probes.get(Probe::output), golden(kGolden, "probes/output_pre_lepe"));
  test::expect_golden("lepe", probes.get_internal("lepe"), golden(kGolden, "probes/lepe"));
  test::expect_golden("gate_o", probes.get_internal("gate_o"), golden(kGolden, "probes/gate_o"));
  // z is not a reciprocal normaliser: no normalizer_z. output_gated = (output + lepe) ⊙ o in head layout.
  EXPECT_FALSE(probes.has(Probe::normalizer_z));
  auto gated = (merge_heads(probes.get(Probe::output), 7, 9) + probes.get_internal("lepe")) * probes.get_internal("gate_o");
  EXPECT_LE(test::max_abs_err(probes.get(Probe::output_gated), split_heads(gated, 0, 64, 2)), 1e-5);
  // The implied map reproduces the output, the −z·mean v term included.
  auto v = split_heads(torch::nn::Conv2d(attn->qkv_projection())->forward(x), 128, 64, 2);
  EXPECT_LE(test::max_rel_err(torch::matmul(probes.get(Probe::attention), v), probes.get(Probe::output)), 1e-5);
}

TEST(MalaGolden, OwnRopeTablesGiveTheSameOutput) {
  auto t = rope_tables(32, 7, 9);
  EXPECT_LE(test::max_abs_err(t.sin, golden(kGolden, "rope_sin")), 1e-6);
  EXPECT_LE(test::max_abs_err(t.cos, golden(kGolden, "rope_cos")), 1e-6);
  MalaAttention attn(AttentionOptions(64, 2));
  test::load_state(*attn, kGolden);
  torch::NoGradGuard no_grad;
  auto x = golden(kGolden, "input");
  auto y = attn->forward(x, AttentionContext::for_input(x, 32));
  auto ref = golden(kGolden, "output");
  EXPECT_LE(test::max_abs_err(y, ref), 1e-5 * std::max(1.0, ref.abs().max().item<double>()));
}

/// φq, φk (N, d) of image b, head n, by definition.
std::pair<torch::Tensor, torch::Tensor> naive_features(const torch::Tensor& proj, int64_t b, int64_t n, int64_t C,
                                                       int64_t h) {
  return {test::naive_elu1(test::head_tokens(proj, b, 0, C, h, n)),
          test::naive_elu1(test::head_tokens(proj, b, C, C, h, n))};
}

/// z_i = s φq_i · mean_j φk_j, by definition (loops).
torch::Tensor naive_z(const torch::Tensor& q, const torch::Tensor& k, double s) {
  const int64_t N = q.size(0), d = q.size(1);
  auto z = torch::zeros({N}, torch::kFloat64);
  auto qa = q.accessor<double, 2>(), ka = k.accessor<double, 2>();
  for (int64_t i = 0; i < N; ++i) {
    double acc = 0;
    for (int64_t j = 0; j < N; ++j)
      for (int64_t c = 0; c < d; ++c) acc += qa[i][c] * ka[j][c];
    z[i] = s * acc / static_cast<double>(N);
  }
  return z;
}

/// The naive O(N²) MALA map: A_ij = (s/N)(1 + 1/(z_i + ε)) R(φq_i)·R(φk_j) − z_i/N, R = RoPE (definition) or identity.
test::AttentionFormula mala_formula(const AttentionBase& m, int64_t H, int64_t W) {
  const bool with_rope = m.settings().flag("rope");
  return [C = m.dim(), h = m.heads(), with_rope, H, W](int64_t b, int64_t n, const torch::Tensor& proj) {
    const int64_t d = C / h, N = H * W;
    const double s = 1.0 / std::sqrt(static_cast<double>(d));
    auto [q, k] = naive_features(proj, b, n, C, h);
    auto z = naive_z(q, k, s);
    auto qr = with_rope ? test::naive_rope(q, H, W) : q;
    auto kr = with_rope ? test::naive_rope(k, H, W) : k;
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto aa = A.accessor<double, 2>();
    auto za = z.accessor<double, 1>();
    auto qa = qr.accessor<double, 2>(), ka = kr.accessor<double, 2>();
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += qa[i][c] * ka[j][c];
        aa[i][j] = s / N * (1.0 + 1.0 / (za[i] + 1e-6)) * dot - za[i] / N;
      }
    return A;
  };
}

class MalaSwitches : public ::testing::TestWithParam<int> {};

TEST_P(MalaSwitches, LinearPathEqualsNaiveQuadraticFormula) {
  const int bits = GetParam();
  const bool with_rope = bits & 2;
  auto o = AttentionOptions(32, 2).set("gate", (bits & 1) != 0).set("rope", with_rope).set("lepe", (bits & 4) != 0);
  MalaAttention attn(o);
  test::randomize(*attn, 21 + bits);
  attn->to(torch::kFloat64);
  const int64_t H = 4, W = 7, N = H * W, C = 32, h = 2, d = 16;
  auto x = test::random_input(2, C, H, W, 5);
  ProbeCollector probes({Probe::output, Probe::attention, Probe::kv_buffer, Probe::feature_q, Probe::feature_k,
                         Probe::output_gated},
                        4096, {"z"});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, d, &probes));
  auto ref = test::naive_attention(*attn, x, mala_formula(*attn, H, W));
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  // kv = (s/N) Σ_j R(φk_j)ᵀ v_j and z, by definition.
  auto proj = test::naive_conv1x1(x, attn->qkv_projection()->weight.detach(), attn->qkv_projection()->bias.detach());
  auto kv = torch::zeros({2, h, d, d}, torch::kFloat64), z = torch::zeros({2, h, N}, torch::kFloat64);
  auto phi_q = torch::zeros({2, h, N, d}, torch::kFloat64);
  const double s = 1.0 / std::sqrt(static_cast<double>(d));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t n = 0; n < h; ++n) {
      auto [q, k] = naive_features(proj, b, n, C, h);
      phi_q[b][n] = q;
      z[b][n] = naive_z(q, k, s);
      auto kr = with_rope ? test::naive_rope(k, H, W) : k;
      auto v = test::head_tokens(proj, b, 2 * C, C, h, n);
      for (int64_t j = 0; j < N; ++j) kv[b][n] += torch::outer(kr[j], v[j]) * (s / N);
    }
  EXPECT_LE(test::max_rel_err(probes.get(Probe::kv_buffer), kv), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get_internal("z"), z), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::feature_q), phi_q), 1e-10);
  std::printf("  naive vs fast: output %.3g, attention %.3g, kv_buffer %.3g\n", test::max_rel_err(y, ref.final),
              test::max_rel_err(probes.get(Probe::attention), ref.attention),
              test::max_rel_err(probes.get(Probe::kv_buffer), kv));
  if (!with_rope) {  // rows of the implied map sum to z_i/(z_i + ε)
    auto zz = probes.get_internal("z");
    auto rows = probes.get(Probe::attention).sum(-1);
    EXPECT_LE((rows - zz / (zz + 1e-6)).abs().max().item<double>(), 1e-12);
  }
}

INSTANTIATE_TEST_SUITE_P(AllCombinations, MalaSwitches, ::testing::Range(0, 8), [](const auto& info) {
  const int b = info.param;
  return std::string(b & 1 ? "Gate" : "NoGate") + (b & 2 ? "Rope" : "NoRope") + (b & 4 ? "Lepe" : "NoLepe");
});

TEST(MalaSettings, SwitchesShapeTheParametersAndBadOnesAreNamed) {
  EXPECT_EQ(test::param(*MalaAttention(AttentionOptions(64, 2)), "qkvo.weight").size(0), 256);
  MalaAttention ungated(AttentionOptions(64, 2).set("gate", false));
  EXPECT_EQ(test::param(*ungated, "qkv.weight").size(0), 192);
  EXPECT_EQ(MalaAttention(AttentionOptions(64, 2).set("lepe", false))->named_parameters().find("lepe.weight"), nullptr);
  EXPECT_EQ(MalaAttention(AttentionOptions(64, 2))->settings().describe(), "gate=1 rope=1 lepe=1");
  EXPECT_NE(test::error_message([] { MalaAttention(AttentionOptions(36, 2)); })
                .find("MALA: RoPE needs a head dim divisible by 4, got 18"),
            std::string::npos);
  EXPECT_NO_THROW(MalaAttention(AttentionOptions(36, 2).set("rope", false)));
  EXPECT_NE(test::error_message([] { MalaAttention(AttentionOptions(64, 2).set("rope", "perhaps")); })
                .find("setting 'rope' of attention variant mala expects a boolean"),
            std::string::npos);
  EXPECT_NE(test::error_message([] { MalaAttention(AttentionOptions(64, 2).set("alpha", false)); })
                .find("unknown setting 'alpha' for attention variant mala (mala has: gate, rope, lepe)"),
            std::string::npos);
  // No gate: the gate_o internal is simply absent.
  ProbeCollector probes({Probe::output}, 4096, {"gate_o", "lepe"});
  auto x = test::random_input(1, 64, 3, 4, 1, torch::kFloat32);
  torch::NoGradGuard no_grad;
  ungated->forward(x, AttentionContext::for_input(x, 32, &probes));
  EXPECT_FALSE(probes.has_internal("gate_o"));
  EXPECT_TRUE(probes.has_internal("lepe"));
}

TEST(MalaDims, RunsAtRavltMicroAndDeitDims) {
  struct Case {
    int64_t C, h, H, W;
  };
  for (const auto& c : {Case{16, 1, 16, 24}, Case{32, 2, 8, 12}, Case{64, 4, 4, 6}, Case{128, 4, 2, 3},
                        Case{192, 3, 14, 14}, Case{192, 3, 10, 16}}) {
    MalaAttention attn(AttentionOptions(c.C, c.h));
    test::randomize(*attn, 3, 0.1);
    auto x = test::random_input(2, c.C, c.H, c.W, 4, torch::kFloat32);
    ProbeCollector probes({Probe::output, Probe::attention});
    torch::NoGradGuard no_grad;
    auto y = attn->forward(x, AttentionContext::for_input(x, c.C / c.h, &probes));
    ASSERT_EQ(y.sizes(), x.sizes()) << c.C << " " << c.h;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << c.C;
    auto v = split_heads(torch::nn::Conv2d(attn->qkv_projection())->forward(x), 2 * c.C, c.C, c.h);
    EXPECT_LE(test::max_rel_err(torch::matmul(probes.get(Probe::attention), v), probes.get(Probe::output)), 1e-4)
        << c.C << " " << c.H << "x" << c.W;
  }
}

TEST(MalaMacs, CountsProjectionsAndTokenMixing) {
  const int64_t C = 64, N = 7 * 9, d = 32;
  auto m = MalaAttention(AttentionOptions(C, 2))->macs(7, 9);
  EXPECT_EQ(m.projections, 5 * C * C * N + 25 * C * N);
  EXPECT_EQ(m.matmuls, 2 * N * d * C + 2 * N * C);
  EXPECT_EQ(MalaAttention(AttentionOptions(C, 2).set("gate", false))->macs(7, 9).projections, 4 * C * C * N + 25 * C * N);
}

}  // namespace
}  // namespace rala

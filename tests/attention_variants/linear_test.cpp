// Vanilla linear attention (L): O(N) path vs the naive O(N²) formula for both ε placements; probes.
#include <gtest/gtest.h>

#include <Eigen/SVD>

#include "attention_variants/linear.h"
#include "tests/test_util.h"

namespace rala {
namespace {

/// sum:  A_ij = φq_i·φk_j / (Σ_m φq_i·φk_m + ε)
/// mean: A_ij = (φq_i·φk_j / N) / (Σ_m φq_i·φk_m / N + ε)
test::AttentionFormula linear_formula(const AttentionBase& m, Normalizer normalizer, int64_t N) {
  return [C = m.dim(), h = m.heads(), normalizer, N](int64_t b, int64_t n, const torch::Tensor& proj) {
    auto q = test::naive_elu1(test::head_tokens(proj, b, 0, C, h, n));
    auto k = test::naive_elu1(test::head_tokens(proj, b, C, C, h, n));
    const double scale = normalizer == Normalizer::mean ? 1.0 / static_cast<double>(N) : 1.0;
    auto A = torch::empty({N, N}, torch::kFloat64);
    auto aa = A.accessor<double, 2>();
    for (int64_t i = 0; i < N; ++i) {
      double den = 0;
      for (int64_t m = 0; m < N; ++m) den += (q[i] * k[m]).sum().item<double>() * scale;
      for (int64_t j = 0; j < N; ++j) aa[i][j] = (q[i] * k[j]).sum().item<double>() * scale / (den + 1e-6);
    }
    return A;
  };
}

class LinearNormalizers : public ::testing::TestWithParam<Normalizer> {};

TEST_P(LinearNormalizers, LinearPathEqualsNaiveQuadraticFormula) {
  auto o = AttentionOptions(48, 3).set("normalizer", normalizer_name(GetParam()));
  LinearAttention attn(o);
  test::randomize(*attn, 9);
  attn->to(torch::kFloat64);
  const int64_t H = 6, W = 5;
  auto x = test::random_input(2, 48, H, W, 2);
  ProbeCollector probes({Probe::output, Probe::output_gated, Probe::attention, Probe::kv_buffer,
                          Probe::normalizer_z});
  torch::NoGradGuard no_grad;
  auto y = attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto ref = test::naive_attention(*attn, x, linear_formula(*attn, GetParam(), H * W));
  EXPECT_LE(test::max_rel_err(y, ref.final), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::output), ref.output), 1e-10);
  EXPECT_LE(test::max_rel_err(probes.get(Probe::attention), ref.attention), 1e-10);
  // No gate and no positional term: the gated output is the output.
  EXPECT_TRUE(torch::equal(probes.get(Probe::output_gated), probes.get(Probe::output)));
  // Rows sum to 1 but for the ε in the denominator: Σ_j A_ij = den_i/(den_i + ε) = 1 − ε·z_i exactly.
  auto rows = probes.get(Probe::attention).sum(-1);
  EXPECT_LE((rows - (1 - 1e-6 * probes.get(Probe::normalizer_z))).abs().max().item<double>(), 1e-12);
  EXPECT_LE((rows - 1).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(probes.get(Probe::kv_buffer).sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
}

INSTANTIATE_TEST_SUITE_P(Both, LinearNormalizers, ::testing::Values(Normalizer::sum, Normalizer::mean),
                         [](const auto& info) { return std::string(normalizer_name(info.param)); });

TEST(LinearAttention, KvBufferIsSumOfOuterProducts) {
  // kv = Σ_j φ(k_j)ᵀ v_j for the Katharopoulos convention: rank ≤ min(N, d) — with N = 3 < d = 16 it is at most 3.
  LinearAttention attn(AttentionOptions(16, 1));
  test::randomize(*attn, 1);
  attn->to(torch::kFloat64);
  auto x = test::random_input(1, 16, 1, 3, 8);
  ProbeCollector probes({Probe::kv_buffer});
  torch::NoGradGuard no_grad;
  attn->forward(x, AttentionContext::for_input(x, 16, &probes));
  auto kv = probes.get(Probe::kv_buffer)[0][0].contiguous();
  Eigen::MatrixXd m = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
      kv.data_ptr<double>(), kv.size(0), kv.size(1));
  Eigen::VectorXd sv = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues();  // dense oracle
  EXPECT_GT(sv[2], 1e-8 * sv[0]);
  EXPECT_LT(sv[3], 1e-12 * sv[0]);
}

}  // namespace
}  // namespace rala

// Spectra and rank metrics against constructed matrices U·diag(σ)·Vᵀ (known σ), a dense oracle (Eigen's JacobiSVD),
// and closed forms (identity, rank-r products).
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <limits>

#include <ATen/Parallel.h>

#include "analysis/rank_metrics.h"
#include "analysis/spectrum.h"

namespace rala {
namespace {

Eigen::MatrixXd random_orthogonal(int64_t n, int64_t k, unsigned seed) {
  std::srand(seed);
  Eigen::MatrixXd g = Eigen::MatrixXd::Random(n, k);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return qr.householderQ() * Eigen::MatrixXd::Identity(n, k);  // n×k with orthonormal columns
}

torch::Tensor to_tensor(const Eigen::MatrixXd& m) {
  auto t = torch::empty({m.rows(), m.cols()}, torch::kFloat64);
  for (int64_t i = 0; i < m.rows(); ++i)
    for (int64_t j = 0; j < m.cols(); ++j) t[i][j] = m(i, j);
  return t;
}

/// U·diag(σ)·Vᵀ with σ log-spaced from 1 down to `smallest`.
std::pair<torch::Tensor, std::vector<double>> constructed(int64_t rows, int64_t cols, double smallest, unsigned seed) {
  const int64_t k = std::min(rows, cols);
  std::vector<double> sigma(k);
  for (int64_t i = 0; i < k; ++i) sigma[i] = std::pow(smallest, k > 1 ? static_cast<double>(i) / (k - 1) : 0.0);
  Eigen::VectorXd s = Eigen::Map<Eigen::VectorXd>(sigma.data(), k);
  Eigen::MatrixXd a = random_orthogonal(rows, k, seed) * s.asDiagonal() * random_orthogonal(cols, k, seed + 1).transpose();
  return {to_tensor(a), sigma};
}

class ConstructedSpectra : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(ConstructedSpectra, FullSpectrumMatchesTheConstruction) {
  const auto [rows, cols] = GetParam();
  auto [a, sigma] = constructed(rows, cols, 1e-12, 3);
  auto s = singular_values(a);
  ASSERT_EQ(s.status, SpectrumStatus::ok);
  ASSERT_TRUE(s.complete());
  for (size_t i = 0; i < sigma.size(); ++i) {
    if (sigma[i] >= 1e-5) {  // the large ones, relative
      EXPECT_NEAR(s.values[i] / sigma[i], 1.0, 1e-10) << i;
    }
    EXPECT_NEAR(s.values[i], sigma[i], 1e-14) << i;                              // all of them, absolute
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConstructedSpectra,
                         ::testing::Values(std::make_pair(64, 64), std::make_pair(16, 16), std::make_pair(3136, 64),
                                           std::make_pair(64, 196), std::make_pair(196, 32)),
                         [](const auto& info) {
                           return std::to_string(info.param.first) + "x" + std::to_string(info.param.second);
                         });

TEST(Spectrum, KeepsSingularValuesAGramMatrixWouldLose) {
  // σ_min/σ_max = 1e-10 < √eps: AᵀA rounds it away; the SVD of A keeps it.
  auto [a, sigma] = constructed(300, 20, 1e-10, 5);
  auto s = singular_values(a);
  EXPECT_NEAR(s.values.back() / sigma.back(), 1.0, 1e-3);
  auto m = rank_metrics(s.values, 300, 20, dtype_eps(torch::kFloat64));
  EXPECT_EQ(m.numerical_rank, 20);
}

TEST(Spectrum, TopKAgreesWithFullSvd) {
  auto a = torch::randn({400, 300}, torch::kFloat64);
  auto full = singular_values(a);
  auto top = top_singular_values(a, 12);
  EXPECT_EQ(top.method, "lanczos");
  ASSERT_EQ(top.status, SpectrumStatus::ok);
  ASSERT_EQ(top.values.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_NEAR(top.values[i] / full.values[i], 1.0, 1e-9) << i;
}

TEST(Spectrum, DenseOracleOnARandomProbe) {
  auto a = torch::randn({50, 37}, torch::kFloat32);
  auto s = singular_values(a);
  auto ad = a.to(torch::kFloat64).contiguous();
  Eigen::MatrixXd m = Eigen::Map<Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(ad.data_ptr<double>(), 50, 37);
  Eigen::VectorXd oracle = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues();
  for (int i = 0; i < 37; ++i) EXPECT_NEAR(s.values[i], oracle[i], 1e-12 * oracle[0]) << i;
}

TEST(Spectrum, NumericalTroubleIsAStatusCallerMistakesThrow) {
  auto a = torch::randn({8, 8}, torch::kFloat64);
  a[2][3] = std::nan("");
  EXPECT_EQ(singular_values(a).status, SpectrumStatus::numerical_issue);
  EXPECT_THROW(singular_values(torch::randn({8})), c10::Error);
  EXPECT_THROW(singular_values(torch::randn({0, 4})), c10::Error);
  EXPECT_THROW(top_singular_values(torch::randn({8, 8}), 9), c10::Error);
}

/// A (K, m, n) stack of constructed matrices (σ from 1 down to `smallest`, a different U, V per matrix).
std::pair<torch::Tensor, std::vector<std::vector<double>>> constructed_stack(int64_t K, int64_t rows, int64_t cols,
                                                                             double smallest, unsigned seed) {
  std::vector<torch::Tensor> mats;
  std::vector<std::vector<double>> sigmas;
  for (int64_t i = 0; i < K; ++i) {
    auto [a, sigma] = constructed(rows, cols, smallest, seed + 2 * static_cast<unsigned>(i));
    mats.push_back(a);
    sigmas.push_back(sigma);
  }
  return {torch::stack(mats), sigmas};
}

class BatchedSpectra : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(BatchedSpectra, EveryMatrixMatchesItsConstruction) {
  // The shapes the recorder hands over (kv_buffer d×d, output N×d tall, wide maps), float64, K matrices at once.
  const auto [rows, cols] = GetParam();
  auto [stack, sigmas] = constructed_stack(5, rows, cols, 1e-12, 11);
  auto spectra = singular_values_batched(stack);
  ASSERT_EQ(spectra.size(), 5u);
  for (size_t k = 0; k < spectra.size(); ++k) {
    const auto& s = spectra[k];
    ASSERT_EQ(s.status, SpectrumStatus::ok) << k;
    ASSERT_TRUE(s.complete()) << k;
    EXPECT_EQ(s.rows, rows);
    EXPECT_EQ(s.cols, cols);
    EXPECT_EQ(s.method, std::max(rows, cols) > 2 * std::min(rows, cols) ? "qr+gesdd" : "gesdd");
    for (size_t i = 0; i < sigmas[k].size(); ++i) {
      if (sigmas[k][i] >= 1e-5) {
        EXPECT_NEAR(s.values[i] / sigmas[k][i], 1.0, 1e-10) << k << "," << i;
      }
      EXPECT_NEAR(s.values[i], sigmas[k][i], 1e-14) << k << "," << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchedSpectra,
                         ::testing::Values(std::make_pair(64, 64), std::make_pair(3136, 64), std::make_pair(196, 64),
                                           std::make_pair(49, 64), std::make_pair(64, 196), std::make_pair(100, 64),
                                           std::make_pair(1, 7)),
                         [](const auto& info) {
                           return std::to_string(info.param.first) + "x" + std::to_string(info.param.second);
                         });

TEST(Spectrum, BatchedFloat32ProbesAgreeWithTheDenseOracle) {
  // float32 probes (what the models emit) are ranked in float64: the oracle is Eigen's JacobiSVD of the same values.
  torch::manual_seed(4);
  auto stack = torch::randn({6, 784, 64}, torch::kFloat32) * torch::rand({1, 1, 64});
  auto spectra = singular_values_batched(stack);
  for (int64_t k = 0; k < 6; ++k) {
    auto ad = stack[k].to(torch::kFloat64).contiguous();
    Eigen::MatrixXd m = Eigen::Map<Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(ad.data_ptr<double>(), 784, 64);
    Eigen::VectorXd oracle = Eigen::JacobiSVD<Eigen::MatrixXd>(m).singularValues();
    ASSERT_EQ(spectra[k].values.size(), 64u);
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(spectra[k].values[i], oracle[i], 1e-12 * oracle[0]) << k << "," << i;
  }
}

TEST(Spectrum, BatchedGivesANonFiniteMatrixItsOwnStatus) {
  auto stack = torch::randn({4, 30, 8}, torch::kFloat32);
  stack[2][5][3] = std::numeric_limits<float>::infinity();
  auto spectra = singular_values_batched(stack);
  for (int64_t k = 0; k < 4; ++k) {
    if (k == 2) {
      EXPECT_EQ(spectra[k].status, SpectrumStatus::numerical_issue);
      EXPECT_TRUE(spectra[k].values.empty());
      continue;
    }
    ASSERT_EQ(spectra[k].status, SpectrumStatus::ok) << k;
    auto alone = singular_values(stack[k]);
    for (size_t i = 0; i < alone.values.size(); ++i)
      EXPECT_NEAR(spectra[k].values[i], alone.values[i], 1e-12 * alone.values[0]) << k << "," << i;
  }
  EXPECT_THROW(singular_values_batched(torch::randn({4, 8})), c10::Error);
  EXPECT_THROW(singular_values_batched(torch::randn({2, 0, 8})), c10::Error);
}

TEST(Spectrum, BatchedIsIdenticalOnOneOrSeveralThreads) {
  // Each matrix gets the same LAPACK calls whichever thread runs it: the spectra must not depend on the split.
  torch::manual_seed(9);
  auto stack = torch::randn({12, 196, 64}, torch::kFloat32);
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  auto one = singular_values_batched(stack);
  at::set_num_threads(2);
  auto two = singular_values_batched(stack);
  at::set_num_threads(before);
  for (size_t k = 0; k < one.size(); ++k) EXPECT_EQ(one[k].values, two[k].values) << k;
}

TEST(Spectrum, ParallelLoopsReallyUseSeveralThreads) {
  // at::parallel_for is an inline template: it runs serially in a translation unit built without OpenMP. The build
  // compiles every target with OpenMP; this guards that (the batched spectra depend on it).
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  std::vector<int> seen(2, -1);
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) seen[i] = at::get_thread_num();
  });
  at::set_num_threads(before);
  EXPECT_NE(seen[0], seen[1]);
}

class RankOfProducts : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(RankOfProducts, NumpyRuleFindsTheConstructedRank) {
  const auto [rows, cols, r] = GetParam();
  // A rank-r float32 matrix U·diag(σ)·Vᵀ with orthonormal U (rows×r), V (cols×r) and σ in [0.01, 1], as a probe of
  // the model's dtype would be. (A product of two Gaussian factors can be arbitrarily ill-conditioned, which made the
  // square full-rank case flaky against the 1e-4 relative rule.)
  torch::manual_seed(static_cast<uint64_t>(rows * 1000003 + cols * 101 + r));
  auto u = std::get<0>(torch::linalg_qr(torch::randn({rows, r}, torch::kFloat64)));
  auto v = std::get<0>(torch::linalg_qr(torch::randn({cols, r}, torch::kFloat64)));
  auto sigma = torch::linspace(1.0, 0.01, r, torch::kFloat64);
  auto a = torch::matmul(u * sigma, v.t()).to(torch::kFloat32);
  auto s = singular_values(a);
  auto m = rank_metrics(s.values, rows, cols, dtype_eps(torch::kFloat32));
  EXPECT_EQ(m.numerical_rank, r);
  EXPECT_EQ(rank_metrics(s.values, rows, cols, dtype_eps(torch::kFloat32), 1e-4).relative_rank, r);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RankOfProducts,
                         ::testing::Values(std::make_tuple(64, 64, 17), std::make_tuple(3136, 64, 40),
                                           std::make_tuple(32, 196, 5), std::make_tuple(16, 16, 16),
                                           std::make_tuple(784, 32, 1)));

TEST(RankMetrics, ClosedForms) {
  const std::vector<double> identity(10, 1.0);
  auto m = rank_metrics(identity, 10, 10, dtype_eps(torch::kFloat64));
  EXPECT_NEAR(m.effective_rank, 10.0, 1e-12);
  EXPECT_NEAR(m.stable_rank, 10.0, 1e-12);
  EXPECT_EQ(m.numerical_rank, 10);
  EXPECT_EQ(m.energy_rank_90, 9);   // 9 of 10 equal values hold exactly 90 %
  EXPECT_EQ(m.energy_rank_99, 10);
  // σ = (3, 4): stable rank (9 + 16)/16; entropy of (3/7, 4/7).
  auto two = rank_metrics({4.0, 3.0}, 5, 2, dtype_eps(torch::kFloat64));
  EXPECT_NEAR(two.stable_rank, 25.0 / 16.0, 1e-15);
  const double p = 4.0 / 7, q = 3.0 / 7;
  EXPECT_NEAR(two.effective_rank, std::exp(-p * std::log(p) - q * std::log(q)), 1e-15);
  EXPECT_EQ(two.energy_rank_90, 2);
  EXPECT_EQ(rank_metrics({1.0, 0.0}, 2, 2, 1e-16).effective_rank, 1.0);
  EXPECT_EQ(rank_metrics({0.0, 0.0}, 2, 2, 1e-16).numerical_rank, 0);
  EXPECT_THROW(rank_metrics({1.0, 2.0}, 2, 2, 1e-16), c10::Error);  // not descending
}

}  // namespace
}  // namespace rala

// Spectra and rank metrics against constructed matrices U·diag(σ)·Vᵀ (known σ), a dense oracle (Eigen's JacobiSVD),
// and closed forms (identity, rank-r products).
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include <ATen/Parallel.h>

#include "analysis/rank_metrics.h"
#include "analysis/lapack.h"
#include "analysis/spectrum.h"
#include "analysis/tridiagonal.h"
#include "attention_variants/fused.h"

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
  Eigen::MatrixXd a =
      random_orthogonal(rows, k, seed) * s.asDiagonal() * random_orthogonal(cols, k, seed + 1).transpose();
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

// ---- Eigenvalues of tridiagonal matrices (dsterf's iteration, several matrices interleaved) ---------------------


TEST(Tridiagonal, ClosedFormOfTheSecondDifferenceMatrix) {
  // tridiag(−1, 2, −1) of order n: λ_j = 2 − 2·cos(jπ/(n+1)), j = 1…n.
  for (int n : {1, 2, 3, 16, 64, 200}) {
    const int K = 3;  // three copies in one call
    std::vector<double> d(K * n, 2.0), e(K * n, -1.0);
    std::vector<int> info(K, -1);
    tridiagonal_eigenvalues(K, n, d.data(), e.data(), info.data());
    for (int k = 0; k < K; ++k) {
      ASSERT_EQ(info[k], 0) << n;
      for (int j = 1; j <= n; ++j)
        EXPECT_NEAR(d[k * n + j - 1], 2.0 - 2.0 * std::cos(j * M_PI / (n + 1)), 16 * std::ldexp(1.0, -52))
            << n << " " << j;
    }
  }
}

/// K tridiagonals of order n of several kinds: Gaussian, graded over 20 decades, split by zero off-diagonals, and
/// scaled near overflow (1e250) and underflow (1e-250), where the iteration works on a scaled copy.
std::pair<std::vector<double>, std::vector<double>> tridiagonal_zoo(int K, int n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<double> d(K * n), e(K * n, 0.0);
  for (int k = 0; k < K; ++k) {
    const int kind = k % 5;
    const double scale = kind == 3 ? 1e250 : kind == 4 ? 1e-250 : 1.0;
    for (int i = 0; i < n; ++i) {
      const double grade = kind == 1 ? std::pow(10.0, -20.0 * i / n) : 1.0;
      d[k * n + i] = normal(gen) * grade * scale;
      if (i + 1 < n) e[k * n + i] = (kind == 2 && i % 7 == 3) ? 0.0 : normal(gen) * grade * scale;
    }
  }
  return {d, e};
}

TEST(Tridiagonal, BitForBitLapacksDsterfAndIndependentOfItsNeighbours) {
  // The same iteration as LAPACK's dsterf (an independent implementation, one matrix at a time): on matrices of
  // moderate norm the arithmetic is the same operation for operation, so the eigenvalues are bit-identical. Near
  // overflow/underflow (kinds 3 and 4) dsterf rescales by the inexact factor SSFMAX/‖T‖ (dlascl) and
  // tridiagonal_eigenvalues by an exact power of two to ‖T‖ ≈ 1, so there the reference is dsterf on the input scaled
  // by that power of two (exact), its eigenvalues scaled back (exact).
  for (int n : {1, 2, 5, 49, 64, 130}) {
    const int K = 15;
    auto [d, e] = tridiagonal_zoo(K, n, 17 + n);
    auto d_batch = d, e_batch = e;
    std::vector<int> info(K, -1);
    tridiagonal_eigenvalues(K, n, d_batch.data(), e_batch.data(), info.data());
    for (int k = 0; k < K; ++k) {
      ASSERT_EQ(info[k], 0) << n << " " << k;
      std::vector<double> dl(d.begin() + k * n, d.begin() + (k + 1) * n);
      std::vector<double> el(e.begin() + k * n, e.begin() + (k + 1) * n);
      double norm = 0;
      for (int i = 0; i < n; ++i) norm = std::max({norm, std::abs(dl[i]), i + 1 < n ? std::abs(el[i]) : 0.0});
      int exponent = 0;
      std::frexp(norm, &exponent);
      const bool scaled = k % 5 >= 3;
      if (scaled) {
        for (double& v : dl) v = std::ldexp(v, -exponent);
        for (double& v : el) v = std::ldexp(v, -exponent);
      }
      int lapack_info = -1;
      dsterf_(&n, dl.data(), el.data(), &lapack_info);
      ASSERT_EQ(lapack_info, 0);
      if (scaled)
        for (double& v : dl) v = std::ldexp(v, exponent);
      for (int i = 0; i < n; ++i) EXPECT_EQ(d_batch[k * n + i], dl[i]) << n << " " << k << " " << i;
      // Alone: bit for bit what it got among the others (the interleaving shares no arithmetic).
      std::vector<double> da(d.begin() + k * n, d.begin() + (k + 1) * n);
      std::vector<double> ea(e.begin() + k * n, e.begin() + (k + 1) * n);
      int alone_info = -1;
      tridiagonal_eigenvalues(1, n, da.data(), ea.data(), &alone_info);
      ASSERT_EQ(alone_info, 0);
      for (int i = 0; i < n; ++i) EXPECT_EQ(da[i], d_batch[k * n + i]) << n << " " << k << " " << i;
    }
  }
}

TEST(Tridiagonal, DenseOracleOnScaledAndSplitMatrices) {
  const int n = 40, K = 5;
  auto [d, e] = tridiagonal_zoo(K, n, 3);
  auto dt = d, et = e;
  std::vector<int> info(K, -1);
  tridiagonal_eigenvalues(K, n, dt.data(), et.data(), info.data());
  for (int k = 0; k < K; ++k) {
    ASSERT_EQ(info[k], 0);
    // Eigen's dense symmetric solver on the same matrix divided by its largest entry (so it stays in range).
    double scale = 0;
    for (int i = 0; i < n; ++i) scale = std::max({scale, std::abs(d[k * n + i]), std::abs(e[k * n + i])});
    Eigen::MatrixXd t = Eigen::MatrixXd::Zero(n, n);
    for (int i = 0; i < n; ++i) {
      t(i, i) = d[k * n + i] / scale;
      if (i + 1 < n) t(i, i + 1) = t(i + 1, i) = e[k * n + i] / scale;
    }
    Eigen::VectorXd oracle = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(t, Eigen::EigenvaluesOnly).eigenvalues();
    const double top = oracle.cwiseAbs().maxCoeff();
    for (int i = 0; i < n; ++i)
      EXPECT_NEAR(dt[k * n + i] / scale, oracle[i], 64 * std::ldexp(1.0, -52) * top) << k << " " << i;
  }
}

// ---- The Gram path (the recorder's default) against the exact path -------------------------------------------------
//
// Stated accuracy of σ from the float64 Gram matrix of a probe A (what these tests assert, against the exact QR + SVD
// of the same matrix, itself accurate to ~1e-16·σ_1): |σ̂_i − σ_i| ≤ 3e-8·σ_1 for every i, and |σ̂_i/σ_i − 1| ≤ 1e-4
// for σ_i ≥ 1e-6·σ_1. Both follow from |σ̂_i² − σ_i²| ≤ 2e-16·σ_1² (≈ eps64·σ_1², the backward error of forming and
// solving the Gram matrix; |σ̂ − σ| ≤ √|σ̂² − σ²|); measured here it is ~10× smaller (README "Rank analysis").
constexpr double kGramAbs = 3e-8, kGramRel = 1e-4, kGramRelFloor = 1e-6;

/// Every σ of `got` within the stated Gram bound of `ref` (both descending, of one matrix).
void expect_within_gram_bound(const std::vector<double>& got, const std::vector<double>& ref, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(got[i], ref[i], kGramAbs * ref[0]) << what << " σ_" << i;
    if (ref[i] >= kGramRelFloor * ref[0]) {
      EXPECT_NEAR(got[i] / ref[i], 1.0, kGramRel) << what << " σ_" << i;
    }
  }
}

/// A float32 (rows × cols) U·diag(σ)·Vᵀ: σ log-spaced from 1 to 1e-10, except that a σ within 2 % of numpy's float32
/// rank threshold τ = max(rows, cols)·2⁻²³ (σ_1 = 1) is moved 5 % above it — the condition under which the Gram path
/// must give the exact path's rank (no σ within its error of τ; rounding A to float32 moves σ_i by ≲ 1e-8 ≪ 2 %·τ).
torch::Tensor banded_float32(int64_t rows, int64_t cols, unsigned seed) {
  const int64_t k = std::min(rows, cols);
  const double tau = static_cast<double>(std::max(rows, cols)) * std::ldexp(1.0, -23);
  Eigen::VectorXd s(k);
  for (int64_t i = 0; i < k; ++i) {
    s[i] = std::pow(1e-10, k > 1 ? static_cast<double>(i) / (k - 1) : 0.0);
    if (std::abs(s[i] / tau - 1.0) < 0.02) s[i] = 1.05 * tau;
  }
  Eigen::MatrixXd a =
      random_orthogonal(rows, k, seed) * s.asDiagonal() * random_orthogonal(cols, k, seed + 1).transpose();
  Eigen::Matrix<double, -1, -1, Eigen::RowMajor> r = a;
  return torch::from_blob(r.data(), {rows, cols}, torch::kFloat64).to(torch::kFloat32);
}

class GramSpectra : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(GramSpectra, AgreeWithTheExactPathWithinTheStatedBoundAndGiveTheSameRanks) {
  const auto [rows, cols] = GetParam();
  auto stack = torch::stack({banded_float32(rows, cols, 21), banded_float32(rows, cols, 23)});
  const auto exact = singular_values_batched(stack);
  const auto gram = singular_values_gram_batched(stack);
  const auto device_path = singular_values_gram_torch(stack);  // what a CUDA run computes, here on the CPU
  const double eps32 = dtype_eps(torch::kFloat32);
  ASSERT_EQ(gram.size(), 2u);
  ASSERT_EQ(device_path.size(), 2u);
  for (size_t j = 0; j < 2; ++j) {
    const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + " #" + std::to_string(j);
    ASSERT_EQ(exact[j].status, SpectrumStatus::ok) << what;
    ASSERT_EQ(gram[j].status, SpectrumStatus::ok) << what;
    ASSERT_EQ(device_path[j].status, SpectrumStatus::ok) << what;
    EXPECT_EQ(gram[j].method, "gram+syevd");
    EXPECT_EQ(device_path[j].method, "gram+eigvalsh");
    EXPECT_EQ(gram[j].rows, rows);
    EXPECT_EQ(gram[j].cols, cols);
    ASSERT_TRUE(gram[j].complete()) << what;
    EXPECT_TRUE(std::is_sorted(gram[j].values.rbegin(), gram[j].values.rend())) << what;
    expect_within_gram_bound(gram[j].values, exact[j].values, what + " lapack");
    expect_within_gram_bound(device_path[j].values, exact[j].values, what + " torch");
    // The condition of equal ranks, on the exact spectrum: no σ within the stated relative error of the threshold.
    const auto ref = rank_metrics(exact[j].values, rows, cols, eps32);
    for (double v : exact[j].values) ASSERT_GT(std::abs(v / ref.tolerance - 1.0), 10 * kGramRel) << what;
    const auto g = rank_metrics(gram[j].values, rows, cols, eps32);
    EXPECT_EQ(g.numerical_rank, ref.numerical_rank) << what;
    EXPECT_EQ(rank_metrics(device_path[j].values, rows, cols, eps32).numerical_rank, ref.numerical_rank) << what;
    // The other metrics are sums over σ dominated by the large, relatively accurate values.
    EXPECT_NEAR(g.effective_rank, ref.effective_rank, 1e-6 * ref.effective_rank) << what;
    EXPECT_NEAR(g.stable_rank, ref.stable_rank, 1e-9 * ref.stable_rank) << what;
    EXPECT_EQ(g.energy_rank_99, ref.energy_rank_99) << what;
    // The measured error, for the README's accuracy table (the assertions above are the stated bounds).
    double rel = 0, abs_err = 0;
    for (size_t i = 0; i < exact[j].values.size(); ++i) {
      const double e = exact[j].values[i];
      abs_err = std::max(abs_err, std::abs(gram[j].values[i] - e) / exact[j].values[0]);
      if (e >= kGramRelFloor * exact[j].values[0]) rel = std::max(rel, std::abs(gram[j].values[i] / e - 1.0));
    }
    std::printf("gram vs exact %s: max rel err (σ ≥ 1e-6·σ_1) %.2e, max abs err %.2e·σ_1, rank %lld = %lld\n",
                what.c_str(), rel, abs_err, static_cast<long long>(g.numerical_rank),
                static_cast<long long>(ref.numerical_rank));
  }
}

// Every probe shape the models produce: kv_buffer d×d (micro 16, RAVLT 32/64; cosFormer 4d×d), per-head outputs N×d
// (RAVLT-T 3136/784/196/49 × 64, micro 256/64 × 16 and 4 × 32, DeiT 197 × 64, a wide map), the all-heads N×C outputs
// (784×128, 196×256, 49×512, DeiT-S 197×384), attention maps (N×N up to 1024; 49², 196²) and a 1×7 edge case.
INSTANTIATE_TEST_SUITE_P(ProbeShapes, GramSpectra,
                         ::testing::Values(std::make_pair(64, 64), std::make_pair(32, 32), std::make_pair(16, 16),
                                           std::make_pair(256, 64), std::make_pair(3136, 64), std::make_pair(784, 64),
                                           std::make_pair(196, 64), std::make_pair(49, 64), std::make_pair(256, 16),
                                           std::make_pair(64, 16), std::make_pair(4, 32), std::make_pair(197, 64),
                                           std::make_pair(64, 196), std::make_pair(784, 128), std::make_pair(196, 256),
                                           std::make_pair(49, 512), std::make_pair(197, 384), std::make_pair(49, 49),
                                           std::make_pair(196, 196), std::make_pair(1, 7), std::make_pair(7, 1)),
                         [](const auto& info) {
                           return std::to_string(info.param.first) + "x" + std::to_string(info.param.second);
                         });

TEST(GramSpectra, AtTheThresholdOnlyAValueWithinTheGramErrorCanBeCountedDifferently) {
  // The two paths differ by up to the stated error: a threshold placed between σ̂_j (Gram) and σ_j (exact) counts the
  // value in one and not the other — ranks differ by exactly one. Placed just outside the stated bound around σ_j,
  // on either side, the ranks agree. This is the one way the methods' ranks can differ.
  auto a = banded_float32(784, 64, 31).unsqueeze(0);
  const auto exact = singular_values_batched(a)[0].values;
  const auto gram = singular_values_gram_batched(a)[0].values;
  const double eps32 = dtype_eps(torch::kFloat32);
  int64_t split = 0;
  for (size_t j = 1; j < exact.size(); ++j) {
    if (exact[j] < kGramRelFloor * exact[0]) break;  // below, the relative bound is not stated
    auto ranks = [&](double rel) {
      return std::make_pair(rank_metrics(exact, 784, 64, eps32, rel).relative_rank,
                            rank_metrics(gram, 784, 64, eps32, rel).relative_rank);
    };
    for (double side : {-1.0, 1.0}) {
      const auto [e, g] = ranks(exact[j] / exact[0] * (1 + side * 2 * kGramRel));
      EXPECT_EQ(e, g) << "threshold " << side << "·2e-4 from σ_" << j;
    }
    // (σ_1 of the two paths differ by ~1e-16 relative; a split needs the values to differ by more.)
    if (std::abs(gram[j] / exact[j] - 1.0) < 1e-12) continue;
    const auto [e, g] = ranks(0.5 * (exact[j] + gram[j]) / exact[0]);
    EXPECT_EQ(std::abs(e - g), 1) << "threshold between σ_" << j << " (exact " << exact[j] << ", gram " << gram[j]
                                  << ")";
    ++split;
  }
  EXPECT_GT(split, 10);  // the paths are not bit-identical, so the split case is really exercised
}

TEST(GramSpectra, AgreesWithLapacksDsyevdOnTheSameGramMatrixWithinTheirRoundingErrors) {
  // The Gram path runs dsyevd's values-only algorithm with its own kernels (gram_kernels.h: the Gram matrix, dsytd2's
  // reduction; tridiagonal.h: dsterf's iteration) on every CPU capability here. Against LAPACK's dsyrk + dsyevd("N")
  // on the same matrix: |σ̂² − λ| within the rounding of forming G twice (2·γ_inner·‖|A|ᵀ|A|‖_F) plus the backward
  // error of two symmetric eigen-solvers (2 × 4·k·u·‖G‖_F, as tests/analysis/gram_kernels_test.cpp states it).
  torch::manual_seed(12);
  const std::string before = fused::capability();
  for (const auto& cap : fused::available_capabilities()) {
    fused::set_capability(cap);
    for (auto shape : {std::vector<int64_t>{3, 3136, 64}, std::vector<int64_t>{5, 196, 64},
                       std::vector<int64_t>{4, 64, 64}, std::vector<int64_t>{3, 49, 512},
                       std::vector<int64_t>{4, 197, 384}}) {
      auto stack = torch::randn(shape, torch::kFloat32) * torch::rand({1, 1, shape[2]});
      const auto gram = singular_values_gram_batched(stack);
      const int m = static_cast<int>(shape[1]), n = static_cast<int>(shape[2]), k = std::min(m, n);
      for (int64_t j = 0; j < shape[0]; ++j) {
        auto a = stack[j].to(torch::kFloat64).contiguous();  // row-major m×n = column-major n×m Aᵀ
        std::vector<double> g(static_cast<size_t>(k) * k), w(k);
        const double one = 1, zero = 0;
        const int inner = std::max(m, n);
        dsyrk_("U", m >= n ? "N" : "T", &k, &inner, &one, a.data_ptr<double>(), &n, &zero, g.data(), &k, 1, 1);
        const auto abs_a = a.abs();
        const double abs_gram_norm =
            (m >= n ? abs_a.t().matmul(abs_a) : abs_a.matmul(abs_a.t())).norm().item<double>();
        double gram_norm = 0;  // ‖G‖_F from the upper triangle dsyrk formed
        for (int c = 0; c < k; ++c)
          for (int r = 0; r <= c; ++r) gram_norm += (r == c ? 1 : 2) * g[c * k + r] * g[c * k + r];
        gram_norm = std::sqrt(gram_norm);
        int info = 0, query_size = -1, iquery = 0;
        double query = 0;
        dsyevd_("N", "U", &k, g.data(), &k, w.data(), &query, &query_size, &iquery, &query_size, &info, 1, 1);
        std::vector<double> work(static_cast<size_t>(query));
        std::vector<int> iwork(std::max(1, iquery));
        const int lwork = static_cast<int>(work.size()), liwork = static_cast<int>(iwork.size());
        dsyevd_("N", "U", &k, g.data(), &k, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
        ASSERT_EQ(info, 0);
        ASSERT_EQ(gram[j].status, SpectrumStatus::ok);
        ASSERT_EQ(gram[j].values.size(), static_cast<size_t>(k));
        const double u = std::ldexp(1.0, -53), gamma = inner * u / (1 - inner * u);
        const double bound = 2 * gamma * abs_gram_norm + 8 * k * u * gram_norm;
        for (int i = 0; i < k; ++i) {
          const double s = gram[j].values[i], lambda = std::max(w[k - 1 - i], 0.0);
          ASSERT_LE(std::abs(s * s - lambda), bound) << cap << " " << m << "x" << n << " #" << j << " σ_" << i;
        }
      }
    }
  }
  fused::set_capability(before);
}

TEST(GramSpectra, IdenticalOnOneOrSeveralThreads) {
  torch::manual_seed(9);
  const int before = at::get_num_threads();
  for (auto shape : {std::vector<int64_t>{12, 196, 64}, std::vector<int64_t>{6, 49, 512}}) {
    auto stack = torch::randn(shape, torch::kFloat32) * torch::rand({1, 1, shape[2]});
    at::set_num_threads(1);
    auto one = singular_values_gram_batched(stack);
    at::set_num_threads(2);
    auto two = singular_values_gram_batched(stack);
    at::set_num_threads(before);
    ASSERT_EQ(one.size(), two.size());
    for (size_t k = 0; k < one.size(); ++k) {
      ASSERT_EQ(one[k].values.size(), static_cast<size_t>(std::min(shape[1], shape[2])));
      EXPECT_EQ(one[k].values, two[k].values) << k;  // bit for bit
    }
  }
}

TEST(GramSpectra, ANonFiniteMatrixGetsItsOwnStatusOnBothGramPaths) {
  torch::manual_seed(5);
  auto stack = torch::randn({5, 30, 8}, torch::kFloat32);
  stack[1][5][3] = std::numeric_limits<float>::infinity();
  stack[3][0][0] = std::numeric_limits<float>::quiet_NaN();
  stack[4][29][7] = -std::numeric_limits<float>::infinity();
  using Path = std::vector<Spectrum> (*)(const torch::Tensor&);
  for (Path path : {&singular_values_gram_batched, &singular_values_gram_torch}) {
    const auto spectra = path(stack);
    ASSERT_EQ(spectra.size(), 5u);
    for (int64_t k : {1, 3, 4}) {
      EXPECT_EQ(spectra[k].status, SpectrumStatus::numerical_issue) << k;
      EXPECT_EQ(spectra[k].method, "none") << k;
      EXPECT_TRUE(spectra[k].values.empty()) << k;
    }
    for (int64_t k : {0, 2}) {  // the finite ones are unaffected: bit-identical to the same path on them alone
      ASSERT_EQ(spectra[k].status, SpectrumStatus::ok) << k;
      EXPECT_EQ(spectra[k].values, path(stack.narrow(0, k, 1))[0].values) << k;
      expect_within_gram_bound(spectra[k].values, singular_values(stack[k]).values, std::to_string(k));
    }
  }
  EXPECT_THROW(singular_values_gram_batched(torch::randn({4, 8})), c10::Error);
  EXPECT_THROW(singular_values_gram_batched(torch::randn({2, 0, 8})), c10::Error);
  EXPECT_THROW(singular_values_gram_torch(torch::randn({2, 8, 0})), c10::Error);
}

TEST(GramSpectra, AFloat64MatrixWhoseGramMatrixOverflowsIsANumericalIssueNotGarbage) {
  // |a| = 1e200 is finite in float64, but its squares are not: that matrix alone gets numerical_issue. A matrix at
  // 2⁴⁹⁰ ≈ 3e147 (Gram entries ~1e296, finite) keeps its σ: the reduction's norms take their scaled path there (the
  // sums of squares would overflow), which rounds differently, so the σ agree to rounding, not bit for bit.
  torch::manual_seed(6);
  auto base = torch::randn({3, 40, 6}, torch::kFloat64);
  auto stack = base.clone();
  stack[1].mul_(1e200);
  stack[2].mul_(std::ldexp(1.0, 490));  // a power of two: the input scales exactly
  const auto spectra = singular_values_gram_batched(stack);
  const auto plain = singular_values_gram_batched(base);
  EXPECT_EQ(spectra[1].status, SpectrumStatus::numerical_issue);
  EXPECT_EQ(spectra[1].method, "none");
  EXPECT_TRUE(spectra[1].values.empty());
  ASSERT_EQ(spectra[0].status, SpectrumStatus::ok);
  EXPECT_EQ(spectra[0].values, plain[0].values);
  ASSERT_EQ(spectra[2].status, SpectrumStatus::ok);
  for (size_t i = 0; i < plain[2].values.size(); ++i)
    EXPECT_NEAR(std::ldexp(spectra[2].values[i], -490), plain[2].values[i], 1e-14 * plain[2].values[0]) << i;
}

TEST(GramSpectra, HalfPrecisionProbesGetTheSpectraOfTheirExactFloat32Values) {
  torch::manual_seed(7);
  for (auto dtype : {torch::kBFloat16, torch::kFloat16}) {
    auto stack = torch::randn({4, 196, 64}).to(dtype);
    const auto half = singular_values_gram_batched(stack);
    const auto single = singular_values_gram_batched(stack.to(torch::kFloat32));
    ASSERT_EQ(half.size(), single.size());
    for (size_t k = 0; k < half.size(); ++k) {
      ASSERT_EQ(half[k].status, SpectrumStatus::ok);
      EXPECT_EQ(half[k].values, single[k].values) << k;  // bit for bit: the widening is exact
    }
  }
}

TEST(GramSpectra, StridedViewsGetTheSpectraOfTheirContiguousCopies) {
  // The recorder hands over (B, h, N, d) views of (B, N, h, d) tensors (the heads of the token layout), read in place
  // by row stride; a (…, m, n) stack of any rank flattens its leading dimensions in row-major order. Each view must
  // give the spectra of its contiguous (K, m, n) copy bit for bit, the matrices in the same order.
  torch::manual_seed(8);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    for (auto [N, d] : std::vector<std::pair<int64_t, int64_t>>{{196, 32}, {12, 40}, {1, 8}, {9, 1}}) {
      const auto tokens = torch::randn({3, N, 4, d}, dtype);
      const auto heads = tokens.transpose(1, 2);  // (3, 4, N, d), rows d·4 apart
      if (N > 1) {
        ASSERT_FALSE(heads.is_contiguous());
      }
      const auto reference = singular_values_gram_batched(heads.contiguous().reshape({12, N, d}));
      // rows d·4 apart; columns N apart (copied first); a 5-D stack (1, 3, 4, N, d)
      std::vector<torch::Tensor> views = {heads, heads.transpose(-1, -2).contiguous().transpose(-1, -2),
                                          heads.unsqueeze(0)};
      for (size_t v = 0; v < views.size(); ++v) {
        const auto got = singular_values_gram_batched(views[v]);
        ASSERT_EQ(got.size(), reference.size()) << v;
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i].status, SpectrumStatus::ok) << v << " " << i;
          EXPECT_EQ(got[i].values, reference[i].values) << "view " << v << " matrix " << i << " " << N << "x" << d;
        }
      }
      // The exact path and the tensor-operation path (a GPU run's; here on CPU tensors) flatten the same way.
      const auto exact = batched_spectra(heads, SpectraMethod::exact);
      const auto exact_ref = singular_values_batched(heads.contiguous().reshape({12, N, d}));
      ASSERT_EQ(exact.size(), exact_ref.size());
      for (size_t i = 0; i < exact.size(); ++i) EXPECT_EQ(exact[i].values, exact_ref[i].values) << i;
      const auto torch_path = singular_values_gram_torch(heads.unsqueeze(0));
      const auto torch_ref = singular_values_gram_torch(heads.contiguous().reshape({12, N, d}));
      ASSERT_EQ(torch_path.size(), torch_ref.size());
      for (size_t i = 0; i < torch_path.size(); ++i) EXPECT_EQ(torch_path[i].values, torch_ref[i].values) << i;
    }
  }
}

TEST(GramSpectra, LosesWhatTheExactPathKeepsBelowTheSquareRootOfEpsilon) {
  // The price of the Gram matrix, stated: σ/σ_1 = 1e-10 (float64 input) is below √eps64·σ_1 ≈ 1.5e-8 — the exact path
  // resolves it, the Gram path returns a value within its absolute bound (3e-8·σ_1) of it, not a relative one.
  auto [a, sigma] = constructed(300, 20, 1e-10, 5);
  auto stack = a.unsqueeze(0);
  const auto exact = singular_values_batched(stack)[0].values;
  const auto gram = singular_values_gram_batched(stack)[0].values;
  EXPECT_NEAR(exact.back() / sigma.back(), 1.0, 1e-3);
  EXPECT_NEAR(gram.back(), sigma.back(), kGramAbs);
  EXPECT_GT(std::abs(gram.back() / sigma.back() - 1.0), 1e-3);  // not relatively accurate down there
}

TEST(GramSpectra, MethodNamesDispatchAndLabels) {
  EXPECT_EQ(spectra_method_from_name("gram"), SpectraMethod::gram);
  EXPECT_EQ(spectra_method_from_name("exact"), SpectraMethod::exact);
  EXPECT_STREQ(spectra_method_name(SpectraMethod::gram), "gram");
  try {
    spectra_method_from_name("svd");
    ADD_FAILURE() << "no error for an unknown method";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("unknown spectra method 'svd' (expected gram or exact)"),
              std::string::npos);
  }
  auto stack = torch::randn({2, 40, 8});
  EXPECT_EQ(batched_spectra(stack, SpectraMethod::gram)[0].method, "gram+syevd");
  EXPECT_EQ(batched_spectra(stack, SpectraMethod::exact)[0].method, "qr+gesdd");
  EXPECT_STREQ(batched_spectra_label(SpectraMethod::gram, torch::kCPU), "gram-syevd");
  EXPECT_STREQ(batched_spectra_label(SpectraMethod::gram, torch::Device("cuda:0")), "gram-eigvalsh");
  EXPECT_STREQ(batched_spectra_label(SpectraMethod::exact, torch::kCPU), "qr-gesdd");
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

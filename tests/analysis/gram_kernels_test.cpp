// The Gram spectra's kernels (analysis/gram_kernels.h), every CPU capability this machine has: the Gram matrix
// against a long-double oracle within the summation bound, and the Householder tridiagonal form against a dense
// eigen-solver (Eigen's) of the matrix it came from, within the backward-error bound of the reduction.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "analysis/gram_kernels.h"
#include "attention_variants/fused.h"

namespace rala {
namespace {

constexpr double kU = std::numeric_limits<double>::epsilon() / 2;  // unit roundoff, 2⁻⁵³

std::vector<const gram_kernels::Table*> tables() {
  std::vector<const gram_kernels::Table*> out;
  for (const auto& name : fused::available_capabilities()) out.push_back(&gram_kernels::table_for(name.c_str()));
  return out;
}

/// A row-major m×n matrix with columns of very different scales (as probes have), in T. With `common`, every entry is
/// 0.1·(1 + 1e-3·noise): a large shared component.
template <typename T>
std::vector<T> probe_like(int64_t m, int64_t n, unsigned seed, bool common = false) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<double> scale(n);
  for (auto& s : scale) s = std::exp(3.0 * normal(gen));
  std::vector<T> a(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      a[i * n + j] = static_cast<T>(common ? 0.1 * (1 + 1e-3 * normal(gen)) : normal(gen) * scale[j]);
  return a;
}

/// Terms in the longest chain of additions behind one Gram entry as gram_kernels.h documents it: each panel's rows in
/// blocks of 64, each block's sum added to the entry.
int64_t summation_length(const gram_kernels::Table& t, int64_t inner, int64_t k) {
  constexpr int64_t kBlock = 64;
  const int64_t R = gram_kernels::panel_rows(gram_kernels::padded(t, k));
  int64_t blocks = 0;
  for (int64_t r0 = 0; r0 < inner; r0 += R) {
    const int64_t rows = std::min(R, inner - r0);
    blocks += (rows + kBlock - 1) / kBlock;
  }
  return std::min(inner, kBlock) + blocks;
}

template <typename T>
void expect_gram_within_summation_bound(const gram_kernels::Table& t, int64_t m, int64_t n, unsigned seed,
                                        bool common = false) {
  const auto a = probe_like<T>(m, n, seed, common);
  const int64_t k = std::min(m, n), inner = std::max(m, n), kp = gram_kernels::padded(t, k);
  std::vector<double> g(static_cast<size_t>(kp * kp), -1.0), scratch(gram_kernels::scratch_doubles(kp));
  // Odd seeds read A in place from rows 3 elements longer (lda = n + 3) whose extra elements are NaN: a read beyond a
  // row's n elements would show as a non-finite report or a wrong sum.
  const int64_t lda = seed % 2 ? n + 3 : n;
  std::vector<T> rows(static_cast<size_t>(m * lda), std::numeric_limits<T>::quiet_NaN());
  for (int64_t r = 0; r < m; ++r) std::copy(a.begin() + r * n, a.begin() + (r + 1) * n, rows.begin() + r * lda);
  bool finite;
  if constexpr (std::is_same_v<T, float>)
    finite = t.gram_f32(rows.data(), m, n, lda, g.data(), scratch.data());
  else
    finite = t.gram_f64(rows.data(), m, n, lda, g.data(), scratch.data());
  ASSERT_TRUE(finite);
  const std::string what = std::string(t.name) + " " + std::to_string(m) + "x" + std::to_string(n) + " lda " +
                           std::to_string(lda);
  auto at = [&](int64_t i, int64_t r) {  // entry r of "row vector" i: column i of A (m ≥ n) or row i (m < n)
    return static_cast<long double>(m >= n ? a[r * n + i] : a[i * n + r]);
  };
  double worst = 0.0;
  for (int64_t i = 0; i < kp; ++i)
    for (int64_t j = 0; j < kp; ++j) {
      const double got = g[i * kp + j];
      if (i >= k || j >= k) {
        ASSERT_EQ(got, 0.0) << what << " padding " << i << "," << j;
        continue;
      }
      long double sum = 0, abs_sum = 0;
      for (int64_t r = 0; r < inner; ++r) {
        sum += at(i, r) * at(j, r);
        abs_sum += std::fabs(at(i, r) * at(j, r));
      }
      // Blocked summation of `inner` products (exact for float32 inputs, one rounding each for float64): the
      // standard bound γ_L·Σ|a_ri·a_rj|, γ_L = L·u/(1 − L·u), with L the block length plus the number of blocks
      // (+1 for the rounding of each float64 product) — for 3136 rows 113 instead of 3136.
      const double len = static_cast<double>(summation_length(t, inner, k) + 1);
      const double gamma = len * kU / (1 - len * kU);
      const double bound = gamma * static_cast<double>(abs_sum);
      ASSERT_LE(std::abs(got - static_cast<double>(sum)), bound) << what << " G(" << i << "," << j << ")";
      ASSERT_EQ(got, g[j * kp + i]) << what << " symmetric " << i << "," << j;
      if (abs_sum > 0) worst = std::max(worst, std::abs(got - static_cast<double>(sum)) / bound);
    }
  ::testing::Test::RecordProperty(what, std::to_string(worst));
}

TEST(GramKernels, GramMatrixWithinTheBlockedSummationBoundOfALongDoubleOracle) {
  for (const auto* t : tables()) {
    unsigned seed = 1;
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{3136, 64}, {196, 64}, {64, 64}, {49, 64}, {49, 512},
                                                                 {197, 384}, {300, 13}, {13, 300}, {7, 1}, {1, 7},
                                                                 {1, 1}, {5, 3}, {40, 33}, {2000, 9}}) {
      expect_gram_within_summation_bound<float>(*t, m, n, seed++);
      expect_gram_within_summation_bound<double>(*t, m, n, seed++);
    }
    // A shared component (large partial sums). The bound is the blocked one; a kernel summing all rows in one chain
    // stays inside it on these inputs too (its errors do not reach the worst case), so the accuracy gain of the
    // blocking is measured on the recorder's probes instead (README "Rank-analysis overhead").
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{3136, 64}, {784, 16}, {16, 3136}}) {
      expect_gram_within_summation_bound<float>(*t, m, n, seed++, true);
      expect_gram_within_summation_bound<double>(*t, m, n, seed++, true);
    }
  }
}

TEST(GramKernels, GramReportsANonFiniteEntryWhereverItIs) {
  for (const auto* t : tables())
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{300, 20}, {20, 300}})
      for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN()})
        for (int64_t where : {int64_t{0}, m * n / 2 + 3, m * n - 1}) {
          auto a = probe_like<float>(m, n, 3);
          const int64_t kp = gram_kernels::padded(*t, std::min(m, n));
          std::vector<double> g(static_cast<size_t>(kp * kp)), scratch(gram_kernels::scratch_doubles(kp));
          ASSERT_TRUE(t->gram_f32(a.data(), m, n, n, g.data(), scratch.data()));
          a[where] = bad;
          EXPECT_FALSE(t->gram_f32(a.data(), m, n, n, g.data(), scratch.data())) << t->name << " " << where;
        }
}

using Dense = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The tridiagonal form (d, e) the kernel gives for the symmetric k×k s.
std::pair<std::vector<double>, std::vector<double>> tridiagonal_of(const gram_kernels::Table& t, const Dense& s) {
  const int64_t k = s.rows(), kp = gram_kernels::padded(t, k);
  std::vector<double> g(static_cast<size_t>(kp * kp), 0.0), scratch(gram_kernels::scratch_doubles(kp)), d(k), e(k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) g[i * kp + j] = s(i, j);
  t.tridiagonalize(k, g.data(), d.data(), e.data(), scratch.data());
  EXPECT_EQ(e[k - 1], 0.0);
  return {d, e};
}

/// Eigenvalues (ascending) of the tridiagonal form the kernel gives for s, by Eigen's dense solver.
Eigen::VectorXd tridiagonal_eigenvalues_of(const gram_kernels::Table& t, const Dense& s) {
  const auto [d, e] = tridiagonal_of(t, s);
  const int64_t k = s.rows();
  Eigen::MatrixXd tri = Eigen::MatrixXd::Zero(k, k);
  for (int64_t i = 0; i < k; ++i) {
    tri(i, i) = d[i];
    if (i + 1 < k) tri(i, i + 1) = tri(i + 1, i) = e[i];
  }
  return Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(tri, Eigen::EigenvaluesOnly).eigenvalues();
}

/// The reduction is an orthogonal similarity up to a backward error ‖E‖_F ≤ c·k·u·‖S‖_F (Householder reflectors,
/// Golub & Van Loan §8.3.1), so each eigenvalue moves by at most that much (Weyl); Eigen's solver adds its own error
/// of the same kind on both sides. Asserted: |λ_i(T) − λ_i(S)| ≤ 4·k·u·‖S‖_F (c = 2 for each of the two solvers).
void expect_same_eigenvalues(const gram_kernels::Table& t, const Dense& s, const std::string& what) {
  const auto got = tridiagonal_eigenvalues_of(t, s);
  const Eigen::VectorXd ref = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(s, Eigen::EigenvaluesOnly).eigenvalues();
  const double bound = 4.0 * static_cast<double>(s.rows()) * kU * s.norm();
  for (int64_t i = 0; i < s.rows(); ++i)
    ASSERT_LE(std::abs(got[i] - ref[i]), bound) << what << " " << t.name << " λ_" << i << " of " << s.rows();
}

Dense gram_of(const Dense& a) { return a.transpose() * a; }

TEST(GramKernels, TridiagonalFormHasTheEigenvaluesOfTheMatrix) {
  std::mt19937 gen(4);
  std::normal_distribution<double> normal;
  for (const auto* t : tables())
    for (int64_t k : {1, 2, 3, 7, 8, 9, 16, 49, 64, 65, 128, 197}) {
      const std::string what = "k=" + std::to_string(k);
      // Gram matrices of probe-like data (columns scaled over e^±9), and a dense random symmetric one.
      Dense a(3 * k + 5, k);
      for (int64_t j = 0; j < k; ++j) {
        const double scale = std::exp(3.0 * normal(gen));
        for (int64_t i = 0; i < a.rows(); ++i) a(i, j) = normal(gen) * scale;
      }
      expect_same_eigenvalues(*t, gram_of(a), what + " gram");
      Dense r(k, k);
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) r(i, j) = normal(gen);
      expect_same_eigenvalues(*t, r + r.transpose(), what + " symmetric");
      // Diagonal, and block diagonal: the steps whose column is already zero (dlarfg's τ = 0) leave it as it is.
      Dense diag = Dense::Zero(k, k);
      for (int64_t i = 0; i < k; ++i) diag(i, i) = normal(gen);
      const auto [dd, de] = tridiagonal_of(*t, diag);
      for (int64_t i = 0; i < k; ++i) {
        EXPECT_EQ(dd[i], diag(i, i)) << what << " diagonal " << t->name;
        EXPECT_EQ(de[i], 0.0) << what << " diagonal " << t->name;
      }
      Dense blocks = r + r.transpose();
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j)
          if ((i < k / 2) != (j < k / 2)) blocks(i, j) = 0.0;
      expect_same_eigenvalues(*t, blocks, what + " block diagonal");
    }
}

TEST(GramKernels, TridiagonalFormKeepsItsAccuracyAtTheEndsOfTheFloat64Range) {
  // Scaled by 2^e (exact while the entries stay normal), the eigenvalues scale with it. 2⁷⁰⁰, 2¹⁰⁰⁰: the sums of squares
  // overflow and the norms take the scaled path. 2⁻⁷⁰⁰: they underflow. 2⁻¹⁰⁰⁰: |β| < safmin, dlarfg's rescaling
  // runs. 2⁻¹⁰³⁰: the entries are subnormal and 1/(α − β) would overflow without that rescaling (every value NaN);
  // there the input itself is rounded to multiples of 2⁻¹⁰⁷⁴, so the bound gets an absolute term of k²·2⁻¹⁰⁷² for the
  // rounding of the entries and of each step's arithmetic in the subnormal range.
  std::mt19937 gen(8);
  std::normal_distribution<double> normal;
  for (const auto* t : tables())
    for (int64_t k : {5, 49, 64}) {
      Dense r(k, k);
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) r(i, j) = normal(gen);
      const Dense s = r + r.transpose();
      const Eigen::VectorXd ref =
          Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(s, Eigen::EigenvaluesOnly).eigenvalues();
      for (int e2 : {-1030, -1000, -700, 700, 1000}) {
        const double subnormal = e2 < -1000 ? static_cast<double>(k * k) * std::ldexp(1.0, -1072 - e2) : 0.0;
        const double bound = 4.0 * static_cast<double>(k) * kU * s.norm() + subnormal;
        const auto got = tridiagonal_eigenvalues_of(*t, s * std::ldexp(1.0, e2));
        for (int64_t i = 0; i < k; ++i)
          ASSERT_LE(std::abs(std::ldexp(got[i], -e2) - ref[i]), bound)
              << t->name << " k=" << k << " scale 2^" << e2 << " λ_" << i;
      }
    }
}

TEST(GramKernels, EveryCapabilityHasItsCopyAndTheDefaultIsAlwaysThere) {
  const auto caps = fused::available_capabilities();
  ASSERT_FALSE(caps.empty());
  EXPECT_EQ(caps.front(), "DEFAULT");
  for (const auto& c : caps) {
    const auto& t = gram_kernels::table_for(c.c_str());
    EXPECT_EQ(std::string(t.name), c);
    EXPECT_TRUE(t.lanes == 4 || t.lanes == 8) << c;
    EXPECT_EQ(gram_kernels::padded(t, 1), t.lanes);
    EXPECT_EQ(gram_kernels::padded(t, 64), 64);
  }
}

}  // namespace
}  // namespace rala

#include "analysis/spectrum.h"

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <Spectra/SymEigsSolver.h>

#include "analysis/gram_kernels.h"
#include "analysis/lapack.h"
#include "analysis/tridiagonal.h"
#include "attention_variants/fused.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace rala {

namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

RowMatrix to_eigen(const torch::Tensor& matrix, const char* what) {
  TORCH_CHECK(matrix.dim() == 2, what, ": expected a 2-D matrix, got shape ", matrix.sizes());
  TORCH_CHECK(matrix.size(0) > 0 && matrix.size(1) > 0, what, ": matrix is empty, shape ", matrix.sizes());
  auto m = matrix.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  return Eigen::Map<const RowMatrix>(m.data_ptr<double>(), m.size(0), m.size(1));
}

bool all_finite(const RowMatrix& a) { return a.allFinite(); }

/// y = [[0, A], [Aᵀ, 0]] x for x = [x1 (rows); x2 (cols)].
class AugmentedOp {
 public:
  using Scalar = double;
  explicit AugmentedOp(const RowMatrix& a) : a_(a) {}
  Eigen::Index rows() const { return a_.rows() + a_.cols(); }
  Eigen::Index cols() const { return rows(); }
  void perform_op(const double* x_in, double* y_out) const {
    const Eigen::Index m = a_.rows(), n = a_.cols();
    Eigen::Map<const Eigen::VectorXd> x1(x_in, m), x2(x_in + m, n);
    Eigen::Map<Eigen::VectorXd> y1(y_out, m), y2(y_out + m, n);
    y1.noalias() = a_ * x2;
    y2.noalias() = a_.transpose() * x1;
  }

 private:
  const RowMatrix& a_;
};

}  // namespace

const char* spectrum_status_name(SpectrumStatus s) {
  switch (s) {
    case SpectrumStatus::ok: return "ok";
    case SpectrumStatus::not_converged: return "not_converged";
    case SpectrumStatus::numerical_issue: return "numerical_issue";
  }
  return "?";
}

Spectrum singular_values(const torch::Tensor& matrix) {
  RowMatrix a = to_eigen(matrix, "singular_values");
  Spectrum s;
  s.rows = a.rows();
  s.cols = a.cols();
  if (!all_finite(a)) {
    s.status = SpectrumStatus::numerical_issue;
    s.method = "none";
    return s;
  }
  Eigen::MatrixXd work = a;
  if (work.rows() < work.cols()) work.transposeInPlace();  // σ(A) = σ(Aᵀ); make it tall
  if (work.rows() > 2 * work.cols()) {
    // Tall N×d: QR (Householder, backward stable), then the SVD of the d×d R — same singular values, far cheaper.
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(work);
    Eigen::MatrixXd r = qr.matrixQR().topRows(work.cols()).triangularView<Eigen::Upper>();
    work = r;
    s.method = "qr+bdcsvd";
  } else {
    s.method = "bdcsvd";
  }
  Eigen::BDCSVD<Eigen::MatrixXd> svd(work);
  if (svd.info() != Eigen::Success) s.status = SpectrumStatus::not_converged;
  const auto& v = svd.singularValues();
  s.values.assign(v.data(), v.data() + v.size());
  std::sort(s.values.begin(), s.values.end(), std::greater<double>());
  return s;
}

namespace {

/// Per-thread LAPACK workspace, sized once per stack by size_workspace() and reused across its matrices.
struct LapackWork {
  std::vector<double> a, r, tau, s, work;
  std::vector<int> iwork;
};

/// Sizes every buffer for rows×cols matrices (rows ≥ cols): LAPACK's own workspace queries, once per thread and stack
/// (the answer depends only on the shape).
void size_workspace(LapackWork& w, int rows, int cols, bool reduce) {
  w.a.resize(static_cast<size_t>(rows) * cols);
  w.tau.resize(cols);
  w.r.resize(static_cast<size_t>(cols) * cols);
  w.s.resize(cols);
  w.iwork.resize(8 * static_cast<size_t>(cols));
  int info = 0, query_size = -1, one = 1;
  double query = 0;
  int lwork = 1;
  if (reduce) {
    dgeqrf_(&rows, &cols, w.a.data(), &rows, w.tau.data(), &query, &query_size, &info);
    lwork = std::max(lwork, static_cast<int>(query));
  }
  const int m = reduce ? cols : rows;
  dgesdd_("N", &m, &cols, reduce ? w.r.data() : w.a.data(), &m, w.s.data(), nullptr, &one, nullptr, &one, &query,
          &query_size, w.iwork.data(), &info, 1);
  lwork = std::max(lwork, static_cast<int>(query));
  if (static_cast<int>(w.work.size()) < lwork) w.work.resize(lwork);
}

/// Singular values of the column-major tall matrix in w.a (rows ≥ cols; workspace sized by size_workspace), into w.s
/// (descending). `reduce`: QR first, then the SVD of R. Returns LAPACK's info of the SVD (> 0: not converged).
int tall_singular_values(LapackWork& w, int rows, int cols, bool reduce) {
  int info = 0, one = 1;
  const int lwork = static_cast<int>(w.work.size());
  double* target = w.a.data();
  int m = rows;
  if (reduce) {
    dgeqrf_(&rows, &cols, w.a.data(), &rows, w.tau.data(), w.work.data(), &lwork, &info);
    TORCH_CHECK(info == 0, "singular_values_batched: dgeqrf rejected argument ", -info);
    // R: the upper triangle of the top cols×cols block (column-major, leading dimension rows).
    std::fill(w.r.begin(), w.r.end(), 0.0);
    for (int j = 0; j < cols; ++j)
      std::copy(w.a.data() + static_cast<size_t>(j) * rows, w.a.data() + static_cast<size_t>(j) * rows + j + 1,
                w.r.data() + static_cast<size_t>(j) * cols);
    target = w.r.data();
    m = cols;
  }
  dgesdd_("N", &m, &cols, target, &m, w.s.data(), nullptr, &one, nullptr, &one, w.work.data(), &lwork,
          w.iwork.data(), &info, 1);
  TORCH_CHECK(info >= 0, "singular_values_batched: dgesdd rejected argument ", -info);
  return info;
}

/// Matrix `i` of a contiguous (K, m, n) row-major stack, as a tall column-major float64 matrix in w.a (sized by
/// size_workspace): Aᵀ when m < n (the row-major bytes of A are already the column-major Aᵀ), a transposing copy of
/// A otherwise. False if an entry is not finite.
template <typename T>
bool load_tall(LapackWork& w, const T* src, int64_t m, int64_t n) {
  double* dst = w.a.data();
  bool finite = true;
  if (m < n) {
    for (int64_t i = 0; i < m * n; ++i) finite &= std::isfinite(dst[i] = static_cast<double>(src[i]));
  } else {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) finite &= std::isfinite(dst[j * m + i] = static_cast<double>(src[i * n + j]));
  }
  return finite;
}

/// Per-thread workspace of the Gram path, sized once per stack by size_gram_workspace().
struct GramWork {
  std::vector<double> g, scratch;
  std::vector<double> d, e;  // the tridiagonal forms of the thread's matrices, k entries each
  std::vector<int> info;
};

/// The kernels of the capability the fused kernels use (RALA_CPU_CAPABILITY, or the best the CPU has).
const gram_kernels::Table& gram_table() { return gram_kernels::table_for(fused::capability().c_str()); }

/// Buffers for `count` m×n matrices (k = min(m, n)): the padded kp×kp Gram matrix, the kernels' scratch, the
/// tridiagonals.
void size_gram_workspace(GramWork& w, const gram_kernels::Table& t, int64_t m, int64_t n, int64_t count) {
  const int64_t k = std::min(m, n), kp = gram_kernels::padded(t, k);
  w.g.resize(static_cast<size_t>(kp * kp));
  w.scratch.resize(static_cast<size_t>(gram_kernels::scratch_doubles(kp)));
  w.d.resize(static_cast<size_t>(count * k));
  w.e.resize(static_cast<size_t>(count * k));
  w.info.resize(static_cast<size_t>(count));
}

/// The shared checks of the batched paths; returns (K, m, n).
/// (K, m, n) of a (..., m, n) stack: K is the product of the leading sizes (at least one leading dimension).
std::array<int64_t, 3> check_stack(const torch::Tensor& matrices, const char* what) {
  TORCH_CHECK(matrices.dim() >= 3, what, ": expected a (..., m, n) stack of matrices, got shape ", matrices.sizes());
  const int64_t m = matrices.size(-2), n = matrices.size(-1);
  int64_t K = 1;
  for (int64_t d = 0; d + 2 < matrices.dim(); ++d) K *= matrices.size(d);
  TORCH_CHECK(m > 0 && n > 0, what, ": matrices are empty, shape ", matrices.sizes());
  TORCH_CHECK(std::max(m, n) <= std::numeric_limits<int>::max() / std::min(m, n), what, ": matrices of ", m, "x", n,
              " exceed LAPACK's 32-bit indices");
  return {K, m, n};
}

}  // namespace

std::vector<Spectrum> singular_values_batched(const torch::Tensor& matrices) {
  const auto dims = check_stack(matrices, "singular_values_batched");
  const int64_t K = dims[0], m = dims[1], n = dims[2];
  auto src = matrices.detach().to(torch::kCPU).reshape({K, m, n});
  if (src.scalar_type() != torch::kFloat && src.scalar_type() != torch::kDouble) src = src.to(torch::kFloat64);
  src = src.contiguous();
  const int rows = static_cast<int>(std::max(m, n)), cols = static_cast<int>(std::min(m, n));
  const bool reduce = rows > 2 * cols;
  const char* method = reduce ? "qr+gesdd" : "gesdd";
  std::vector<Spectrum> out(K);
  // One matrix per task: each thread converts its matrix into its own workspace and runs LAPACK single-threaded
  // (OpenBLAS runs single-threaded inside these threads), so the stack is spread over LibTorch's threads.
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    thread_local LapackWork w;
    size_workspace(w, rows, cols, reduce);
    for (int64_t i = begin; i < end; ++i) {
      Spectrum& s = out[i];
      s.rows = m;
      s.cols = n;
      const bool finite = src.scalar_type() == torch::kFloat
                              ? load_tall(w, src.data_ptr<float>() + i * m * n, m, n)
                              : load_tall(w, src.data_ptr<double>() + i * m * n, m, n);
      if (!finite) {
        s.status = SpectrumStatus::numerical_issue;
        s.method = "none";
        continue;
      }
      s.method = method;
      if (tall_singular_values(w, rows, cols, reduce) > 0) s.status = SpectrumStatus::not_converged;
      s.values.assign(w.s.begin(), w.s.end());
    }
  });
  return out;
}

std::vector<Spectrum> singular_values_gram_batched(const torch::Tensor& matrices) {
  const auto dims = check_stack(matrices, "singular_values_gram_batched");
  const int64_t K = dims[0], m = dims[1], n = dims[2], k = std::min(m, n);
  auto src = matrices.detach().to(torch::kCPU);
  // Half-precision types widen exactly to float32; float32 and float64 are read as they are, in place when each
  // row is contiguous (a head of a (B, N, h, d) tensor viewed as (B, h, N, d): no copy of the probe).
  if (src.scalar_type() != torch::kFloat && src.scalar_type() != torch::kDouble) src = src.to(torch::kFloat32);
  if (n > 1 && src.stride(-1) != 1) src = src.contiguous();
  const int64_t lda = m > 1 ? src.stride(-2) : n;
  // The element offset of matrix i: its index unravelled over the leading sizes, times their strides.
  std::vector<int64_t> offset(static_cast<size_t>(K), 0);
  for (int64_t i = 0; i < K; ++i)
    for (int64_t d = src.dim() - 3, rest = i; d >= 0; --d) {
      offset[i] += rest % src.size(d) * src.stride(d);
      rest /= src.size(d);
    }
  const gram_kernels::Table& kernels = gram_table();
  std::vector<Spectrum> out(K);
  // Each thread takes a contiguous run of matrices: the float64 Gram matrix of each (gram_kernels.h, panels of A
  // widened in cache), reduced to tridiagonal form by Householder reflectors (dsytd2's algorithm) — the two steps of
  // LAPACK's dsyevd with values only before dsterf — and then the eigenvalues of all its tridiagonals at once
  // (tridiagonal.h: dsterf's iteration, several matrices interleaved). Every matrix gets the same arithmetic
  // whichever thread runs it.
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    thread_local GramWork w;
    size_gram_workspace(w, kernels, m, n, end - begin);
    std::vector<int64_t> index;  // the matrices of this run whose tridiagonal form is in w.d, w.e, in order
    for (int64_t i = begin; i < end; ++i) {
      Spectrum& s = out[i];
      s.rows = m;
      s.cols = n;
      const bool finite =
          src.scalar_type() == torch::kFloat
              ? kernels.gram_f32(src.data_ptr<float>() + offset[i], m, n, lda, w.g.data(), w.scratch.data())
              : kernels.gram_f64(src.data_ptr<double>() + offset[i], m, n, lda, w.g.data(), w.scratch.data());
      // A float64 input can overflow its Gram matrix (|a| ≳ 1e154), so only its sums are checked; a float32 one
      // cannot (≤ 3.4e38² · 2³¹ ≪ 1e308).
      const bool overflow = src.scalar_type() == torch::kDouble && finite &&
                            !std::all_of(w.g.begin(), w.g.end(), [](double x) { return std::isfinite(x); });
      if (!finite || overflow) {
        s.status = SpectrumStatus::numerical_issue;
        s.method = "none";
        continue;
      }
      const size_t slot = index.size();
      kernels.tridiagonalize(k, w.g.data(), w.d.data() + slot * k, w.e.data() + slot * k, w.scratch.data());
      index.push_back(i);
    }
    tridiagonal_eigenvalues(static_cast<int64_t>(index.size()), static_cast<int>(k), w.d.data(), w.e.data(),
                            w.info.data());
    for (size_t j = 0; j < index.size(); ++j) {
      Spectrum& s = out[index[j]];
      s.method = "gram+syevd";
      if (w.info[j] != 0) {
        s.status = SpectrumStatus::not_converged;
        continue;
      }
      // Ascending eigenvalues → descending σ (√ is monotone; rounding can leave the smallest λ slightly negative).
      const double* lambda = w.d.data() + j * k;
      s.values.resize(k);
      for (int64_t t = 0; t < k; ++t) s.values[t] = std::sqrt(std::max(lambda[k - 1 - t], 0.0));
    }
  });
  return out;
}

namespace gram_kernels {
const Table& table_for(const char* capability) {
  const std::string c = capability;
#if defined(__x86_64__) || defined(_M_X64)
  if (c == "AVX512") return AVX512::table();
  if (c == "AVX2") return AVX2::table();
#endif
  return DEFAULT::table();
}
}  // namespace gram_kernels

std::vector<Spectrum> singular_values_gram_torch(const torch::Tensor& matrices) {
  const auto dims = check_stack(matrices, "singular_values_gram_torch");
  const int64_t K = dims[0], m = dims[1], n = dims[2];
  const int64_t k = std::min(m, n);
  // On its own device; float32 values are exact in float64.
  auto a = matrices.detach().reshape({K, m, n}).to(torch::kFloat64);
  // A matrix with a non-finite entry gets its status; a zero matrix in its place keeps the others' solve well defined.
  auto finite = torch::isfinite(a).flatten(1).all(1);
  a = a.masked_fill(finite.logical_not().view({K, 1, 1}), 0.0);
  auto gram = m >= n ? torch::matmul(a.transpose(1, 2), a) : torch::matmul(a, a.transpose(1, 2));  // (K, k, k)
  std::vector<SpectrumStatus> status(K, SpectrumStatus::ok);
  torch::Tensor lambda;
  try {
    lambda = torch::linalg_eigvalsh(gram);  // ascending
  } catch (const c10::Error&) {
    // The batched solver reports a failure for the whole stack: solve one by one to find the matrices it concerns.
    lambda = torch::zeros({K, k}, gram.options());
    for (int64_t i = 0; i < K; ++i) {
      try {
        lambda[i] = torch::linalg_eigvalsh(gram[i]);
      } catch (const c10::Error&) {
        status[i] = SpectrumStatus::not_converged;
      }
    }
  }
  auto sigma = lambda.flip({-1}).clamp_min(0.0).sqrt().to(torch::kCPU).contiguous();
  auto finite_cpu = finite.to(torch::kCPU);
  const double* sv = sigma.data_ptr<double>();
  const bool* ok = finite_cpu.data_ptr<bool>();
  std::vector<Spectrum> out(K);
  for (int64_t i = 0; i < K; ++i) {
    Spectrum& s = out[i];
    s.rows = m;
    s.cols = n;
    if (!ok[i]) {
      s.status = SpectrumStatus::numerical_issue;
      s.method = "none";
      continue;
    }
    s.method = "gram+eigvalsh";
    s.status = status[i];
    if (status[i] == SpectrumStatus::ok) s.values.assign(sv + i * k, sv + (i + 1) * k);
  }
  return out;
}

const char* spectra_method_name(SpectraMethod m) { return m == SpectraMethod::gram ? "gram" : "exact"; }

SpectraMethod spectra_method_from_name(const std::string& name) {
  if (name == "gram") return SpectraMethod::gram;
  if (name == "exact") return SpectraMethod::exact;
  TORCH_CHECK(false, "unknown spectra method '", name, "' (expected gram or exact)");
}

std::vector<Spectrum> batched_spectra(const torch::Tensor& matrices, SpectraMethod method) {
  if (method == SpectraMethod::exact) return singular_values_batched(matrices);
  return matrices.device().is_cpu() ? singular_values_gram_batched(matrices) : singular_values_gram_torch(matrices);
}

const char* batched_spectra_label(SpectraMethod method, const torch::Device& device) {
  if (method == SpectraMethod::exact) return "qr-gesdd";
  return device.is_cpu() ? "gram-syevd" : "gram-eigvalsh";
}

Spectrum top_singular_values(const torch::Tensor& matrix, int64_t k) {
  TORCH_CHECK(matrix.dim() == 2, "top_singular_values: expected a 2-D matrix, got shape ", matrix.sizes());
  const int64_t small = std::min(matrix.size(0), matrix.size(1));
  TORCH_CHECK(k >= 1 && k <= small, "top_singular_values: k must be in [1, ", small, "], got ", k);
  if (small <= 64 || k >= small / 2) {  // a full SVD is cheap or Lanczos gains nothing
    auto s = singular_values(matrix);
    s.values.resize(std::min<size_t>(s.values.size(), static_cast<size_t>(k)));
    return s;
  }
  RowMatrix a = to_eigen(matrix, "top_singular_values");
  Spectrum s;
  s.rows = a.rows();
  s.cols = a.cols();
  s.method = "lanczos";
  if (!all_finite(a)) {
    s.status = SpectrumStatus::numerical_issue;
    return s;
  }
  AugmentedOp op(a);
  const Eigen::Index ncv = std::min<Eigen::Index>(op.rows(), std::max<Eigen::Index>(2 * k + 1, 20));
  Spectra::SymEigsSolver<AugmentedOp> solver(op, k, ncv);
  solver.init();
  solver.compute(Spectra::SortRule::LargestAlge, 1000, 1e-12);
  if (solver.info() != Spectra::CompInfo::Successful) {
    s.status = solver.info() == Spectra::CompInfo::NotConverging ? SpectrumStatus::not_converged
                                                                  : SpectrumStatus::numerical_issue;
  }
  if (solver.info() == Spectra::CompInfo::Successful || solver.info() == Spectra::CompInfo::NotConverging) {
    const Eigen::VectorXd ev = solver.eigenvalues();
    for (Eigen::Index i = 0; i < ev.size(); ++i) s.values.push_back(std::max(0.0, ev[i]));
    std::sort(s.values.begin(), s.values.end(), std::greater<double>());
  }
  return s;
}

}  // namespace rala

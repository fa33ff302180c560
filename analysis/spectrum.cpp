#include "analysis/spectrum.h"

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <Spectra/SymEigsSolver.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

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

std::vector<Spectrum> singular_values_batched(const torch::Tensor& matrices) {
  TORCH_CHECK(matrices.dim() == 3, "singular_values_batched: expected a (K, m, n) stack, got shape ", matrices.sizes());
  const int64_t K = matrices.size(0), m = matrices.size(1), n = matrices.size(2);
  TORCH_CHECK(m > 0 && n > 0, "singular_values_batched: matrices are empty, shape ", matrices.sizes());
  auto work = matrices.detach().to(torch::kCPU, torch::kFloat64);
  std::vector<Spectrum> out(K);
  if (!torch::isfinite(work).all().item<bool>()) {  // per matrix, so each non-finite one gets its own status
    at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = singular_values(matrices[i]);
    });
    return out;
  }
  const bool reduce = std::max(m, n) > 2 * std::min(m, n);
  if (reduce && m < n) work = work.transpose(1, 2);  // σ(A) = σ(Aᵀ): make them tall
  auto values = torch::empty({K, std::min(m, n)}, torch::kFloat64);
  // LAPACK works matrix by matrix (one thread each here: OpenBLAS runs single-threaded inside LibTorch's threads), so
  // the stack is split over LibTorch's threads; every matrix still gets exactly the same LAPACK calls.
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    auto part = work.slice(0, begin, end);
    if (reduce) part = std::get<1>(torch::linalg_qr(part, "r")).contiguous();  // (k, min, min) upper triangular
    // LAPACK's divide-and-conquer SVD (gesdd, values only).
    values.slice(0, begin, end).copy_(torch::linalg_svdvals(part));  // (k, min(m, n)) descending
  });
  const int64_t k = values.size(1);
  const double* v = values.data_ptr<double>();
  for (int64_t i = 0; i < K; ++i) {
    out[i].rows = m;
    out[i].cols = n;
    out[i].method = reduce ? "qr+gesdd" : "gesdd";
    out[i].values.assign(v + i * k, v + (i + 1) * k);
    if (!std::all_of(out[i].values.begin(), out[i].values.end(), [](double x) { return std::isfinite(x); }))
      out[i].status = SpectrumStatus::numerical_issue;
  }
  return out;
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

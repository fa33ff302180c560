#pragma once
/// \file spectrum.h
/// Singular values of a probe matrix, in float64, without ever forming a Gram matrix (AᵀA loses every singular value
/// below √eps·σ_max — exactly where rank is decided).
///   full:  Eigen's BDCSVD; for tall matrices (rows > 2·cols) a Householder QR first and the SVD of R (same σ).
///   top-k: Spectra's Lanczos (SymEigsSolver) on the symmetric augmented operator [[0, A], [Aᵀ, 0]], whose largest
///          eigenvalues are σ_1…σ_k — for N×N attention maps at high resolution, where a full SVD is too slow.
/// Numerical outcomes are a status in the result, never an exception; caller mistakes (not 2-D, empty) throw.
///
/// Usage:
///   auto s = rala::singular_values(kv[0][0]);           // s.values descending, s.status
///   auto t = rala::top_singular_values(attention[0][0], 16);

#include <torch/torch.h>

#include <string>
#include <vector>

namespace rala {

enum class SpectrumStatus { ok, not_converged, numerical_issue };
const char* spectrum_status_name(SpectrumStatus s);

struct Spectrum {
  std::vector<double> values;  ///< descending, non-negative; min(rows, cols) entries (full) or k (top-k)
  int64_t rows = 0, cols = 0;
  SpectrumStatus status = SpectrumStatus::ok;
  std::string method;          ///< "bdcsvd", "qr+bdcsvd", "lanczos"; batched: "gesdd", "qr+gesdd"; "none" (non-finite)
  bool complete() const { return static_cast<int64_t>(values.size()) == std::min(rows, cols); }
};

/// All singular values of a 2-D tensor (any float dtype; computed in float64).
Spectrum singular_values(const torch::Tensor& matrix);
/// All singular values of each matrix of a (K, m, n) stack, in float64 through LAPACK called directly (no tensor ops
/// per matrix): each matrix is converted to a tall column-major float64 matrix (its transpose when m < n), reduced
/// by Householder QR (dgeqrf) to its triangular factor when rows > 2·cols, then the divide-and-conquer SVD (dgesdd,
/// values only) — the same two steps as singular_values(). The matrices are spread over LibTorch's threads, one
/// matrix per task with a per-thread workspace; every matrix gets the same LAPACK calls whichever thread runs it.
/// A matrix with a non-finite entry gets status numerical_issue and no values; the others are unaffected.
std::vector<Spectrum> singular_values_batched(const torch::Tensor& matrices);
/// The k largest singular values (1 ≤ k < min(rows, cols)); falls back to the full SVD when the matrix is small.
Spectrum top_singular_values(const torch::Tensor& matrix, int64_t k);

}  // namespace rala

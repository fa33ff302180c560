#pragma once
/// \file spectrum.h
/// Singular values of probe matrices, in float64.
///   single matrix (singular_values): Eigen's BDCSVD; for tall matrices (rows > 2·cols) a Householder QR first and the
///          SVD of R (same σ). Never a Gram matrix: accurate to ~1e-16·σ_1 absolute, for any input.
///   batched, SpectraMethod::gram (the recorder's default): σ_i = √λ_i of the float64 Gram matrix AᵀA (or AAᵀ, the
///          smaller side), its eigenvalues by LAPACK's dsyevd algorithm for values only: Householder reduction to
///          tridiagonal form (dsytd2's), then dsterf's root-free QL run on several matrices interleaved (tridiagonal.h,
///          bit-identical to dsterf). The Gram matrix and the reduction are our own cache-resident kernels
///          (gram_kernels.h, per CPU capability); tested against a long-double oracle, a dense eigen-solver and LAPACK's
///          dsyrk + dsyevd within their rounding bounds. The Gram matrix squares the condition number, so σ_i is
///          accurate to ~eps64·σ_1²/σ_i, i.e. ≈ 1e-8·σ_1 absolute at the bottom
///          (|σ̂_i² − σ_i²| ≲ eps64·σ_1²): for float32 probes this is far below both the rounding noise of the data
///          (≈ 1e-7·σ_1) and numpy's rank threshold σ_1·max(m,n)·2⁻²³ ≥ 7.6e-6·σ_1, so ranks agree with the exact path
///          unless a σ_i lies within that error of the threshold (README "Rank analysis").
///   batched, SpectraMethod::exact: Householder QR (dgeqrf) of tall matrices, then the divide-and-conquer SVD
///          (dgesdd), values only — backward stable, ~1e-16·σ_1 absolute.
///   top-k: Spectra's Lanczos (SymEigsSolver) on the symmetric augmented operator [[0, A], [Aᵀ, 0]], whose largest
///          eigenvalues are σ_1…σ_k — for N×N attention maps at high resolution, where a full SVD is too slow.
/// Numerical outcomes are a status in the result, never an exception; caller mistakes (not 2-D, empty) throw.
///
/// Usage:
///   auto s = rala::singular_values(kv[0][0]);           // s.values descending, s.status
///   auto t = rala::top_singular_values(attention[0][0], 16);
///   auto v = rala::batched_spectra(stack, rala::SpectraMethod::gram);   // (K, m, n) on any device

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
  std::string method;  ///< "bdcsvd", "qr+bdcsvd", "lanczos"; batched: "gesdd", "qr+gesdd", "gram+syevd",
                       ///< "gram+eigvalsh"; "none" (non-finite)
  bool complete() const { return static_cast<int64_t>(values.size()) == std::min(rows, cols); }
};

/// All singular values of a 2-D tensor (any float dtype; computed in float64).
Spectrum singular_values(const torch::Tensor& matrix);
/// All singular values of each matrix of a (K, m, n) stack (or any (..., m, n): the leading dimensions are flattened
/// in row-major order, as everywhere below), in float64 through LAPACK called directly (no tensor ops
/// per matrix): each matrix is converted to a tall column-major float64 matrix (its transpose when m < n), reduced
/// by Householder QR (dgeqrf) to its triangular factor when rows > 2·cols, then the divide-and-conquer SVD (dgesdd,
/// values only) — the same two steps as singular_values(). The matrices are spread over LibTorch's threads, one
/// matrix per task with a per-thread workspace; every matrix gets the same LAPACK calls whichever thread runs it.
/// A matrix with a non-finite entry gets status numerical_issue and no values; the others are unaffected.
std::vector<Spectrum> singular_values_batched(const torch::Tensor& matrices);
/// How a stack of probe matrices gets its spectra: `gram` (float64 Gram matrix + symmetric eigenvalues; fast, accurate
/// to ~1e-8·σ_1 absolute) or `exact` (QR + SVD; accurate to ~1e-16·σ_1 absolute).
enum class SpectraMethod { gram, exact };
/// "gram" | "exact".
const char* spectra_method_name(SpectraMethod m);
/// Parses "gram" | "exact"; throws a one-line error naming the value and the valid ones.
SpectraMethod spectra_method_from_name(const std::string& name);

/// The σ of each matrix of a (K, m, n) stack from its float64 Gram matrix, on the CPU without library calls per
/// matrix, reading each matrix in place when its rows are contiguous (e.g. the heads of a (B, N, h, d) tensor viewed
/// as (B, h, N, d)): G = AᵀA (m ≥ n) or AAᵀ (m < n) formed from panels of A widened to float64 in cache (float32 products are
/// exact in float64; no widened copy of the matrix), reduced to tridiagonal form by Householder reflectors in place
/// (gram_kernels.h), and the eigenvalues of each thread's tridiagonals found together by dsterf's iteration
/// (tridiagonal_eigenvalues) — dsyevd's steps for values only; σ_i = √max(λ_i, 0), descending. Half-precision
/// input is widened to float32 (exactly). A float64 input whose Gram matrix overflows (|a| ≳ 1e154) is a numerical_issue.
/// Threads as in singular_values_batched (bit-identical on any thread count). Method "gram+syevd"; non-finite input:
/// status numerical_issue, no values; the iteration not converged (30·k sweeps): status not_converged, no values.
std::vector<Spectrum> singular_values_gram_batched(const torch::Tensor& matrices);
/// The same Gram formulation as tensor operations on the stack's own device (the path of a CUDA run): a batched float64
/// matmul for the (K, k, k) Gram stack and one linalg_eigvalsh on it. Method "gram+eigvalsh"; statuses as above.
std::vector<Spectrum> singular_values_gram_torch(const torch::Tensor& matrices);
/// The spectra of a (K, m, n) stack by `method`: gram → singular_values_gram_batched for CPU tensors,
/// singular_values_gram_torch on another device; exact → singular_values_batched (on the CPU).
std::vector<Spectrum> batched_spectra(const torch::Tensor& matrices, SpectraMethod method);
/// The name a results file records for the spectra batched_spectra computes for a stack on `device`: "gram-syevd"
/// (LAPACK), "gram-eigvalsh" (tensor operations on a device), "qr-gesdd" (exact; QR only of tall matrices).
const char* batched_spectra_label(SpectraMethod method, const torch::Device& device);

/// The k largest singular values (1 ≤ k < min(rows, cols)); falls back to the full SVD when the matrix is small.
Spectrum top_singular_values(const torch::Tensor& matrix, int64_t k);

}  // namespace rala

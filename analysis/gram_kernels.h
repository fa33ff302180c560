#pragma once
/// \file gram_kernels.h
/// Internal: the two float64 kernels of the Gram spectra (spectrum.cpp, singular_values_gram_batched), written for
/// matrices that fit the L1/L2 cache, so that a batch of small probes costs arithmetic rather than library calls:
///   gram         — the k×k Gram matrix (k = min(m, n)) of an m×n float32/float64 matrix (unit column stride, rows
///                  `lda` elements apart, so a head of a (B, N, h, d) tensor is read in place), AᵀA when m ≥ n and
///                  AAᵀ otherwise, in float64 (float32 products are exact in float64): a panel of rows is widened into
///                  a cache-resident buffer, then 4×(TJ vectors) register tiles of the upper triangle sum blocks of
///                  kSumBlock rows and add them to the matrix; the lower triangle is mirrored. No widened copy of the
///                  whole matrix, no BLAS call.
///   tridiagonalize — Householder reduction of that symmetric matrix to tridiagonal form, LAPACK dsytd2's algorithm
///                  (dlarfg reflectors, p = τBv, w = p − ½τ(pᵀv)v, B ← B − (vwᵀ + wvᵀ)) on full storage kept
///                  exactly symmetric, with vector-wide rows, in place. Its d, e go to tridiagonal.h's eigenvalue iteration (dsterf's).
/// Compiled once per CPU capability (DEFAULT, AVX2, AVX512) like attention_variants/fused_kernels.cpp, each copy in
/// its own namespace; spectrum.cpp uses the copy of the capability fused::capability() names.
///
/// Storage: the Gram matrix is kp×kp, row-major, kp = padded(k) (k rounded up to the vector width); entries outside
/// k×k are zero and stay zero. `scratch` holds scratch_doubles(kp) doubles.

#include <cstdint>

namespace rala::gram_kernels {

struct Table {
  const char* name;
  int64_t lanes;  ///< doubles per vector register of this capability
  /// Writes the Gram matrix (full, symmetric, zero padded) to g; false if an entry of a is not finite (g then holds
  /// whatever the sums gave).
  bool (*gram_f32)(const float* a, int64_t m, int64_t n, int64_t lda, double* g, double* scratch);
  bool (*gram_f64)(const double* a, int64_t m, int64_t n, int64_t lda, double* g, double* scratch);
  /// Reduces the symmetric k×k matrix g (as written by gram) to tridiagonal form: diagonal d[0..k), off-diagonal
  /// e[0..k−1) (e[k−1] = 0). g is overwritten. Entries must be finite.
  void (*tridiagonalize)(int64_t k, double* g, double* d, double* e, double* scratch);
};

inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }
/// kp: k rounded up to the capability's vector width.
inline int64_t padded(const Table& t, int64_t k) { return round_up(k, t.lanes); }
/// Rows of A widened per panel: about 32 KiB of float64, so the panel stays in L1 while every tile reads it.
inline int64_t panel_rows(int64_t kp) { return 4096 / kp > 8 ? 4096 / kp : 8; }
/// Rows of a panel summed in registers before they are added to the Gram matrix (blocked summation: the rounding
/// error of an entry grows with the block length plus the number of blocks, not with m).
constexpr int64_t kSumBlock = 64;
inline int64_t scratch_doubles(int64_t kp) {
  const int64_t panel = panel_rows(kp) * kp;
  return panel > 2 * kp ? panel : 2 * kp;
}

namespace DEFAULT {
const Table& table();
}
#if defined(__x86_64__) || defined(_M_X64)
namespace AVX2 {
const Table& table();
}
namespace AVX512 {
const Table& table();
}
#endif

/// The copy for a capability name (DEFAULT, AVX2, AVX512; as fused::capability() reports).
const Table& table_for(const char* capability);

}  // namespace rala::gram_kernels

// The Gram spectra's float64 kernels (see gram_kernels.h). Compiled once per CPU capability: CMake defines
// CPU_CAPABILITY (ATen's inline namespace of at::vec), CPU_CAPABILITY_AVX2 / CPU_CAPABILITY_AVX512 where they apply,
// and RALA_CAPABILITY (our namespace), with the matching -m flags.
#include "analysis/gram_kernels.h"

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>

#ifndef RALA_CAPABILITY
#error "RALA_CAPABILITY must name the capability this file is compiled for (DEFAULT, AVX2, AVX512)"
#endif

namespace rala::gram_kernels {
namespace RALA_CAPABILITY {
namespace {

using V = at::vec::Vectorized<double>;
constexpr int64_t L = V::size();
/// Register tile of the Gram matrix: TI rows × TJ vectors of accumulators (16 of 32 zmm on AVX-512; 8 of 16 ymm).
constexpr int TI = 4;
constexpr int TJ = L >= 8 ? 4 : 2;
static_assert(L % TI == 0 || TI % L == 0, "tiles must align with vectors");

// ---- Gram matrix ----------------------------------------------------------------------------------------------------

/// Rows r0 … r0+R of the m×n A (m ≥ n, k = n; row i at a + i·lda) widened into the panel (R × kp, zero padded).
/// False if an entry is not finite (x − x ≠ 0 exactly for ±inf and NaN; an integer AND, so the loop vectorises).
template <typename T>
bool widen_rows(const T* a, int64_t n, int64_t lda, int64_t r0, int64_t R, int64_t kp, double* panel) {
  int finite = 1;
  for (int64_t r = 0; r < R; ++r) {
    const T* src = a + (r0 + r) * lda;
    double* dst = panel + r * kp;
    for (int64_t c = 0; c < n; ++c) {
      const double v = static_cast<double>(src[c]);
      dst[c] = v;
      finite &= (v - v == 0.0);
    }
    for (int64_t c = n; c < kp; ++c) dst[c] = 0.0;
  }
  return finite != 0;
}

/// Columns c0 … c0+R of the m×n A (m < n, k = m; row i at a + i·lda) as the panel's rows (the panel holds a block
/// of Aᵀ).
template <typename T>
bool widen_columns(const T* a, int64_t m, int64_t lda, int64_t c0, int64_t R, int64_t kp, double* panel) {
  int finite = 1;
  for (int64_t i = 0; i < m; ++i) {
    const T* src = a + i * lda + c0;
    for (int64_t r = 0; r < R; ++r) {
      const double v = static_cast<double>(src[r]);
      panel[r * kp + i] = v;
      finite &= (v - v == 0.0);
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = m; i < kp; ++i) panel[r * kp + i] = 0.0;
  return finite != 0;
}

/// g[i0 … i0+TI)[j0 … j0+NJ·L) += Σ_r panel[r][i]·panel[r][j], accumulators in registers across each block of rows.
template <int NJ>
inline void gram_tile(const double* panel, int64_t R, int64_t kp, int64_t i0, int64_t j0, double* g) {
  for (int64_t r0 = 0; r0 < R; r0 += kSumBlock) {
    const int64_t r1 = std::min(R, r0 + kSumBlock);
    V acc[TI][NJ];
    for (int t = 0; t < TI; ++t)
      for (int q = 0; q < NJ; ++q) acc[t][q] = V(0.0);
    for (int64_t r = r0; r < r1; ++r) {
      const double* row = panel + r * kp;
      V b[NJ];
      for (int q = 0; q < NJ; ++q) b[q] = V::loadu(row + j0 + q * L);
      for (int t = 0; t < TI; ++t) {
        const V a(row[i0 + t]);
        for (int q = 0; q < NJ; ++q) acc[t][q] = at::vec::fmadd(a, b[q], acc[t][q]);
      }
    }
    for (int t = 0; t < TI; ++t)
      for (int q = 0; q < NJ; ++q) {
        double* out = g + (i0 + t) * kp + j0 + q * L;
        (V::loadu(out) + acc[t][q]).store(out);
      }
  }
}

template <typename T>
bool gram_impl(const T* a, int64_t m, int64_t n, int64_t lda, double* g, double* panel) {
  const bool tall = m >= n;
  const int64_t k = std::min(m, n), inner = std::max(m, n), kp = round_up(k, L), R = panel_rows(kp);
  std::fill(g, g + kp * kp, 0.0);
  int finite = 1;
  // Panels in a fixed order: every entry is the same sum in the same order whichever thread computes the matrix.
  for (int64_t r0 = 0; r0 < inner; r0 += R) {
    const int64_t rows = std::min(R, inner - r0);
    finite &= tall ? widen_rows(a, n, lda, r0, rows, kp, panel) : widen_columns(a, m, lda, r0, rows, kp, panel);
    // The tiles that touch the upper triangle: row block i0 needs columns from its own vector on.
    for (int64_t i0 = 0; i0 < kp; i0 += TI)
      for (int64_t j0 = i0 / L * L; j0 < kp; j0 += TJ * L) {
        switch (std::min<int64_t>(TJ, (kp - j0) / L)) {
          case 1: gram_tile<1>(panel, rows, kp, i0, j0, g); break;
          case 2: gram_tile<2>(panel, rows, kp, i0, j0, g); break;
          case 3: gram_tile<TJ >= 3 ? 3 : 1>(panel, rows, kp, i0, j0, g); break;
          default: gram_tile<TJ>(panel, rows, kp, i0, j0, g); break;
        }
      }
  }
  for (int64_t i = 1; i < k; ++i)
    for (int64_t j = 0; j < i; ++j) g[i * kp + j] = g[j * kp + i];
  return finite != 0;
}

bool gram_f32(const float* a, int64_t m, int64_t n, int64_t lda, double* g, double* scratch) {
  return gram_impl(a, m, n, lda, g, scratch);
}
bool gram_f64(const double* a, int64_t m, int64_t n, int64_t lda, double* g, double* scratch) {
  return gram_impl(a, m, n, lda, g, scratch);
}

// ---- Householder tridiagonalisation ---------------------------------------------------------------------------------

/// Σ x[i]·y[i] over [0, s): two vector accumulators, then the scalar tail (not dependent chains of s FMAs).
double dot(const double* x, const double* y, int64_t s) {
  V acc0(0.0), acc1(0.0);
  int64_t i = 0;
  for (; i + 2 * L <= s; i += 2 * L) {
    acc0 = at::vec::fmadd(V::loadu(x + i), V::loadu(y + i), acc0);
    acc1 = at::vec::fmadd(V::loadu(x + i + L), V::loadu(y + i + L), acc1);
  }
  double lanes[L];
  (acc0 + acc1).store(lanes);
  double sum = 0.0;
  for (int64_t q = 0; q < L; ++q) sum += lanes[q];
  for (; i < s; ++i) sum += x[i] * y[i];
  return sum;
}

/// ‖x‖₂ of x[0 … s) as LAPACK's dnrm2 gives it for finite x: the plain sum of squares, or a scaled one when that sum
/// would underflow or overflow.
double norm2(const double* x, int64_t s) {
  const double ss = dot(x, x, s);
  constexpr double lo = 1e-280, hi = 1e280;
  if (ss > lo && ss < hi) return std::sqrt(ss);
  double scale = 0.0;
  for (int64_t i = 0; i < s; ++i) scale = std::max(scale, std::abs(x[i]));
  if (scale == 0.0) return 0.0;
  double sum = 0.0;
  for (int64_t i = 0; i < s; ++i) sum += (x[i] / scale) * (x[i] / scale);
  return scale * std::sqrt(sum);
}

/// p[c0 … kp) = τ·Σ_{l ∈ [l0, l1)} v[l]·B[l][c0 … kp), NV vectors at a time with the sums in registers.
template <int NV>
inline void symv_block(const double* b, int64_t kp, int64_t l0, int64_t l1, int64_t c, const double* v, double tau,
                       double* p) {
  V acc[NV];
  for (int q = 0; q < NV; ++q) acc[q] = V(0.0);
  for (int64_t l = l0; l < l1; ++l) {
    const V vl(v[l]);
    const double* row = b + l * kp + c;
    for (int q = 0; q < NV; ++q) acc[q] = at::vec::fmadd(vl, V::loadu(row + q * L), acc[q]);
  }
  const V t(tau);
  for (int q = 0; q < NV; ++q) (acc[q] * t).store(p + c + q * L);
}

/// dsytd2 ("L" on the row-major full matrix, so row j right of the diagonal is column j below it): for each j the
/// reflector H = I − τvvᵀ (dlarfg) that maps a[j][j+1 …] onto βe₁, then the trailing block B ← HBH. Every vector
/// loop runs from the vector holding column j+1 to kp: there v and w are zero left of j+1 and right of k, so the
/// reduced part and the padding keep their values.
void tridiagonalize(int64_t k, double* a, double* d, double* e, double* scratch) {
  const int64_t kp = round_up(k, L);
  double* v = scratch;
  double* p = scratch + kp;
  for (int64_t j = 0; j + 1 < k; ++j) {
    const double* row = a + j * kp;
    d[j] = row[j];
    double alpha = row[j + 1];
    const double xnorm = norm2(row + j + 2, k - j - 2);
    if (xnorm == 0.0) {  // H = I (dlarfg's τ = 0, also when only one entry is left)
      e[j] = alpha;
      continue;
    }
    // dlarfg: β = −sign(α)·√(α² + ‖x‖²), rescaled first while |β| < safmin (at most 20 times, as LAPACK).
    const double safmin = std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
    double beta = -std::copysign(std::hypot(alpha, xnorm), alpha);
    double x_scale = 1.0;
    int knt = 0;
    if (std::abs(beta) < safmin) {
      do {
        ++knt;
        x_scale /= safmin;
        beta /= safmin;
        alpha /= safmin;
      } while (std::abs(beta) < safmin && knt < 20);
      beta = -std::copysign(std::hypot(alpha, xnorm * x_scale), alpha);
    }
    const double tau = (beta - alpha) / beta;
    const double scal = 1.0 / (alpha - beta);
    for (int knt_i = 0; knt_i < knt; ++knt_i) beta *= safmin;
    e[j] = beta;

    const int64_t c0 = (j + 1) / L * L;
    std::fill(v, v + kp, 0.0);
    v[j + 1] = 1.0;
    // x·x_scale first, as dlarfg scales x before 1/(α − β): x_scale·scal alone can overflow.
    for (int64_t c = j + 2; c < k; ++c) v[c] = (row[c] * x_scale) * scal;
    // p = τ·Bv over the rows of B (B symmetric, so its rows are its columns).
    int64_t c = c0;
    for (; c + 8 * L <= kp; c += 8 * L) symv_block<8>(a, kp, j + 1, k, c, v, tau, p);
    switch ((kp - c) / L) {
      case 0: break;
      case 1: symv_block<1>(a, kp, j + 1, k, c, v, tau, p); break;
      case 2: symv_block<2>(a, kp, j + 1, k, c, v, tau, p); break;
      case 3: symv_block<3>(a, kp, j + 1, k, c, v, tau, p); break;
      case 4: symv_block<4>(a, kp, j + 1, k, c, v, tau, p); break;
      case 5: symv_block<5>(a, kp, j + 1, k, c, v, tau, p); break;
      case 6: symv_block<6>(a, kp, j + 1, k, c, v, tau, p); break;
      default: symv_block<7>(a, kp, j + 1, k, c, v, tau, p); break;
    }
    for (int64_t i = c0; i <= j; ++i) p[i] = 0.0;  // columns of the reduced part
    // w = p − ½τ(pᵀv)·v, in p.
    const double pv = dot(p + j + 1, v + j + 1, k - j - 1);
    const double K = -0.5 * tau * pv;
    for (int64_t i = j + 1; i < k; ++i) p[i] += K * v[i];
    // B ← B − (vwᵀ + wvᵀ), each entry as b − (v_l·w_c + w_l·v_c) with two products and a sum (no FMA): entry (l, c)
    // and entry (c, l) get the same rounded value, so the full storage stays exactly symmetric, as LAPACK's one
    // triangle is by construction and as p = τBv (which reads rows for columns) assumes. Two FMAs in either order let
    // the halves drift apart by an ulp per step.
    for (int64_t l = j + 1; l < k; ++l) {
      const V vl(v[l]), wl(p[l]);
      double* r = a + l * kp;
      for (int64_t cc = c0; cc < kp; cc += L) {
        const V t = vl * V::loadu(p + cc) + wl * V::loadu(v + cc);
        (V::loadu(r + cc) - t).store(r + cc);
      }
    }
  }
  d[k - 1] = a[(k - 1) * kp + k - 1];
  e[k - 1] = 0.0;
}

#define RALA_STR2(x) #x
#define RALA_STR(x) RALA_STR2(x)

}  // namespace

const Table& table() {
  static const Table t{RALA_STR(RALA_CAPABILITY), L, gram_f32, gram_f64, tridiagonalize};
  return t;
}

}  // namespace RALA_CAPABILITY
}  // namespace rala::gram_kernels

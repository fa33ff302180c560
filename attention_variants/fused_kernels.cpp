// The fused CPU kernels (see fused_kernels.h). Compiled once per CPU capability: CMake defines CPU_CAPABILITY (ATen's
// inline namespace of at::vec), CPU_CAPABILITY_AVX2 / CPU_CAPABILITY_AVX512 where they apply, and
// RALA_FUSED_CAPABILITY (our namespace), with the matching -m flags. Everything here is in that namespace or an
// anonymous one, so the copies do not collide. Arithmetic is float32 throughout (bfloat16 storage is converted on
// load and rounded once on store).
#include "attention_variants/fused_kernels.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#ifndef RALA_FUSED_CAPABILITY
#error "RALA_FUSED_CAPABILITY must name the capability this file is compiled for (DEFAULT, AVX2, AVX512)"
#endif

namespace rala::fused::detail {
namespace RALA_FUSED_CAPABILITY {
namespace {

using BF16 = c10::BFloat16;
using Vec = at::vec::Vectorized<float>;
constexpr int64_t VS = Vec::size();

// ---- loads and stores: float32 or bfloat16 storage, float32 registers ----------------------------------------------

inline Vec load(const float* p) { return Vec::loadu(p); }
inline Vec load(const float* p, int64_t n) { return n >= VS ? Vec::loadu(p) : Vec::loadu(p, n); }
inline Vec load(const BF16* p) {
  Vec v;
  at::vec::load_fp32_from_bf16(p, v);
  return v;
}
inline Vec load(const BF16* p, int64_t n) {
  if (n >= VS) return load(p);
  BF16 tmp[VS];
  for (int64_t i = 0; i < VS; ++i) tmp[i] = i < n ? p[i] : BF16(0.0f);
  return load(tmp);
}
inline void store(float* p, const Vec& v) { v.store(p); }
inline void store(float* p, const Vec& v, int64_t n) {
  if (n >= VS)
    v.store(p);
  else
    v.store(p, static_cast<int>(n));
}
inline void store(BF16* p, const Vec& v, int64_t n = VS) {
  // Round to nearest even, as every bfloat16 result of LibTorch.
  auto b = at::vec::convert_float_bfloat16(v, v);
  b.store(p, static_cast<int>(std::min<int64_t>(n, VS)));
}
inline float to_f(float x) { return x; }
/// Horizontal sum, lanes in order (deterministic).
inline float hsum(const Vec& v) {
  float t[VS];
  v.store(t);
  float s = 0.0f;
  for (int64_t i = 0; i < VS; ++i) s += t[i];
  return s;
}
inline float to_f(BF16 x) { return static_cast<float>(x); }

/// (x0, x1, x2, x3, ...) → (x1, x0, x3, x2, ...).
inline Vec swap_pairs(const Vec& v) {
#if defined(CPU_CAPABILITY_AVX512)
  return Vec(_mm512_permute_ps(__m512(v), 0xB1));
#elif defined(CPU_CAPABILITY_AVX2)
  return Vec(_mm256_permute_ps(__m256(v), 0xB1));
#else
  float a[VS], b[VS];
  v.store(a);
  for (int64_t i = 0; i < VS; i += 2) {
    b[i] = a[i + 1];
    b[i + 1] = a[i];
  }
  return Vec::loadu(b);
#endif
}
/// (−1, +1, −1, +1, ...): rotate_every_two(x) = swap_pairs(x) ⊙ this.
inline Vec pair_sign() {
  float s[VS];
  for (int64_t i = 0; i < VS; ++i) s[i] = (i % 2 == 0) ? -1.0f : 1.0f;
  return Vec::loadu(s);
}

/// Horner evaluation of c[0] + c[1]·w + … + c[n−1]·wⁿ⁻¹.
template <size_t n>
inline Vec horner(const float (&c)[n], const Vec& w) {
  Vec r(c[n - 1]);
  for (size_t i = n - 1; i-- > 0;) r = at::vec::fmadd(r, w, Vec(c[i]));
  return r;
}

/// Exact (erf) GELU, x·Φ(x), without LibTorch's erf: SLEEF's erff (what Vectorized::erf and LibTorch's GELU call)
/// costs ≈ 120 cycles per AVX-512 vector here, 8× an exp, and made the ConvFFN's GELU the largest element-wise cost
/// of the forward. With z = |x|/√2:
///   z ≤ 1:     erf(z) = z·P(z²), P of degree 6;            Φ = ½ ± ½·erf(z)
///   1 < z ≤ 4: erfc(z) = e^(−z²)·R(z − 2.5), R of degree 10; Φ = 1 − ½·erfc(z) (x ≥ 0) or ½·erfc(z) (x < 0)
///   z > 4:     erfc(z) = 0 (< 1.6e-8, below half an ulp of 1)
/// P and R are Chebyshev fits (float64, 4000 nodes; benchmarks/fit_gelu.py regenerates them); e^(−z²) takes z² as
/// hi + lo (an FMA's exact remainder) so the exponent's rounding does not grow with z². Error over 1.9 M points of
/// [−8, 8] against float64 (the script's float32 emulation): ≤ 1.83 ulps of |x| (LibTorch's GELU: 3.77), ≤ 2.10 ulps
/// of the result for x ≥ 0 (LibTorch's: 7.02); the test sweeps every build. NaN propagates, ±∞ as LibTorch's formula.
/// AVX-512 has its own copy in intrinsics (mask registers instead of blend vectors, e^x inline instead of a SLEEF
/// call that spills the caller's registers): 2.3× the portable form's speed there.
namespace gelu_coef {
constexpr float P[] = {1.128379107e+00f, -3.761262596e-01f, 1.128359735e-01f, -2.685432881e-02f,
                       5.189312156e-03f, -8.018855006e-04f, 7.882497448e-05f};
constexpr float R[] = {2.108063549e-01f, -7.434760034e-02f, 2.493820339e-02f, -7.999345660e-03f,
                       2.465982456e-03f, -7.389975945e-04f, 2.129720815e-04f, -5.358580893e-05f,
                       1.435366266e-05f, -6.386085715e-06f, 1.671801783e-06f};
}  // namespace gelu_coef

#if defined(CPU_CAPABILITY_AVX512)
template <size_t n>
inline __m512 horner512(const float (&c)[n], __m512 w) {
  __m512 r = _mm512_set1_ps(c[n - 1]);
  for (size_t i = n - 1; i-- > 0;) r = _mm512_fmadd_ps(r, w, _mm512_set1_ps(c[i]));
  return r;
}
/// e^x for x ∈ [−16, 0] (Cephes expf: 2^k · (1 + r + r²·p(r)), |r| ≤ ½ ln 2; ≤ 1 ulp), inline: a call into SLEEF
/// spills the caller's registers.
inline __m512 exp_small512(__m512 x) {
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  static constexpr float C[] = {5.0000001201e-1f, 1.6666665459e-1f, 4.1665795894e-2f,
                                8.3334519073e-3f, 1.3981999507e-3f, 1.9875691500e-4f};
  const __m512 p = horner512(C, r);
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e, k);
}
inline Vec gelu(const Vec& xv) {
  using namespace gelu_coef;
  const __m512 x = xv, half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(static_cast<float>(M_SQRT1_2)));
  const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __mmask16 small = _mm512_cmp_ps_mask(z, one, _CMP_LE_OQ);
  const __m512 herf = _mm512_mul_ps(half, _mm512_mul_ps(z, horner512(P, _mm512_mul_ps(z, z))));
  const __m512 phi_small = _mm512_mask_blend_ps(pos, _mm512_sub_ps(half, herf), _mm512_add_ps(half, herf));
  if (small == 0xFFFF) return Vec(_mm512_mul_ps(x, phi_small));
  const __m512 zc = _mm512_min_ps(z, _mm512_set1_ps(4.0f));
  const __m512 hi = _mm512_mul_ps(zc, zc);
  const __m512 lo = _mm512_fmsub_ps(zc, zc, hi);
  const __m512 e = _mm512_mul_ps(exp_small512(_mm512_sub_ps(_mm512_setzero_ps(), hi)), _mm512_sub_ps(one, lo));
  const __m512 herfc = _mm512_mul_ps(half, _mm512_mul_ps(e, horner512(R, _mm512_sub_ps(zc, _mm512_set1_ps(2.5f)))));
  __m512 tail = _mm512_mask_blend_ps(pos, herfc, _mm512_sub_ps(one, herfc));
  const __mmask16 big = _mm512_cmp_ps_mask(z, _mm512_set1_ps(4.0f), _CMP_GT_OQ);
  tail = _mm512_mask_blend_ps(big, tail, _mm512_maskz_mov_ps(pos, one));
  return Vec(_mm512_mul_ps(x, _mm512_mask_blend_ps(small, tail, phi_small)));
}
#else
inline Vec gelu(const Vec& x) {
  using namespace gelu_coef;
  const Vec half(0.5f), one(1.0f), zero(0.0f), four(4.0f);
  const Vec z = x.abs() * Vec(static_cast<float>(M_SQRT1_2));
  const Vec pos = x >= zero;
  // Small arguments: ½ ± ½·erf(z).
  const Vec herf = half * (z * horner(P, z * z));
  const Vec small = Vec::blendv(half - herf, half + herf, pos);
  // Large arguments: ½·erfc(z) with e^(−z²) = e^(−hi)·(1 − lo).
  const Vec zc = at::vec::minimum(z, four);
  const Vec hi = zc * zc;
  const Vec lo = at::vec::fmadd(zc, zc, zero - hi);
  const Vec herfc = half * ((zero - hi).exp() * (one - lo) * horner(R, zc - Vec(2.5f)));
  const Vec tail = Vec::blendv(Vec::blendv(herfc, one - herfc, pos), Vec::blendv(zero, one, pos), z > four);
  return x * Vec::blendv(tail, small, z <= one);
}
#endif

/// elu(x) + 1 as LibTorch computes it: (x ≤ 0 ? exp(x) − 1 : x) + 1.
inline Vec elu1(const Vec& x) {
  const Vec zero(0.0f), one(1.0f);
  const Vec neg = x.exp() - one;
  return Vec::blendv(x, neg, x <= zero) + one;
}

template <typename T>
std::vector<float> to_float_vec(const void* p, int64_t n, float fill = 0.0f, int64_t padded = -1) {
  std::vector<float> out(std::max(n, padded), fill);
  if (p != nullptr)
    for (int64_t i = 0; i < n; ++i) out[i] = to_f(static_cast<const T*>(p)[i]);
  return out;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---- LayerNorm of one float row (LibTorch's formula: (x·rstd + (−rstd·mean))·w + b) -------------------------------

template <typename T>
void layer_norm_row(const float* u, int64_t C, const float* w, const float* b, float eps, T* out) {
  Vec sum(0.0f);
  int64_t c = 0;
  for (; c + VS <= C; c += VS) sum = sum + Vec::loadu(u + c);
  float mean = hsum(sum);
  for (; c < C; ++c) mean += u[c];
  mean /= static_cast<float>(C);
  Vec sq(0.0f);
  const Vec mv(mean);
  c = 0;
  for (; c + VS <= C; c += VS) {
    const Vec t = Vec::loadu(u + c) - mv;
    sq = at::vec::fmadd(t, t, sq);
  }
  float var = hsum(sq);
  for (; c < C; ++c) var += (u[c] - mean) * (u[c] - mean);
  var /= static_cast<float>(C);
  const float rstd = 1.0f / std::sqrt(var + eps);
  const Vec scale(rstd), bias(-rstd * mean);
  for (c = 0; c < C; c += VS) {
    const int64_t n = std::min(VS, C - c);
    store(out + c, (load(u + c, n) * scale + bias) * load(w + c, n) + load(b + c, n), n);
  }
}

// ---- rows: u = y + γ ⊙ a, LN(u) ------------------------------------------------------------------------------------

template <typename T>
void rows_impl(const RowsArgs& a) {
  const int64_t C = a.C, Cp = round_up(C, VS);
  const auto gamma = to_float_vec<T>(a.gamma, C, 1.0f, Cp);
  const auto w = to_float_vec<T>(a.ln_w, C, 1.0f, Cp), b = to_float_vec<T>(a.ln_b, C, 0.0f, Cp);
  const T* y = static_cast<const T*>(a.y);
  const T* add = static_cast<const T*>(a.a);
  T* y_out = static_cast<T*>(a.y_out);
  T* n_out = static_cast<T*>(a.n);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
  at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<float> u(Cp);
    for (int64_t r = r0; r < r1; ++r) {
      const T* yr = y + r * C;
      for (int64_t c = 0; c < C; c += VS) {
        const int64_t n = std::min(VS, C - c);
        Vec v = load(yr + c, n);
        if (add != nullptr) v = v + Vec::loadu(gamma.data() + c) * load(add + r * C + c, n);
        v.store(u.data() + c);
        if (y_out != nullptr) store(y_out + r * C + c, v, n);
      }
      if (n_out != nullptr) {
        // bfloat16: normalise the stored (rounded) sum, as the separate LibTorch ops do.
        if constexpr (!std::is_same_v<T, float>)
          for (int64_t c = 0; c < C; ++c) u[c] = static_cast<float>(BF16(u[c]));
        layer_norm_row(u.data(), C, w.data(), b.data(), a.eps, n_out + r * C);
      }
    }
  });
}

// ---- depthwise k×k with residual, optional GELU before and LN after ---------------------------------------------

/// One output row of the depthwise k×k convolution with residual: out[col] = bias + Σ_taps w ⊙ in(shifted) +
/// center[col], for every channel vector. Channel vectors outer, columns inner, so a vector's k² weights and bias stay
/// in registers across the row. K > 0: the taps unrolled at compile time (3, 5, 7); K = 0: k at run time.
/// rows[ky] are zero-padded float rows ((W + 2·pad) × Cp); out is W × Cp.
template <int K>
void dw_row(const float* const* rows, const float* wt, const float* bias, int64_t W, int64_t Cp, int64_t k_rt,
            float* out) {
  const int64_t k = K > 0 ? K : k_rt, pad = k / 2;
  const float* center = rows[pad] + pad * Cp;
  for (int64_t c = 0; c < Cp; c += VS) {
    if constexpr (K > 0) {
      Vec w[K * K];
      for (int t = 0; t < K * K; ++t) w[t] = Vec::loadu(wt + t * Cp + c);
      const Vec b = Vec::loadu(bias + c);
      for (int64_t col = 0; col < W; ++col) {
        Vec acc = b;
        for (int ky = 0; ky < K; ++ky) {
          const float* in = rows[ky] + col * Cp + c;
          for (int kx = 0; kx < K; ++kx) acc = at::vec::fmadd(w[ky * K + kx], Vec::loadu(in + kx * Cp), acc);
        }
        // residual: the (activated) input itself; LibTorch adds conv(x) + x, i.e. the conv result first.
        (acc + Vec::loadu(center + col * Cp + c)).store(out + col * Cp + c);
      }
    } else {
      for (int64_t col = 0; col < W; ++col) {
        Vec acc = Vec::loadu(bias + c);
        for (int64_t ky = 0; ky < k; ++ky) {
          const float* in = rows[ky] + col * Cp + c;
          const float* wk = wt + ky * k * Cp + c;
          for (int64_t kx = 0; kx < k; ++kx) acc = at::vec::fmadd(Vec::loadu(wk + kx * Cp), Vec::loadu(in + kx * Cp), acc);
        }
        (acc + Vec::loadu(center + col * Cp + c)).store(out + col * Cp + c);
      }
    }
  }
}

template <typename T>
void dwconv_impl(const DwArgs& a) {
  const int64_t B = a.B, H = a.H, W = a.W, C = a.C, k = a.k, pad = k / 2;
  const int64_t Cp = round_up(C, VS), Wp = W + 2 * pad;
  // Weights as (tap, Cp) float, zero beyond C.
  std::vector<float> wt(k * k * Cp, 0.0f);
  const T* wsrc = static_cast<const T*>(a.weight);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < k * k; ++t) wt[t * Cp + c] = to_f(wsrc[c * k * k + t]);
  const auto bias = to_float_vec<T>(a.bias, C, 0.0f, Cp);
  const auto lw = to_float_vec<T>(a.ln_w, C, 1.0f, Cp), lb = to_float_vec<T>(a.ln_b, C, 0.0f, Cp);
  const auto row_fn = k == 3 ? dw_row<3> : k == 5 ? dw_row<5> : k == 7 ? dw_row<7> : dw_row<0>;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  T* nout = static_cast<T*>(a.n);
  // Work items: (image, band of rows). Bands only split images when there are fewer images than ~4 per thread.
  const int64_t threads = at::get_num_threads();
  const int64_t bands_per_image = std::min<int64_t>(H, std::max<int64_t>(1, (4 * threads + B - 1) / B));
  const int64_t band = (H + bands_per_image - 1) / bands_per_image;
  const int64_t bands = (H + band - 1) / band;
  at::parallel_for(0, B * bands, 1, [&](int64_t t0, int64_t t1) {
    // Ring of k input rows (activated, float, zero-padded by `pad` pixels each side) + one zero row.
    std::vector<float> ring(static_cast<size_t>((k + 1) * Wp * Cp), 0.0f);
    std::vector<float> yrow(static_cast<size_t>(W * Cp));
    float* zero_row = ring.data() + k * Wp * Cp;
    std::vector<int64_t> slot_row(k, -1);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / bands, r_begin = (t % bands) * band, r_end = std::min(H, r_begin + band);
      std::fill(slot_row.begin(), slot_row.end(), -1);
      const T* xb = x + bi * H * W * C;
      auto row_ptr = [&](int64_t r) -> const float* {
        if (r < 0 || r >= H) return zero_row;
        const int64_t s = r % k;
        float* dst = ring.data() + s * Wp * Cp;
        if (slot_row[s] != r) {
          const T* src = xb + r * W * C;
          for (int64_t col = 0; col < W; ++col) {
            float* d = dst + (col + pad) * Cp;
            for (int64_t c = 0; c < C; c += VS) {
              const int64_t n = std::min(VS, C - c);
              Vec v = load(src + col * C + c, n);
              if (a.gelu_input) v = gelu(v);  // lanes ≥ n load as 0 and gelu(0) = 0
              v.store(d + c);
            }
          }
          slot_row[s] = r;
        }
        return dst;
      };
      for (int64_t r = r_begin; r < r_end; ++r) {
        const float* rows[16];
        for (int64_t ky = 0; ky < k; ++ky) rows[ky] = row_ptr(r + ky - pad);
        row_fn(rows, wt.data(), bias.data(), W, Cp, k, yrow.data());
        for (int64_t col = 0; col < W; ++col) {
          T* yo = y + ((bi * H + r) * W + col) * C;
          float* yr = yrow.data() + col * Cp;
          for (int64_t c = 0; c < C; c += VS) {
            const int64_t n = std::min(VS, C - c);
            store(yo + c, Vec::loadu(yr + c), n);
          }
          if (nout != nullptr) {
            if constexpr (!std::is_same_v<T, float>)
              for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<float>(BF16(yr[c]));
            layer_norm_row(yr, C, lw.data(), lb.data(), a.eps, nout + ((bi * H + r) * W + col) * C);
          }
        }
      }
    }
  });
}

// ---- eval BatchNorm (+ GELU) in place ----------------------------------------------------------------------------

template <typename T>
void affine_impl(const AffineArgs& a) {
  const int64_t C = a.C;
  T* x = static_cast<T*>(a.x);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
  at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* xr = x + r * C;
      for (int64_t c = 0; c < C; c += VS) {
        const int64_t n = std::min(VS, C - c);
        Vec v = load(xr + c, n) * load(a.scale + c, n) + load(a.shift + c, n);
        if (a.gelu) v = gelu(v);
        store(xr + c, v, n);
      }
    }
  });
}

// ---- RALA ------------------------------------------------------------------------------------------------------------

/// RoPE of one d-vector (float) at token n: x·cos + rotate_every_two(x)·sin.
template <typename T>
inline void rope_row(const float* x, int64_t d, const T* sin, const T* cos, float* out) {
  const Vec sgn = pair_sign();
  for (int64_t i = 0; i < d; i += VS) {
    const int64_t n = std::min(VS, d - i);
    const Vec v = load(x + i, n);
    store(out + i, v * load(cos + i, n) + swap_pairs(v) * (load(sin + i, n) * sgn), n);
  }
}

template <typename T>
void rala_prepare_impl(const RalaArgs& a) {
  const int64_t B = a.B, h = a.heads, d = a.d, N = a.H * a.W, ld = a.ld, C = a.C;
  const int64_t BH = B * h, chunks = a.chunks, chunk = a.chunk, P = d + 2;
  const T* all = static_cast<const T*>(a.all);
  const T* sin = static_cast<const T*>(a.sin);
  const T* cos = static_cast<const T*>(a.cos);
  T* kr = static_cast<T*>(a.kr);
  const int64_t dp = round_up(d, VS);
  auto token = [&](int64_t bh, int64_t n, int64_t c0) { return all + ((bh / h) * N + n) * ld + c0 + (bh % h) * d; };
  // A: per-chunk Σ φq → mean φq.
  if (a.alpha) {
    at::parallel_for(0, BH * chunks, 1, [&](int64_t i0, int64_t i1) {
      std::vector<float> acc(dp);
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t bh = it / chunks, n0 = (it % chunks) * chunk, n1 = std::min(N, n0 + chunk);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t n = n0; n < n1; ++n) {
          const T* q = token(bh, n, 0);
          for (int64_t i = 0; i < d; i += VS) {
            const int64_t m = std::min(VS, d - i);
            Vec s = Vec::loadu(acc.data() + i) + elu1(load(q + i, m));
            s.store(acc.data() + i);
          }
        }
        std::copy(acc.begin(), acc.begin() + d, a.part + it * P);
      }
    });
    for (int64_t bh = 0; bh < BH; ++bh)
      for (int64_t i = 0; i < d; ++i) {
        float s = 0.0f;
        for (int64_t c = 0; c < chunks; ++c) s += a.part[(bh * chunks + c) * P + i];
        a.qmean[bh * d + i] = s / static_cast<float>(N);
      }
    // B: logits d^-½ · mean φq · φk_j, per-chunk max and Σ exp(· − max).
    at::parallel_for(0, BH * chunks, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t it = i0; it < i1; ++it) {
        const int64_t bh = it / chunks, n0 = (it % chunks) * chunk, n1 = std::min(N, n0 + chunk);
        const float* qm = a.qmean + bh * d;
        float* logit = a.alpha_out + bh * N;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t n = n0; n < n1; ++n) {
          const T* k = token(bh, n, C);
          Vec s(0.0f);
          for (int64_t i = 0; i < d; i += VS) {
            const int64_t m = std::min(VS, d - i);
            s = at::vec::fmadd(load(qm + i, m), elu1(load(k + i, m)), s);
          }
          const float l = a.scale * hsum(s);
          logit[n] = l;
          mx = std::max(mx, l);
        }
        float se = 0.0f;
        int64_t n = n0;
        for (; n + VS <= n1; n += VS) {
          const Vec e = (Vec::loadu(logit + n) - Vec(mx)).exp();
          se += hsum(e);
        }
        for (; n < n1; ++n) se += std::exp(logit[n] - mx);
        a.part[it * P + d] = mx;
        a.part[it * P + d + 1] = se;
      }
    });
  }
  // C: α_j, kr_j = α_j RoPE(φk_j), per-chunk Σ α_j φk_j.
  at::parallel_for(0, BH * chunks, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> acc(dp), phi(dp), rot(dp);
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t bh = it / chunks, n0 = (it % chunks) * chunk, n1 = std::min(N, n0 + chunk);
      float* alpha = a.alpha_out + bh * N;
      if (a.alpha) {
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < chunks; ++c) mx = std::max(mx, a.part[(bh * chunks + c) * P + d]);
        float total = 0.0f;
        for (int64_t c = 0; c < chunks; ++c)
          total += a.part[(bh * chunks + c) * P + d + 1] * std::exp(a.part[(bh * chunks + c) * P + d] - mx);
        const Vec vmx(mx), vinv(1.0f / total);
        int64_t n = n0;
        for (; n + VS <= n1; n += VS) ((Vec::loadu(alpha + n) - vmx).exp() * vinv).store(alpha + n);
        for (; n < n1; ++n) alpha[n] = std::exp(alpha[n] - mx) / total;
      } else {
        for (int64_t n = n0; n < n1; ++n) alpha[n] = 1.0f / static_cast<float>(N);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n = n0; n < n1; ++n) {
        const T* k = token(bh, n, C);
        const Vec al(alpha[n]);
        for (int64_t i = 0; i < d; i += VS) {
          const int64_t m = std::min(VS, d - i);
          const Vec p = elu1(load(k + i, m));
          p.store(phi.data() + i);
          at::vec::fmadd(al, p, Vec::loadu(acc.data() + i)).store(acc.data() + i);
        }
        T* dst = kr + (bh * N + n) * d;
        if (a.rope) {
          rope_row(phi.data(), d, sin + n * d, cos + n * d, rot.data());
          for (int64_t i = 0; i < d; i += VS) store(dst + i, al * Vec::loadu(rot.data() + i), std::min(VS, d - i));
        } else {
          for (int64_t i = 0; i < d; i += VS) store(dst + i, al * Vec::loadu(phi.data() + i), std::min(VS, d - i));
        }
      }
      std::copy(acc.begin(), acc.begin() + d, a.part + it * P);
    }
  });
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t i = 0; i < d; ++i) {
      float s = 0.0f;
      for (int64_t c = 0; c < chunks; ++c) s += a.part[(bh * chunks + c) * P + i];
      a.kmean[bh * d + i] = s;
    }
}

/// out_j = scale · Σ_i x_i m_ij for a row-major d×d float matrix m. When d is a multiple of the vector width and at
/// most 8 vectors, the accumulators stay in registers (NV of them, unrolled); otherwise a generic loop.
template <int NV>
inline void matvec_regs(const float* x, const float* m, int64_t d, float scale, float* out) {
  Vec acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = Vec(0.0f);
  for (int64_t i = 0; i < d; ++i) {
    const Vec s(x[i]);
    const float* row = m + i * d;
    for (int v = 0; v < NV; ++v) acc[v] = at::vec::fmadd(s, Vec::loadu(row + v * VS), acc[v]);
  }
  const Vec sc(scale);
  for (int v = 0; v < NV; ++v) (acc[v] * sc).store(out + v * VS);
}

inline void matvec(const float* x, const float* m, int64_t d, float scale, float* out) {
  if (d % VS == 0) {
    switch (d / VS) {
      case 1: return matvec_regs<1>(x, m, d, scale, out);
      case 2: return matvec_regs<2>(x, m, d, scale, out);
      case 3: return matvec_regs<3>(x, m, d, scale, out);
      case 4: return matvec_regs<4>(x, m, d, scale, out);
      case 5: return matvec_regs<5>(x, m, d, scale, out);
      case 6: return matvec_regs<6>(x, m, d, scale, out);
      case 7: return matvec_regs<7>(x, m, d, scale, out);
      case 8: return matvec_regs<8>(x, m, d, scale, out);
      default: break;
    }
  }
  for (int64_t j = 0; j < d; j += VS) Vec(0.0f).store(out + j);
  for (int64_t i = 0; i < d; ++i) {
    const Vec s(x[i]);
    const float* row = m + i * d;
    for (int64_t j = 0; j < d; j += VS) {
      const int64_t n = std::min(VS, d - j);
      at::vec::fmadd(s, load(row + j, n), Vec::loadu(out + j)).store(out + j);
    }
  }
  const Vec sc(scale);
  for (int64_t j = 0; j < d; j += VS) (Vec::loadu(out + j) * sc).store(out + j);
}

/// The tail of a projected attention, per token of a band of rows: num (from RALA's RoPE(φq)·kv·z or given), + LePE
/// of v (k×k depthwise, zero padding) + bias, ⊙ o; writes the (B, H, W, C) map.
template <typename T, bool kRala>
void finish_impl(int64_t B, int64_t H, int64_t W, int64_t C, int64_t heads, int64_t d, int64_t ld, const T* all,
                 bool gated, bool lepe, const T* lepe_w, const T* lepe_b, int64_t lk, T* y, const RalaArgs* ra,
                 const T* num_in) {
  const int64_t N = H * W, pad = lk / 2, dp = round_up(d, VS), taps = lk * lk;
  std::vector<float> wt, lb;
  if (lepe) {
    wt.assign(taps * C + VS, 0.0f);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) wt[t * C + c] = to_f(lepe_w[c * taps + t]);
    lb = to_float_vec<T>(lepe_b, C, 0.0f, C + VS);
  }
  const T* sin = kRala ? static_cast<const T*>(ra->sin) : nullptr;
  const T* cos = kRala ? static_cast<const T*>(ra->cos) : nullptr;
  const int64_t threads = at::get_num_threads();
  const int64_t bands_per_image = std::min<int64_t>(H, std::max<int64_t>(1, (4 * threads + B - 1) / B));
  const int64_t band = (H + bands_per_image - 1) / bands_per_image;
  const int64_t bands = (H + band - 1) / band;
  const float* wt_p = wt.data();
  const float* lb_p = lb.data();
  const int64_t row_stride = W * ld;
  at::parallel_for(0, B * bands, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> phi(dp), qr(dp), num(dp);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / bands, r_begin = (t % bands) * band, r_end = std::min(H, r_begin + band);
      for (int64_t r = r_begin; r < r_end; ++r) {
        const int64_t ky0 = std::max<int64_t>(0, pad - r), ky1 = std::min(lk, H + pad - r);
        for (int64_t col = 0; col < W; ++col) {
          const int64_t n = r * W + col;
          const int64_t kx0 = std::max<int64_t>(0, pad - col), kx1 = std::min(lk, W + pad - col);
          const T* tok = all + (bi * N + n) * ld;
          T* yo = y + (bi * N + n) * C;
          const T* v_img = all + bi * N * ld + 2 * C;
          for (int64_t hh = 0; hh < heads; ++hh) {
            const int64_t c0 = hh * d;
            float z = 1.0f;
            if constexpr (kRala) {
              const int64_t bh = bi * heads + hh;
              const T* q = tok + c0;
              Vec dot(0.0f);
              for (int64_t i = 0; i < d; i += VS) {
                const int64_t m = std::min(VS, d - i);
                const Vec p = elu1(load(q + i, m));
                p.store(phi.data() + i);
                dot = at::vec::fmadd(p, load(ra->kmean + bh * d + i, m), dot);
              }
              z = 1.0f / (hsum(dot) + ra->eps);
              if (ra->z_out != nullptr) ra->z_out[bh * N + n] = z;
              const float* src = phi.data();
              if (ra->rope) {
                rope_row(phi.data(), d, sin + n * d, cos + n * d, qr.data());
                src = qr.data();
              }
              // num_j = z · Σ_i src_i kv_ij
              matvec(src, ra->kv + bh * d * d, d, z, num.data());
              if (ra->out_pre != nullptr) {
                T* op = static_cast<T*>(ra->out_pre) + (bh * N + n) * d;
                for (int64_t j = 0; j < d; j += VS) store(op + j, Vec::loadu(num.data() + j), std::min(VS, d - j));
              }
            } else {
              const T* src = num_in + ((bi * heads + hh) * N + n) * d;
              for (int64_t j = 0; j < d; j += VS) {
                const int64_t m = std::min(VS, d - j);
                load(src + j, m).store(num.data() + j);
              }
            }
            for (int64_t j = 0; j < d; j += VS) {
              const int64_t m = std::min(VS, d - j), c = c0 + j;
              Vec v = Vec::loadu(num.data() + j);
              if (lepe) {
                // Offset of v at the window's top-left tap (may lie outside the map; only taps inside are read).
                const int64_t off0 = ((r - pad) * W + (col - pad)) * ld + c;
                const float* w0 = wt_p + c;
                Vec acc = load(lb_p + c, m);
                for (int64_t ky = ky0; ky < ky1; ++ky) {
                  const int64_t off = off0 + ky * row_stride;
                  const float* wrow = w0 + ky * lk * C;
                  for (int64_t kx = kx0; kx < kx1; ++kx)
                    acc = at::vec::fmadd(load(wrow + kx * C, m), load(v_img + off + kx * ld, m), acc);
                }
                v = v + acc;
              }
              if (gated) v = v * load(tok + 3 * C + c, m);
              store(yo + c, v, m);
            }
          }
        }
      }
    }
  });
}

template <typename T>
void rala_finish_impl(const RalaArgs& a) {
  finish_impl<T, true>(a.B, a.H, a.W, a.C, a.heads, a.d, a.ld, static_cast<const T*>(a.all), a.gated, a.lepe,
                       static_cast<const T*>(a.lepe_w), static_cast<const T*>(a.lepe_b), a.lepe_k,
                       static_cast<T*>(a.y), &a, nullptr);
}

template <typename T>
void gate_finish_impl(const GateArgs& a) {
  finish_impl<T, false>(a.B, a.H, a.W, a.C, a.heads, a.d, a.ld, static_cast<const T*>(a.all), a.gated, a.lepe,
                        static_cast<const T*>(a.lepe_w), static_cast<const T*>(a.lepe_b), a.lepe_k,
                        static_cast<T*>(a.y), nullptr, static_cast<const T*>(a.num));
}

template <typename T>
void rope_scale_impl(const RopeArgs& a) {
  const int64_t B = a.B, N = a.N, h = a.heads, d = a.d, dp = round_up(d, VS);
  const T* all = static_cast<const T*>(a.all);
  const T* sin = static_cast<const T*>(a.sin);
  const T* cos = static_cast<const T*>(a.cos);
  T* dst = static_cast<T*>(a.dst);
  const Vec sc(a.scale);
  at::parallel_for(0, B * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(a.C, 1)), [&](int64_t t0, int64_t t1) {
    std::vector<float> x(dp), rot(dp);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / N, n = t % N;
      for (int64_t hh = 0; hh < h; ++hh) {
        const T* src = all + t * a.ld + a.c0 + hh * d;
        T* out = dst + ((bi * h + hh) * N + n) * d;
        for (int64_t i = 0; i < d; i += VS) load(src + i, std::min(VS, d - i)).store(x.data() + i);
        const float* v = x.data();
        if (a.rope) {
          rope_row(x.data(), d, sin + n * d, cos + n * d, rot.data());
          v = rot.data();
        }
        for (int64_t i = 0; i < d; i += VS) store(out + i, Vec::loadu(v + i) * sc, std::min(VS, d - i));
      }
    }
  });
}

template <template <typename> class F, typename Args>
void by_dtype(const Args& a) {
  if (a.dt == DType::bf16)
    F<BF16>::run(a);
  else
    F<float>::run(a);
}

#define RALA_FUSED_ENTRY(name, impl, Args)           \
  template <typename T>                              \
  struct name##_fn {                                 \
    static void run(const Args& a) { impl<T>(a); }   \
  };                                                 \
  void name(const Args& a) { by_dtype<name##_fn>(a); }

RALA_FUSED_ENTRY(rows_entry, rows_impl, RowsArgs)
RALA_FUSED_ENTRY(dwconv_entry, dwconv_impl, DwArgs)
RALA_FUSED_ENTRY(affine_entry, affine_impl, AffineArgs)
RALA_FUSED_ENTRY(rala_prepare_entry, rala_prepare_impl, RalaArgs)
RALA_FUSED_ENTRY(rala_finish_entry, rala_finish_impl, RalaArgs)
RALA_FUSED_ENTRY(rope_scale_entry, rope_scale_impl, RopeArgs)
RALA_FUSED_ENTRY(gate_finish_entry, gate_finish_impl, GateArgs)
#undef RALA_FUSED_ENTRY

#define RALA_STR2(x) #x
#define RALA_STR(x) RALA_STR2(x)

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table{RALA_STR(RALA_FUSED_CAPABILITY), rows_entry,        dwconv_entry,    affine_entry,
                                 rala_prepare_entry,               rala_finish_entry, rope_scale_entry, gate_finish_entry};
  return table;
}

}  // namespace RALA_FUSED_CAPABILITY
}  // namespace rala::fused::detail

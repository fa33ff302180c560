#include "analysis/tridiagonal.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace rala {

namespace {

// LAPACK's machine constants (dlamch): eps = 2⁻⁵³ (relative, rounding), safe minimum 2⁻¹⁰²².
constexpr double kEps = 0x1p-53;
constexpr double kEps2 = kEps * kEps;
const double kSafeMin = std::numeric_limits<double>::min();
const double kScaleMax = std::sqrt(1.0 / kSafeMin) / 3.0;  // dsterf's ssfmax
const double kScaleMin = std::sqrt(kSafeMin) / kEps2;       // dsterf's ssfmin
constexpr int kMaxIterationsPerValue = 30;                  // dsterf's MAXIT

/// √(x² + y²) without needless overflow (dlapy2).
double hypot2(double x, double y) {
  const double ax = std::abs(x), ay = std::abs(y), w = std::max(ax, ay), z = std::min(ax, ay);
  if (z == 0.0) return w;
  const double q = z / w;
  return w * std::sqrt(1.0 + q * q);
}

/// Eigenvalues rt1 (larger |·|), rt2 of [[a, b], [b, c]] (dlae2).
void eig2x2(double a, double b, double c, double& rt1, double& rt2) {
  const double sm = a + c, df = a - c, adf = std::abs(df), tb = b + b, ab = std::abs(tb);
  const double acmx = std::abs(a) > std::abs(c) ? a : c, acmn = std::abs(a) > std::abs(c) ? c : a;
  double rt;
  if (adf > ab) {
    const double q = ab / adf;
    rt = adf * std::sqrt(1.0 + q * q);
  } else if (adf < ab) {
    const double q = adf / ab;
    rt = ab * std::sqrt(1.0 + q * q);
  } else {
    rt = ab * std::sqrt(2.0);
  }
  if (sm < 0.0) {
    rt1 = 0.5 * (sm - rt);
    rt2 = (acmx / rt1) * acmn - (b / rt1) * b;
  } else if (sm > 0.0) {
    rt1 = 0.5 * (sm + rt);
    rt2 = (acmx / rt1) * acmn - (b / rt1) * b;
  } else {
    rt1 = 0.5 * rt;
    rt2 = -0.5 * rt;
  }
}

/// One matrix's progress through dsterf, between sweeps.
struct Problem {
  double* d = nullptr;
  double* e = nullptr;  // off-diagonals; squared inside the current block
  int n = 0;
  int* info = nullptr;
  int next_block = 0;          // dsterf's L1
  int l = 0, lend = 0;         // the QL range of the current block (l ≤ lend)
  int block_begin = 0, block_end = 0;
  double unscale = 1.0;        // power of two that undoes the current block's scaling
  int iterations = 0, max_iterations = 0;
  bool in_block = false;
};

/// A QL sweep in flight: i runs from m−1 down to l.
struct Sweep {
  Problem* problem = nullptr;
  double* d = nullptr;
  double* e = nullptr;
  int i = 0, l = 0;
  double c = 1, s = 0, gamma = 0, p = 0, sigma = 0;
};

/// Ends the current block: undo the scaling; returns false when the iteration budget is spent (info set).
bool end_block(Problem& P) {
  P.in_block = false;
  if (P.unscale != 1.0)
    for (int i = P.block_begin; i <= P.block_end; ++i) P.d[i] *= P.unscale;
  if (P.iterations < P.max_iterations) return true;
  int unconverged = 0;
  for (int i = 0; i + 1 < P.n; ++i) unconverged += P.e[i] != 0.0;
  *P.info = unconverged;
  return false;
}

/// Runs P's logic up to its next sweep (returns true, `w` set up) or to its end (returns false; d sorted when it
/// converged). Everything but the inner loop of dsterf happens here.
bool advance(Problem& P, Sweep& w) {
  double* d = P.d;
  double* e = P.e;
  for (;;) {
    if (!P.in_block) {
      // dsterf label 10: the next unreduced block, split where an off-diagonal is negligible.
      if (P.next_block >= P.n) {
        std::sort(d, d + P.n);
        *P.info = 0;
        return false;
      }
      const int l1 = P.next_block;
      if (l1 > 0) e[l1 - 1] = 0.0;
      int m = l1;
      for (; m < P.n - 1; ++m) {
        if (std::abs(e[m]) <= std::sqrt(std::abs(d[m])) * std::sqrt(std::abs(d[m + 1])) * kEps) {
          e[m] = 0.0;
          break;
        }
      }
      if (m >= P.n - 1) m = P.n - 1;
      P.next_block = m + 1;
      if (m == l1) continue;  // 1×1
      double anorm = 0;
      for (int i = l1; i <= m; ++i) anorm = std::max(anorm, std::abs(d[i]));
      for (int i = l1; i < m; ++i) anorm = std::max(anorm, std::abs(e[i]));
      if (anorm == 0.0) continue;
      P.unscale = 1.0;
      if (anorm > kScaleMax || anorm < kScaleMin) {
        // A power of two brings the block's norm near 1: exact, and undone exactly on the eigenvalues.
        int exponent = 0;
        std::frexp(anorm, &exponent);
        const double scale = std::ldexp(1.0, -exponent);
        for (int i = l1; i <= m; ++i) d[i] *= scale;
        for (int i = l1; i < m; ++i) e[i] *= scale;
        P.unscale = std::ldexp(1.0, exponent);
      }
      for (int i = l1; i < m; ++i) e[i] *= e[i];
      // QR on a block whose top end is the smaller in magnitude = QL on the reversed block (e[m] stays the split).
      if (std::abs(d[m]) < std::abs(d[l1])) {
        std::reverse(d + l1, d + m + 1);
        std::reverse(e + l1, e + m);
      }
      P.l = l1;
      P.lend = m;
      P.block_begin = l1;
      P.block_end = m;
      P.in_block = true;
    }
    // dsterf label 50: look for a small (squared) off-diagonal.
    int m = P.lend;
    for (int i = P.l; i < P.lend; ++i) {
      if (std::abs(e[i]) <= kEps2 * std::abs(d[i] * d[i + 1])) {
        m = i;
        break;
      }
    }
    if (m < P.lend) e[m] = 0.0;
    const int l = P.l;
    const double p = d[l];
    if (m == l) {  // an eigenvalue converged
      P.l = l + 1;
      if (P.l <= P.lend) continue;
      if (!end_block(P)) return false;
      continue;
    }
    if (m == l + 1) {  // the remaining 2×2
      double rt1 = 0, rt2 = 0;
      eig2x2(d[l], std::sqrt(e[l]), d[l + 1], rt1, rt2);
      d[l] = rt1;
      d[l + 1] = rt2;
      e[l] = 0.0;
      P.l = l + 2;
      if (P.l <= P.lend) continue;
      if (!end_block(P)) return false;
      continue;
    }
    if (P.iterations == P.max_iterations) {
      if (!end_block(P)) return false;
      continue;
    }
    ++P.iterations;
    // The shift, then the sweep from m−1 down to l (run by the caller, interleaved with other matrices' sweeps).
    const double rte = std::sqrt(e[l]);
    double sigma = (d[l + 1] - p) / (2.0 * rte);
    const double r = hypot2(sigma, 1.0);
    sigma = p - rte / (sigma + std::copysign(r, sigma));
    w.problem = &P;
    w.d = d;
    w.e = e;
    w.i = m - 1;
    w.l = l;
    w.c = 1.0;
    w.s = 0.0;
    w.sigma = sigma;
    w.gamma = d[m] - sigma;
    w.p = w.gamma * w.gamma;
    return true;
  }
}

/// One step of dsterf's QL inner loop. The first step of a sweep stores s·r = 0 into e[m], which is zero already
/// (the split below the sweep, or the scratch entry e[n−1]).
inline void step(Sweep& w) {
  const int i = w.i;
  const double bb = w.e[i];
  const double r = w.p + bb;
  w.e[i + 1] = w.s * r;
  const double oldc = w.c;
  w.c = w.p / r;
  w.s = bb / r;
  const double oldgam = w.gamma;
  const double alpha = w.d[i];
  w.gamma = w.c * (alpha - w.sigma) - w.s * oldgam;
  w.d[i + 1] = oldgam + (alpha - w.gamma);
  w.p = w.c != 0.0 ? (w.gamma * w.gamma) / w.c : oldc * bb;
  w.i = i - 1;
}

/// The end of a sweep (after the step for i = l).
inline void finish_sweep(Sweep& w) {
  w.e[w.l] = w.s * w.p;
  w.d[w.l] = w.sigma + w.gamma;
}

// Sweeps in flight. Measured on 96 tridiagonals of order 64 from Gram matrices (one thread, CPU time per matrix):
// dsterf 62 µs; 2 slots 36, 3: 26, 4: 22.5, 6: 18.4, 8: 18.6 — six cover a division chain's latency.
constexpr int kSlots = 6;

}  // namespace

void tridiagonal_eigenvalues(int64_t K, int n, double* d, double* e, int* info) {
  if (K <= 0 || n <= 0) return;
  std::vector<Problem> problems(static_cast<size_t>(K));
  for (int64_t j = 0; j < K; ++j) {
    Problem& P = problems[j];
    P.d = d + j * n;
    P.e = e + j * n;
    P.e[n - 1] = 0.0;
    P.n = n;
    P.info = info + j;
    P.max_iterations = kMaxIterationsPerValue * n;
  }
  size_t next = 0;
  Sweep slots[kSlots];
  bool active[kSlots] = {};
  // A slot takes the next problem that still has a sweep to run.
  auto refill = [&](int k) {
    while (next < problems.size()) {
      if (advance(problems[next++], slots[k])) {
        active[k] = true;
        return;
      }
    }
    active[k] = false;
  };
  for (int k = 0; k < kSlots; ++k) refill(k);
  for (;;) {
    int steps = std::numeric_limits<int>::max();
    for (int k = 0; k < kSlots; ++k)
      if (active[k]) steps = std::min(steps, slots[k].i - slots[k].l + 1);
    if (steps == std::numeric_limits<int>::max()) break;  // nothing in flight: all done
    // The sweeps advance in lockstep for as many steps as the shortest one has left: independent dependency chains
    // in one loop body, which the CPU executes overlapped.
    if (std::all_of(active, active + kSlots, [](bool a) { return a; })) {
      for (int t = 0; t < steps; ++t)
        for (int k = 0; k < kSlots; ++k) step(slots[k]);
    } else {
      for (int t = 0; t < steps; ++t)
        for (int k = 0; k < kSlots; ++k)
          if (active[k]) step(slots[k]);
    }
    for (int k = 0; k < kSlots; ++k) {
      if (!active[k] || slots[k].i >= slots[k].l) continue;
      finish_sweep(slots[k]);
      if (!advance(*slots[k].problem, slots[k])) refill(k);
    }
  }
}

}  // namespace rala

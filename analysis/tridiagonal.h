#pragma once
/// \file tridiagonal.h
/// Eigenvalues of many small symmetric tridiagonal matrices at once, for the Gram spectra (spectrum.h).
///
/// The algorithm is LAPACK's dsterf: the Pal–Walker–Kahan root-free QL iteration with Wilkinson-like shifts, blocks
/// split where an off-diagonal is negligible, 2×2 blocks closed by the formula of dlae2, the QR variant (here: QL on
/// the reversed block) when the block's bottom end is the smaller, a block scaled by a power of two when its norm is
/// near overflow or underflow, at most 30·n iterations per matrix. What differs is the schedule: one sweep of dsterf
/// is a chain of dependent divisions (≈ 45 cycles per step) that keeps the CPU's divider mostly idle, so this runs
/// the sweeps of several matrices interleaved step by step, and the CPU overlaps their chains. Each matrix gets
/// exactly the arithmetic it would get alone: the results do not depend on which matrices share a run.
///
/// Usage:
///   std::vector<double> d = ..., e = ...;   // K matrices: d K×n, e K×n (e[k·n + n−1] unused)
///   std::vector<int> info(K);
///   rala::tridiagonal_eigenvalues(K, n, d.data(), e.data(), info.data());   // d: eigenvalues, ascending

#include <cstdint>

namespace rala {

/// Eigenvalues of K symmetric tridiagonal n×n matrices. Matrix j has diagonal d[j·n … j·n+n−1] and off-diagonal
/// e[j·n … j·n+n−2] (e[j·n+n−1] is scratch). On return d holds each matrix's eigenvalues in ascending order and e is
/// overwritten; info[j] = 0, or the number of off-diagonals that did not converge in 30·n iterations (then d holds
/// the values as far as they got, unsorted). Inputs must be finite. n ≥ 1.
void tridiagonal_eigenvalues(int64_t K, int n, double* d, double* e, int* info);

}  // namespace rala

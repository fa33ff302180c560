#!/usr/bin/python3
"""Fits the polynomials of the fused kernels' GELU (attention_variants/fused_kernels.cpp, `gelu`) and measures the
result in float32 arithmetic against float64.

    /usr/bin/python3 benchmarks/fit_gelu.py

With z = |x|/√2: erf(z) = z·P(z²) for z ≤ 1 (P of degree 6 in z²), erfc(z) = e^(−z²)·R(z − 2.5) for 1 < z ≤ 4
(R of degree 10). Both are Chebyshev least-squares fits on 4000 nodes, converted to monomials about the stated
centre. The error is measured on 1.9 M points of [−8, 8] with float32 Horner steps (numpy, no FMA) and a correctly
rounded e^(−hi); prints the coefficients as C++ literals and the maximum error in ulps of |x| and of the result, next
to LibTorch's GELU (Debian's python3-torch) on the same points.
"""
import math

import numpy as np
from numpy.polynomial import chebyshev as cheb
from numpy.polynomial import polynomial as poly

f32 = np.float32


def fit(fn, a, b, deg, centre, n=4000):
    """Monomial coefficients in (x − centre) of the degree-`deg` Chebyshev fit of fn on [a, b]."""
    k = np.arange(n)
    x = (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (k + 0.5) / n)
    c = cheb.cheb2poly(cheb.chebfit(2 * (x - a) / (b - a) - 1, fn(x), deg))
    s = np.array([(2 * centre - a - b) / (b - a), 2 / (b - a)])  # s(w) with w = x − centre
    out = np.zeros(1)
    for i, ci in enumerate(c):
        out = poly.polyadd(out, ci * poly.polypow(s, i))
    return [f32(v) for v in out]


def horner(coefs, w):
    r = np.full_like(w, coefs[-1])
    for c in coefs[-2::-1]:
        r = (r * w + c).astype(f32)
    return r


def main():
    P = fit(lambda u: np.array([math.erf(math.sqrt(v)) / math.sqrt(v) if v > 0 else 2 / math.sqrt(math.pi)
                                for v in u]), 0.0, 1.0, 6, 0.0)
    R = fit(lambda z: np.array([math.erfc(v) * math.exp(v * v) for v in z]), 1.0, 4.0, 10, 2.5)
    print("P:", ", ".join("%.9ef" % c for c in P))
    print("R:", ", ".join("%.9ef" % c for c in R))

    x = np.concatenate([np.linspace(-8, 8, 1600001), np.linspace(-1.5, 1.5, 300001)]).astype(f32)
    z = (np.abs(x) * f32(0.70710677)).astype(f32)
    half_erf = (f32(0.5) * (z * horner(P, (z * z).astype(f32)))).astype(f32)
    zc = np.minimum(z, f32(4))
    hi = (zc * zc).astype(f32)
    lo = (zc.astype(np.float64) ** 2 - hi).astype(f32)
    e = (np.exp(-hi.astype(np.float64)).astype(f32) * (f32(1) - lo)).astype(f32)
    half_erfc = (f32(0.5) * (e * horner(R, (zc - f32(2.5)).astype(f32)))).astype(f32)
    half_erfc = np.where(z > f32(4), f32(0), half_erfc)
    small = z <= f32(1)
    phi = np.where(x >= 0, np.where(small, f32(0.5) + half_erf, f32(1) - half_erfc),
                   np.where(small, f32(0.5) - half_erf, half_erfc)).astype(f32)
    g = (x * phi).astype(f32).astype(np.float64)
    xd = x.astype(np.float64)
    exact = xd * 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in xd])
    ulp = lambda m: np.spacing(np.abs(m).astype(f32)).astype(np.float64)
    report = [("ours", g)]
    try:
        import torch
        report.append(("LibTorch", torch.nn.functional.gelu(torch.from_numpy(x)).double().numpy()))
    except ImportError:
        pass
    for name, val in report:
        err = np.abs(val - exact)
        print("%-8s max error: %.2f ulps of |x|, %.2f ulps of the result for x >= 0"
              % (name, (err / ulp(np.maximum(np.abs(xd), 1e-30))).max(),
                 (err / ulp(np.maximum(np.abs(exact), 1e-38)))[x >= 0].max()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fits the rational erf of the GELU kernels (CKernels/kernels_body.h, GELU_ERF_NUMERATOR/DENOMINATOR):
erf(z) ≈ z·N(z²)/D(z²) on 0 ≤ z ≤ 4, N of degree 6 and D of degree 5 in z², D(0) = 1.

The fit is the linearised least-squares form y·D − z·N = 0, reweighted by 1/D (Sanathanan–Koerner) and by
Lawson's |error| weights towards the minimax. Prints the coefficients as C literals, the largest error
once rounded to f32 and evaluated in f32 with FMA (as the AVX2 and AVX-512 kernels run it), and the ratio
at z = 4, which the kernels clamp to [-1, 1] and so must round to at least 1.

    .venv/bin/python scripts/fit_gelu_erf.py
"""
import math

import numpy as np

Z_MAX, NUMERATOR_TERMS, DENOMINATOR_TERMS = 4.0, 7, 5


def fit():
    z = np.concatenate([np.linspace(0, Z_MAX, 20000), Z_MAX * (1 - np.cos(np.linspace(0, np.pi / 2, 4000)))])
    y, s = np.array([math.erf(t) for t in z]), z * z
    lawson, denominator = np.ones_like(z), np.ones_like(z)
    for _ in range(60):
        system = np.hstack([np.stack([z * s**i for i in range(NUMERATOR_TERMS)], 1),
                            -np.stack([y * s**i for i in range(1, DENOMINATOR_TERMS + 1)], 1)])
        weight = np.sqrt(lawson) / denominator
        c, *_ = np.linalg.lstsq(system * weight[:, None], y * weight, rcond=None)
        n, d = c[:NUMERATOR_TERMS], np.concatenate([[1.0], c[NUMERATOR_TERMS:]])
        denominator = np.polyval(d[::-1], s)
        error = np.abs(z * np.polyval(n[::-1], s) / denominator - y)
        lawson = lawson * (error + 1e-18)
        lawson /= lawson.sum()
    return n.astype(np.float32), d.astype(np.float32)


def ratio_f32(z, n, d):
    """z·N(z²)/D(z²) in f32 arithmetic, each Horner step one FMA (exact product in f64, one rounding)."""
    z = np.asarray(z, dtype=np.float32)
    s = z * z
    num, den = np.full_like(s, n[-1]), np.full_like(s, d[-1])
    for c in n[-2::-1]:
        num = (num.astype(np.float64) * s + c).astype(np.float32)
    for c in d[-2::-1]:
        den = (den.astype(np.float64) * s + c).astype(np.float32)
    return z * num / den


def main():
    n, d = fit()
    print("#define GELU_ERF_NUMERATOR(s)  ", ", ".join(f"{c:.9e}f" for c in n[::-1]), "(highest power first)")
    print("#define GELU_ERF_DENOMINATOR(s)", ", ".join(f"{c:.9e}f" for c in d[::-1]))
    z = np.linspace(0, Z_MAX, 400001, dtype=np.float32)
    exact = np.array([math.erf(t) for t in z.astype(np.float64)])
    print(f"largest |error| in f32 on [0, {Z_MAX}]: {np.abs(ratio_f32(z, n, d) - exact).max():.3g}")
    at_max = ratio_f32(np.float32(Z_MAX), n, d)
    print(f"ratio at z = {Z_MAX}: {float(at_max):.9g} ({'rounds to at least 1' if at_max >= 1 else 'BELOW 1: refit'})")


if __name__ == "__main__":
    main()

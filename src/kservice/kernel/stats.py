"""Pearson's chi-square test, for sampled frequencies against exact probabilities.

Only the standard library: the p-value is the regularized upper incomplete
gamma function ``Q(k/2, x/2)``, by its series below ``s + 1`` and by Lentz's
continued fraction above (accurate to about 1e-14 there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["chi_square_p", "gamma_q"]

_TINY = 1e-300
_EPS = 1e-15


def chi_square_p(observed: Sequence[int], expected: Sequence[float]) -> float:
    """p-value of Pearson's chi-square test of ``observed`` counts against
    ``expected`` probabilities (same order; categories with probability 0
    must not be given). One category: 1.0 (nothing to test)."""
    if len(observed) != len(expected):
        raise ValueError("chi_square_p: observed and expected differ in length")
    if any(p <= 0 for p in expected):
        raise ValueError("chi_square_p: every expected probability must be positive")
    n = sum(observed)
    if len(observed) < 2 or n == 0:
        return 1.0
    total = sum(expected)
    stat = sum(
        (o - n * p / total) ** 2 / (n * p / total) for o, p in zip(observed, expected, strict=True)
    )
    return gamma_q((len(observed) - 1) / 2, stat / 2)


def gamma_q(s: float, x: float) -> float:
    """The regularized upper incomplete gamma function ``Q(s, x)``."""
    if x <= 0:
        return 1.0
    prefix = math.exp(-x + s * math.log(x) - math.lgamma(s))
    if x < s + 1:
        term = total = 1.0 / s
        k = s
        while abs(term) > _EPS * abs(total):
            k += 1
            term *= x / k
            total += term
        return max(0.0, 1.0 - total * prefix)
    b = x + 1 - s
    c = 1 / _TINY
    d = 1 / b
    h = d
    i = 1
    while True:
        an = -i * (i - s)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        step = d * c
        h *= step
        if abs(step - 1) < _EPS or i > 10_000:
            break
        i += 1
    return prefix * h

"""The chi-square test the kernel checks use (standard library only)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.kernel.stats import chi_square_p, gamma_q


@pytest.mark.parametrize(
    ("df", "x", "p"),
    [
        (1, 3.841458820694124, 0.05),  # the textbook critical values
        (2, 5.991464547107979, 0.05),
        (2, 13.815510557964274, 0.001),
        (9, 27.877164871256568, 0.001),
        (30, 59.70306, 0.001),
    ],
)
def test_critical_values(df: int, x: float, p: float) -> None:
    assert gamma_q(df / 2, x / 2) == pytest.approx(p, rel=1e-5)


def test_two_degrees_of_freedom_is_an_exponential() -> None:
    # Q(1, x/2) = exp(-x/2) exactly
    for x in (0.1, 1.0, 4.0, 10.0, 40.0):
        assert gamma_q(1.0, x / 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)


def test_perfect_fit_and_gross_misfit() -> None:
    assert chi_square_p([100, 100], [0.5, 0.5]) == pytest.approx(1.0)
    assert chi_square_p([200, 0], [0.5, 0.5]) < 1e-40
    # a 90/10 spread sampled as 100/100 is far off
    assert chi_square_p([100, 100], [0.9, 0.1]) < 1e-10
    # one category: nothing to test
    assert chi_square_p([7], [1.0]) == 1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        chi_square_p([1, 2], [1.0])
    with pytest.raises(ValueError, match="positive"):
        chi_square_p([1, 2], [1.0, 0.0])


@given(st.floats(0.5, 50), st.floats(0, 200))
def test_q_is_a_probability_and_falls_with_x(s: float, x: float) -> None:
    q = gamma_q(s, x)
    assert 0.0 <= q <= 1.0
    assert gamma_q(s, x + 1.0) <= q + 1e-12

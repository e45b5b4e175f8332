"""Exact outcome probabilities: every random choice in the rules, enumerated.

The twins call an *oracle* wherever they would draw a random number. Here the
oracle replays a fixed prefix of choices and takes the first option of every
later one, recording how many options it had and their probabilities; a
depth-first walk over those records visits every path once. Probabilities are
the kernel's, exactly:

* ``statistic --probability P`` holds for ``threshold / 2**31`` of draws
  (``threshold = lround(P * 2**31)``), so kube-proxy's 0.3333333333 is not
  exactly a third;
* ``numgen random mod N`` maps ``u32`` to ``(u32 * N) >> 32``, giving value
  ``k`` to ``ceil((k+1) 2^32 / N) - ceil(k 2^32 / N)`` of the 2**32 draws;
* IPVS schedulers give their long-run shares (see ``State.shares``).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

__all__ = ["Oracle", "explore", "numgen_probability"]

_TWO31 = 1 << 31
_TWO32 = 1 << 32
MAX_PATHS = 1_000_000


def numgen_probability(k: int, modulus: int) -> Fraction:
    lo = -(-(k * _TWO32) // modulus)
    hi = -(-((k + 1) * _TWO32) // modulus)
    return Fraction(hi - lo, _TWO32)


class Oracle:
    """Replays ``prefix``; records the options of each later decision."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.pos = 0
        self.probability = Fraction(1)
        # for decisions past the prefix: (option values, their probabilities)
        self.pending: list[tuple[list[int], list[Fraction]]] = []

    def _decide(self, options: list[int], probs: list[Fraction]) -> int:
        if self.pos < len(self.prefix):
            choice = self.prefix[self.pos]
        else:
            choice = 0
            self.pending.append((options, probs))
        self.pos += 1
        self.probability *= probs[choice]
        return options[choice]

    def bit(self, threshold: int) -> bool:
        p = Fraction(min(threshold, _TWO31), _TWO31)
        if p == 1:
            return True
        if p == 0:
            return False
        return bool(self._decide([1, 0], [p, 1 - p]))

    def pick(self, modulus: int) -> int:
        if modulus <= 1:
            return 0
        options = list(range(modulus))
        return self._decide(options, [numgen_probability(k, modulus) for k in options])

    def choose(self, shares: list[tuple[int, Fraction]]) -> int:
        if len(shares) == 1:
            return shares[0][0]
        return self._decide([s for s, _ in shares], [p for _, p in shares])


def explore(run: Callable[[Oracle], object]) -> dict[object, Fraction]:
    """Run ``run(oracle)`` once per path of random choices; sum each outcome's
    probability."""
    out: dict[object, Fraction] = {}
    stack: list[list[int]] = [[]]
    paths = 0
    while stack:
        prefix = stack.pop()
        oracle = Oracle(prefix)
        outcome = run(oracle)
        paths += 1
        if paths > MAX_PATHS:
            raise OverflowError("more than a million paths of random choices")
        out[outcome] = out.get(outcome, Fraction(0)) + oracle.probability
        base = list(prefix)
        for options, _ in oracle.pending:
            for alt in range(len(options) - 1, 0, -1):
                stack.append([*base, alt])
            base.append(0)
    return out

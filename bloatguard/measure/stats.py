"""Statistics of the latency protocol, in plain numpy (scipy is not a dependency).

The unit of evidence is a round: base and head each timed for one block of runs, in random
order, under the same machine conditions. A round's head/base ratio cancels whatever the machine
was doing at that moment (another job, frequency scaling), which is what makes a verdict from a
noisy CI runner trustworthy; comparing two medians taken minutes apart does not.

- effect size: the median of the per-round ratios, with a percentile-bootstrap interval;
- significance: the exact one-sided sign test on those ratios (distribution-free: it only asks
  "in how many rounds was head slower?", so a few rounds wrecked by a noisy neighbour cannot
  manufacture or hide a result);
- many models in one run: Holm's step-down correction keeps the chance of any false alarm at
  alpha for the whole run, not per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 4000
CONFIDENCE = 0.95

REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no significant change"
# Significant, but smaller than min-effect: real, and not what a budget is about.
BELOW_FLOOR = "significant, below the effect floor"


def sign_test(positive: int, negative: int) -> tuple[float, float]:
    """One-sided exact p-values (greater, less) of the sign test; ties are dropped beforehand.

    greater = P(X >= positive) for X ~ Binomial(n, 1/2): the chance that head is slower in at
    least this many rounds if it were really no slower."""
    n = positive + negative
    if n == 0:
        return 1.0, 1.0
    # Exact: integer binomial sums, one correctly rounded division (no overflow for any n).
    def tail(ks: range) -> float:
        return min(1.0, sum(math.comb(n, k) for k in ks) / 2**n)

    return tail(range(positive, n + 1)), tail(range(0, positive + 1))


def bootstrap_median_ci(values: Sequence[float] | np.ndarray, *, confidence: float = CONFIDENCE,
                        samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median. Seeded: the same rounds give the same
    interval, so a report does not change when re-rendered."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, data.size, (samples, data.size))], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (compare each with alpha): the smallest is multiplied by m, the
    next by m - 1, ..., kept monotone. Controls the family-wise error rate with no assumption
    about how the tests depend on each other."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass
class PairedResult:
    """The per-round evidence of one base/head comparison (p-values not yet corrected)."""

    ratio: float  # median of head/base ratios
    ci: tuple[float, float]
    p_regression: float  # one-sided: head slower
    p_improvement: float  # one-sided: head faster
    rounds: int
    slower_rounds: int  # rounds where head took longer

    def verdict(self, *, min_effect: float, alpha: float, p_regression: float | None = None,
                p_improvement: float | None = None) -> str:
        """Both a large-enough effect and significance; either alone is not evidence.

        Without the effect floor, a significance test over many interleaved rounds flags
        differences of 1-2 % that are real but come from where each session's memory landed,
        not from the model. Without significance, a large median ratio over a few rounds is
        just luck. Pass the multiplicity-corrected p-values when several models are compared."""
        p_up = self.p_regression if p_regression is None else p_regression
        p_down = self.p_improvement if p_improvement is None else p_improvement
        if self.ratio >= 1 + min_effect and p_up < alpha:
            return REGRESSION
        if self.ratio <= 1 / (1 + min_effect) and p_down < alpha:
            return IMPROVEMENT
        if (self.ratio > 1 and p_up < alpha) or (self.ratio < 1 and p_down < alpha):
            return BELOW_FLOOR
        return NO_CHANGE


def paired(base_rounds: Sequence[float], head_rounds: Sequence[float], *, seed: int = 0) -> PairedResult:
    """Compare per-round times of base and head (same length, same rounds)."""
    base = np.asarray(base_rounds, dtype=np.float64)
    head = np.asarray(head_rounds, dtype=np.float64)
    if base.shape != head.shape or base.size == 0:
        raise ValueError("need the same, non-zero number of rounds for base and head")
    ratios = head / base
    slower = int(np.sum(head > base))
    faster = int(np.sum(head < base))
    p_up, p_down = sign_test(slower, faster)
    return PairedResult(ratio=float(np.median(ratios)), ci=bootstrap_median_ci(ratios, seed=seed),
                        p_regression=p_up, p_improvement=p_down, rounds=int(base.size),
                        slower_rounds=slower)


def min_rounds_for(alpha: float, comparisons: int = 1) -> int:
    """Fewest rounds in which a unanimous sign test can reach alpha after Bonferroni/Holm over
    `comparisons` models: 0.5 ** n < alpha / comparisons."""
    return math.floor(math.log2(comparisons / alpha)) + 1

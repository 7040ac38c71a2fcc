"""Paired statistics for comparing two runs on the same questions (pure functions, no I/O).

* ``mcnemar_exact``: exact (binomial) McNemar test for paired right/wrong outcomes, two-sided:
  with b = questions only run A got right and c = only run B got right,
  ``p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c))``, computed in exact integer
  arithmetic (no scipy); p = 1 when b + c = 0.
* ``paired_bootstrap``: the difference of means (A - B) of paired scores (accuracy as 0/1, or
  a judge's score), with a percentile bootstrap interval that resamples *questions* (both runs
  together), seeded.
* ``bootstrap_mean``: percentile bootstrap interval of one run's mean.
* ``percent_of_baseline``: 100 * value / baseline (the "% of the unreduced run" column).

Example::

    from dyto.evaluation.stats import mcnemar_exact, paired_bootstrap
    mcnemar_exact([1, 1, 0, 1], [1, 0, 0, 0]).p_value           # 0.5
    paired_bootstrap([3, 4, 5], [3, 3, 4], seed=0).interval     # (low, high) of A - B
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["McNemarResult", "BootstrapResult", "mcnemar_exact", "mcnemar_exact_counts",
           "paired_bootstrap", "bootstrap_mean", "percent_of_baseline"]


@dataclass(frozen=True)
class McNemarResult:
    only_a: int          # b: right in run A, wrong in run B
    only_b: int          # c: wrong in run A, right in run B
    both: int            # right in both
    neither: int         # wrong in both
    p_value: float       # exact two-sided p

    @property
    def discordant(self) -> int:
        return self.only_a + self.only_b


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float                  # the statistic on the data (a mean, or mean(A) - mean(B))
    interval: tuple[float, float]    # percentile interval at ``confidence``
    confidence: float
    resamples: int
    seed: int


def mcnemar_exact_counts(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c."""
    if only_a < 0 or only_b < 0 or int(only_a) != only_a or int(only_b) != only_b:
        raise ValueError(f"discordant counts must be integers >= 0, got {only_a}, {only_b}")
    n = int(only_a) + int(only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def _pair(a: Sequence, b: Sequence, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{what}: the two runs need the same number of paired values, "
                         f"got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError(f"{what}: no paired values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{what}: values must be finite (NaN or inf at positions "
                         f"{np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))[:5].tolist()})")
    return x, y


def mcnemar_exact(correct_a: Sequence, correct_b: Sequence) -> McNemarResult:
    """Exact McNemar test on paired outcomes (truthy = right), question i of A with i of B."""
    x, y = _pair(correct_a, correct_b, "mcnemar_exact")
    if not np.isin(x, (0.0, 1.0)).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("mcnemar_exact: outcomes must be binary (0/1 or False/True)")
    a, b = x.astype(bool), y.astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return McNemarResult(only_a, only_b, int((a & b).sum()), int((~a & ~b).sum()),
                         mcnemar_exact_counts(only_a, only_b))


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of the rows of values [n] (chunked)."""
    rng = np.random.default_rng(seed)
    n, out, done = len(values), np.empty(resamples), 0
    chunk = max(1, 2_000_000 // n)                   # ~16 MB of indices at a time
    while done < resamples:
        k = min(chunk, resamples - done)
        out[done:done + k] = values[rng.integers(0, n, size=(k, n))].mean(axis=1)
        done += k
    return out


def _check(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


def paired_bootstrap(scores_a: Sequence, scores_b: Sequence, resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """mean(A) - mean(B) over paired scores, with a percentile bootstrap interval.

    Questions are resampled with replacement and both runs' scores of a resampled question
    move together, so the interval reflects the pairing.
    """
    _check(confidence, resamples)
    x, y = _pair(scores_a, scores_b, "paired_bootstrap")
    diff = x - y
    stats = _resampled_means(diff, resamples, seed)
    return BootstrapResult(float(diff.mean()), _percentile_interval(stats, confidence),
                           confidence, resamples, seed)


def bootstrap_mean(scores: Sequence, resamples: int = 10_000, seed: int = 0,
                   confidence: float = 0.95) -> BootstrapResult:
    """Mean of ``scores`` with a percentile bootstrap interval."""
    _check(confidence, resamples)
    x, _ = _pair(scores, scores, "bootstrap_mean")
    stats = _resampled_means(x, resamples, seed)
    return BootstrapResult(float(x.mean()), _percentile_interval(stats, confidence),
                           confidence, resamples, seed)


def percent_of_baseline(value: float, baseline: float) -> float:
    """100 * value / baseline, e.g. a reduced run's accuracy as a share of the unreduced run's."""
    if baseline == 0 or not math.isfinite(baseline) or not math.isfinite(value):
        raise ValueError(f"percent_of_baseline needs finite values and a non-zero baseline, "
                         f"got value={value}, baseline={baseline}")
    return 100.0 * value / baseline

"""Bootstrap over test users: how sure we are of a mean metric, and of one model beating another.

A ranking metric is a mean over test users, and on real logs a few hundred users carry it, so
two models' means can differ by noise alone. Resampling the users (with replacement) and
recomputing the mean shows how far it moves; resampling the *same* users for two models (paired)
shows whether one is better on the users both were scored on, which is what promotion asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def _resampled_rows(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` x ``n`` user indices drawn with replacement (the same for every metric)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def mean_interval(
    values: np.ndarray, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0
) -> Interval:
    """The mean of per-user ``values`` and its ``confidence`` percentile bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    means = values[_resampled_rows(values.size, resamples, seed)].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(values.mean()), float(low), float(high))


@dataclass(frozen=True)
class PairedComparison:
    """Candidate against a reference on the same users.

    ``probability``: the share of resamples in which the candidate's mean is at least the
    reference's mean times ``1 + margin`` (how likely it is that the candidate beats it by the
    margin). ``difference``: candidate minus reference, with its interval.
    """

    users: int
    candidate: float
    reference: float
    margin: float
    probability: float
    difference: Interval

    def describe(self, metric: str, reference_label: str) -> str:
        return (
            f"{metric} {self.candidate:.4f} vs {reference_label} {self.reference:.4f} on the same "
            f"{self.users} users (difference {self.difference}, P(beats it by {self.margin:.1%}) "
            f"= {self.probability:.2f})"
        )


def paired_comparison(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    margin: float = 0.0,
    strict: bool = False,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-user metrics of two models aligned on the same users (same order).

    Returns the share of ``resamples`` paired resamples of the users (the same for a given
    ``seed``) in which the candidate beats the reference, and the ``confidence`` interval of the
    difference of means; no users give NaN. ``strict``: the candidate must exceed the reference
    (times ``1 + margin``); otherwise a tie counts as beating it."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        nan = float("nan")
        return PairedComparison(0, nan, nan, margin, nan, Interval(nan, nan, nan))
    rows = _resampled_rows(a.size, resamples, seed)
    means_a, means_b = a[rows].mean(axis=1), b[rows].mean(axis=1)
    # A tolerance for float noise, so that identical models tie exactly.
    bar = means_b * (1.0 + margin)
    wins = means_a > bar + 1e-12 if strict else means_a >= bar - 1e-12
    diffs = means_a - means_b
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return PairedComparison(
        users=int(a.size),
        candidate=float(a.mean()),
        reference=float(b.mean()),
        margin=margin,
        probability=float(wins.mean()),
        difference=Interval(float(a.mean() - b.mean()), float(low), float(high)),
    )

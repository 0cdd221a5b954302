"""Promotion on evidence: per-user metrics, paired bootstrap, margin, confidence, too few users, NaN."""

from __future__ import annotations

import numpy as np
import pytest

from recspark.model.evaluation.bootstrap import mean_interval, paired_comparison
from recspark.model.training.promotion import (
    CHALLENGER,
    INSUFFICIENT_EVIDENCE,
    PROMOTED,
    ChampionRefit,
    PromotionRule,
    decide_promotion,
)

RULE = PromotionRule(metric="ndcg_at_k", margin=0.0, confidence=0.5, min_test_users=50)


def users(n: int, hit_rate: float, seed: int) -> np.ndarray:
    """Per-user metric values: a share of users with a hit (1.0), the rest 0."""
    rng = np.random.default_rng(seed)
    return (rng.random(n) < hit_rate).astype(float)


def test_interval_contains_the_mean_and_narrows_with_more_users() -> None:
    small, large = users(100, 0.3, 1), users(10_000, 0.3, 1)
    a, b = mean_interval(small), mean_interval(large)
    assert a.low <= a.mean <= a.high and b.low <= b.mean <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    assert mean_interval(small) == a  # seeded: the same interval every time


def test_paired_comparison_sees_a_consistent_small_lead_that_unpaired_means_would_not() -> None:
    base = users(400, 0.3, 2)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:12]] = 1.0  # 12 more users get a hit, nobody loses one
    comparison = paired_comparison(better, base, margin=0.0, strict=True)
    assert comparison.probability == 1.0
    assert comparison.difference.low > 0
    # The unpaired intervals overlap: only pairing shows the lead is real.
    assert mean_interval(better).low < mean_interval(base).high


def test_a_better_candidate_is_promoted_and_a_worse_one_is_not() -> None:
    champion = users(500, 0.20, 3)
    popular = users(500, 0.10, 4)
    better = np.maximum(champion, users(500, 0.10, 5))
    decision = decide_promotion(better, {"popular": popular}, ChampionRefit("1", champion), RULE)
    assert decision.promote and decision.status == PROMOTED
    assert set(decision.comparisons) == {"popular", "champion"}
    worse = champion * users(500, 0.7, 6)
    decision = decide_promotion(worse, {"popular": popular}, ChampionRefit("1", champion), RULE)
    assert not decision.promote and decision.status == CHALLENGER and "champion version 1" in decision.reason


def test_a_tie_with_the_champion_promotes_but_a_tie_with_a_baseline_does_not() -> None:
    values = users(300, 0.2, 7)
    assert decide_promotion(
        values, {"popular": users(300, 0.05, 8)}, ChampionRefit("1", values.copy()), RULE
    ).promote
    blocked = decide_promotion(values, {"popular": values.copy()}, None, RULE)
    assert not blocked.promote and "most popular baseline" in blocked.reason


def test_margin_and_confidence_demand_a_larger_and_surer_lead() -> None:
    champion = users(2000, 0.20, 9)
    slightly = np.maximum(champion, users(2000, 0.02, 10))  # about 8% better
    assert decide_promotion(slightly, {}, ChampionRefit("1", champion), RULE).promote
    assert not decide_promotion(
        slightly, {}, ChampionRefit("1", champion), PromotionRule("ndcg_at_k", 0.5, 0.5, 50)
    ).promote
    noisy = champion.copy()  # 30 users lose their hit, 31 others gain one: a coin flip
    noisy[np.flatnonzero(champion == 1)[:30]] = 0.0
    noisy[np.flatnonzero(champion == 0)[:31]] = 1.0
    assert decide_promotion(noisy, {}, ChampionRefit("1", champion), RULE).promote  # more likely than not
    strict = PromotionRule("ndcg_at_k", 0.0, 0.95, 50)
    decision = decide_promotion(noisy, {}, ChampionRefit("1", champion), strict)
    assert not decision.promote and decision.comparisons["champion"].probability < 0.95


def test_a_refit_with_the_champions_settings_needs_no_margin_over_it_but_baselines_still_gate() -> None:
    """The nightly retrain: fresher data, the champion's settings. Refitted on the same split, the
    champion IS the candidate; the margin is for a challenger with other settings."""
    rule = PromotionRule("ndcg_at_k", margin=0.01, confidence=0.9, min_test_users=50)
    values, popular = users(500, 0.3, 20), users(500, 0.1, 21)
    refit = decide_promotion(values, {"popular": popular}, ChampionRefit("3", values.copy(), True), rule)
    assert refit.promote and refit.status == PROMOTED
    assert refit.reason.startswith("same settings as champion version 3: a refit on fresher data, promoted;")
    assert set(refit.comparisons) == {"popular"}  # nothing to compare with the champion: it is itself
    # The same values from other settings: a tie, short of the 1% margin a challenger needs.
    challenger = decide_promotion(values, {"popular": popular}, ChampionRefit("3", values.copy()), rule)
    assert not challenger.promote and challenger.status == CHALLENGER
    assert "does not beat champion version 3 by the margin 1.0%" in challenger.reason
    # Same settings, but no better than the most popular items: not promoted.
    blocked = decide_promotion(
        values, {"popular": values.copy()}, ChampionRefit("3", values.copy(), True), rule
    )
    assert not blocked.promote and "most popular baseline" in blocked.reason


def test_too_few_users_or_a_nan_metric_is_insufficient_evidence() -> None:
    few = decide_promotion(users(49, 0.5, 12), {"popular": users(49, 0.0, 13)}, None, RULE)
    assert not few.promote and few.status == INSUFFICIENT_EVIDENCE
    assert "49 test users" in few.reason and "mlflow.min_test_users=50" in few.reason
    values = users(100, 0.5, 14)
    values[3] = np.nan
    nan = decide_promotion(values, {"popular": users(100, 0.0, 15)}, None, RULE)
    assert not nan.promote and nan.status == INSUFFICIENT_EVIDENCE and "NaN" in nan.reason
    baseline_nan = users(100, 0.0, 16)
    baseline_nan[0] = np.nan
    assert decide_promotion(users(100, 0.5, 17), {"popular": baseline_nan}, None, RULE).status == (
        INSUFFICIENT_EVIDENCE
    )


def test_paired_values_must_line_up() -> None:
    with pytest.raises(ValueError, match="same shape"):
        paired_comparison(np.zeros(3), np.zeros(4))

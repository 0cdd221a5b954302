"""Promotion rules: only a model that earns it becomes champion; operators can override."""

from __future__ import annotations

import pytest

from recspark.model.promotion import decide_promotion


def test_promotion_needs_to_beat_baseline_and_champion() -> None:
    assert decide_promotion(0.30, {"popular": 0.10}, None, 0.0, "ndcg").promote
    assert decide_promotion(0.30, {"popular": 0.10}, 0.29, 0.0, "ndcg").promote
    assert decide_promotion(0.30, {"popular": 0.10}, 0.30, 0.0, "ndcg").promote  # a tie: fresher data wins
    worse = decide_promotion(0.28, {"popular": 0.10}, 0.30, 0.0, "ndcg")
    assert not worse.promote and "champion" in worse.reason
    weak = decide_promotion(0.10, {"popular": 0.10}, None, 0.0, "ndcg")
    assert not weak.promote and "baseline" in weak.reason
    margin = decide_promotion(0.31, {"popular": 0.10}, 0.30, 0.05, "ndcg")
    assert not margin.promote and "margin 5.0%" in margin.reason


@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_baseline_margin_is_relative(margin: float) -> None:
    assert decide_promotion(0.2 * (1 + margin) + 1e-9, {"popular": 0.2}, None, margin, "m").promote
    assert not decide_promotion(0.2 * (1 + margin) - 1e-9, {"popular": 0.2}, None, margin, "m").promote


def test_every_configured_baseline_gates_promotion() -> None:
    both = {"popular": 0.10, "category_popular": 0.25}
    assert decide_promotion(0.30, both, None, 0.0, "ndcg").promote
    blocked = decide_promotion(0.20, both, None, 0.0, "ndcg")
    assert not blocked.promote and "popular in favourite categories baseline 0.2500" in blocked.reason
    assert decide_promotion(0.20, {"popular": 0.10}, None, 0.0, "ndcg").promote

"""The promotion rule: when a candidate model has earned the ``champion`` alias."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from recspark.core.config import BASELINE_LABELS


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    candidate: float,
    baselines: Mapping[str, float],
    champion: float | None,
    margin: float,
    metric: str,
) -> PromotionDecision:
    """Promote only a model that beats every gating baseline by the relative ``margin`` and
    does at least that much better than the champion on ``metric``, on the same test period.

    ``baselines``: baseline name -> score, for the configured ``mlflow.promotion_baselines``.
    A tie with the champion (margin 0) promotes: same quality, fresher data.
    """
    for name, score in baselines.items():
        if candidate <= score * (1.0 + margin):
            return PromotionDecision(
                False,
                f"{metric} {candidate:.4f} does not beat the {BASELINE_LABELS.get(name, name)} baseline "
                f"{score:.4f} by the margin {margin:.1%}",
            )
    if champion is not None and candidate < champion * (1.0 + margin):
        return PromotionDecision(
            False,
            f"{metric} {candidate:.4f} does not beat the champion's {champion:.4f} "
            f"by the margin {margin:.1%}",
        )
    against = "no champion yet" if champion is None else f"champion {champion:.4f}"
    beaten = ", ".join(f"{BASELINE_LABELS.get(n, n)} {s:.4f}" for n, s in baselines.items()) or "no baseline"
    return PromotionDecision(True, f"{metric} {candidate:.4f} beats baselines ({beaten}) and {against}")

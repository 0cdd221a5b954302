"""The promotion rule: when a candidate model has earned the ``champion`` alias.

Decisions are made on per-user metrics of the same test users, with a paired bootstrap: the
candidate must beat every gating baseline, and at least tie the champion's settings refitted on
the same split, each by the relative margin, with at least ``confidence`` bootstrap probability.
The champion is represented by its settings refitted on the candidate's training period, never by
the served model (which has seen part of the test period, so scoring it would flatter it); a
candidate with the champion's own settings *is* that refit: fresher data, nothing to compare, so
only the baselines gate it. Too few test users, or a metric that is not a number, is
*insufficient evidence*: nothing moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from recspark.core.config.model import BASELINE_LABELS
from recspark.model.evaluation.bootstrap import PairedComparison, mean_interval, paired_comparison

PROMOTED = "promoted"
CHALLENGER = "challenger"
INSUFFICIENT_EVIDENCE = "insufficient_evidence"


@dataclass(frozen=True)
class PromotionRule:
    metric: str
    margin: float = 0.0  # relative lead required, >= 0
    confidence: float = 0.5  # bootstrap probability of that lead required, in [0.5, 1)
    min_test_users: int = 50


@dataclass(frozen=True)
class ChampionRefit:
    """The champion as the rule sees it: ``version``'s settings refitted on the candidate's
    training period and scored on the same test users (``values``, aligned with the
    candidate's). ``same_settings``: the candidate was trained with those settings, so the refit
    is the candidate itself and the margin, meant for a challenger with other settings, does not
    apply."""

    version: str
    values: np.ndarray
    same_settings: bool = False


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    status: str  # PROMOTED | CHALLENGER | INSUFFICIENT_EVIDENCE
    reason: str
    # reference ("champion" or a baseline name) -> the paired comparison behind the decision
    comparisons: dict[str, PairedComparison] = field(default_factory=dict)


def _label(name: str, champion: ChampionRefit | None = None) -> str:
    if name == "champion":
        return "the champion" if champion is None else f"champion version {champion.version}"
    return f"the {BASELINE_LABELS.get(name, name)} baseline"


def decide_promotion(
    candidate: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    champion: ChampionRefit | None,
    rule: PromotionRule,
) -> PromotionDecision:
    """Decide on per-user values of ``rule.metric``, all aligned on the same test users.

    ``baselines``: gating baseline name -> its per-user values; ``champion``: the champion's
    settings refitted on the same split (None when there is no champion yet). A challenger with
    other settings must lead the refit by the margin; a tie promotes when the margin is 0 (same
    quality, fresher data). A candidate with the champion's settings is promoted on the baselines
    alone. A tie with a baseline never promotes.
    """
    values = np.asarray(candidate, dtype=np.float64)
    users = int(values.size)
    metric = rule.metric
    everything = [values, *baselines.values(), *([] if champion is None else [champion.values])]
    if users < rule.min_test_users:
        return PromotionDecision(
            False,
            INSUFFICIENT_EVIDENCE,
            f"insufficient evidence: {users} test users with a relevant item, fewer than "
            f"mlflow.min_test_users={rule.min_test_users}",
        )
    if any(np.isnan(np.asarray(v, dtype=np.float64)).any() for v in everything):
        return PromotionDecision(
            False, INSUFFICIENT_EVIDENCE, f"insufficient evidence: {metric} is not a number (NaN)"
        )
    comparisons: dict[str, PairedComparison] = {}
    references = [(name, np.asarray(v), True) for name, v in baselines.items()]
    if champion is not None and not champion.same_settings:
        references.append(("champion", np.asarray(champion.values), False))
    for name, reference, strict in references:
        comparison = paired_comparison(values, reference, margin=rule.margin, strict=strict)
        comparisons[name] = comparison
        label = _label(name, champion)
        if comparison.probability < rule.confidence or math.isnan(comparison.probability):
            return PromotionDecision(
                False,
                CHALLENGER,
                f"does not beat {label} by the margin {rule.margin:.1%} with probability "
                f">= {rule.confidence:.2f}: {comparison.describe(metric, label)}",
                comparisons,
            )
    interval = mean_interval(values)
    beaten = "; ".join(c.describe(metric, _label(n, champion)) for n, c in comparisons.items())
    if champion is None:
        against = f"{metric} {interval} on {users} test users (no champion yet)"
    elif champion.same_settings:
        against = (
            f"same settings as champion version {champion.version}: a refit on fresher data, promoted; "
            f"{metric} {interval} on {users} test users"
        )
    else:
        against = f"{metric} {interval} on {users} test users"
    return PromotionDecision(
        True, PROMOTED, against + (f"; {beaten}" if beaten else "; no gating baseline"), comparisons
    )

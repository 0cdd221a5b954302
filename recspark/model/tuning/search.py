"""Tuning: which family, with which settings, on a validation period before the test period.

The validation period is carved out of the training period the way the test period was carved
out of all events, and the models are fitted on what came before it, so choosing settings never
looks at the test period: the test scores `train` reports stay an honest estimate. Each family's
configured settings are tried first, then its grid, round robin across families, until the time
budget is spent; blends of the best ALS and the best EASE are then scored without another fit,
within the same budget, and win only when measured better than both. One parent MLflow run
holds a nested run per trial; the plan is written where `train` reads it.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TypedDict

import mlflow
from pyspark.sql import SparkSession

from recspark.core.config import Config, TuneConfig
from recspark.core.registry import configure_mlflow
from recspark.core.tables import Lake
from recspark.model.candidates.sources import CATEGORY_POPULAR, POPULAR, TRENDING
from recspark.model.evaluation.holdout import Holdout
from recspark.model.evaluation.inputs import TrainInputs, read_inputs
from recspark.model.evaluation.splits import (
    AUTO,
    PER_USER,
    Split,
    SplitError,
    SplitPolicy,
    choose_split,
    split_period,
)
from recspark.model.families.data import TrainingError
from recspark.model.families.model import ALS, BLEND, EASE, FittedModel, ModelSpec, fit_model
from recspark.model.tuning.plan import TunedPlan, tuned_params_path, write_tuned

log = logging.getLogger(__name__)


class AlsPoint(TypedDict):
    """One point of the ALS grid: the ``train`` settings tuning varies."""

    rank: int
    reg_param: float
    alpha: float


def search_space(tune: TuneConfig) -> list[AlsPoint]:
    """The ALS grid of rank x reg_param x alpha; ``max_trials`` points of it drawn with ``seed``
    when it is larger (kept in grid order, so a run is reproducible)."""
    grid = [
        AlsPoint(rank=rank, reg_param=reg_param, alpha=alpha)
        for rank, reg_param, alpha in itertools.product(tune.rank, tune.reg_param, tune.alpha)
    ]
    if len(grid) <= tune.max_trials:
        return grid
    chosen = sorted(random.Random(tune.seed).sample(range(len(grid)), tune.max_trials))
    return [grid[i] for i in chosen]


def candidate_specs(config: Config) -> dict[str, list[ModelSpec]]:
    """Per family, the configured settings first, then the rest of its grid."""
    base = ModelSpec(ALS, als=config.train, ease_l2=config.ease.l2, ease_signal=config.ease.signal)
    specs: dict[str, list[ModelSpec]] = {}
    if ALS in config.train.families:
        grid = [replace(base, als=replace(config.train, **point)) for point in search_space(config.tune)]
        specs[ALS] = _unique([base, *grid])
    if EASE in config.train.families:
        ease = replace(base, family=EASE)
        grid = [
            replace(ease, ease_l2=l2, ease_signal=signal)
            for signal, l2 in itertools.product(config.tune.ease_signal, config.tune.ease_l2)
        ]
        specs[EASE] = _unique([ease, *grid])
    return specs


def _unique(specs: list[ModelSpec]) -> list[ModelSpec]:
    seen, unique = set(), []
    for spec in specs:
        key = tuple(sorted(spec.params().items()))
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def _round_robin(queues: dict[str, list[ModelSpec]]) -> Iterator[ModelSpec]:
    """The families' first (configured) points, then their second points, and so on."""
    for layer in itertools.zip_longest(*queues.values()):
        yield from (spec for spec in layer if spec is not None)


@dataclass
class Search:
    winner: ModelSpec
    scores: dict[str, float]  # family -> best validation score
    best: dict[str, ModelSpec]  # family -> best settings
    fallback: str  # what fills lists after popular-in-your-categories: trending | popular
    trials: list[tuple[ModelSpec, float]] = field(default_factory=list)


def measure_fallback(config: Config, holdout: Holdout) -> str:
    """Trending or all-time popular, whichever fills the fallback chain better on the validation
    period (on a sparse shop a week's trend is mostly noise; on a busy one it is fresher)."""
    metric = config.tune.metric
    scores = {}
    for fill in (TRENDING, POPULAR):
        scored = holdout.score(f"fallback-{fill}", holdout.lists(None, (CATEGORY_POPULAR, fill)))
        scores[fill] = scored.metrics[metric.removesuffix("_at_k")]
    choice = TRENDING if scores[TRENDING] > scores[POPULAR] else POPULAR
    log.info(
        "tune: fallback fill %s (%s: trending %.4f, popular %.4f)",
        choice,
        metric,
        scores[TRENDING],
        scores[POPULAR],
    )
    return choice


def search(spark: SparkSession, config: Config, holdout: Holdout, budget_seconds: float) -> Search:
    """Score the candidates on ``holdout`` (nested MLflow runs under the active run).

    ``budget_seconds`` bounds the whole search, blends included: once it is spent, no further
    point is tried, except each family's configured one and a blend at its first weight, so
    every configured family (and their blend) is always measured. (Scoring a blend costs as
    much as a fit at 5M events, and blends used to be scored after the budget, whatever it was.)"""
    metric = config.tune.metric
    started = time.time()
    fallback = measure_fallback(config, holdout) if config.serve.fallback == AUTO else config.serve.fallback
    holdout.chain = (CATEGORY_POPULAR, fallback)
    trials: list[tuple[ModelSpec, float]] = []
    best: dict[str, tuple[float, FittedModel]] = {}
    queues = candidate_specs(config)
    total = sum(len(q) for q in queues.values())

    def spent() -> bool:
        return time.time() - started > budget_seconds

    for number, spec in enumerate(_round_robin(queues), start=1):
        if spec.family in best and spent():
            log.info("tune: budget of %.0fs spent after %d of %d trials", budget_seconds, len(trials), total)
            break
        model = fit_model(spark, spec, holdout.data, config.ease)
        score = _trial(holdout, spec, model, metric, number)
        trials.append((spec, score))
        log.info("tune: trial %d/%d %s -> %s %.4f", number, total, spec.label(), metric, score)
        if spec.family not in best or score > best[spec.family][0]:  # ties keep the earlier setting
            if spec.family in best:
                best[spec.family][1].unpersist()
            best[spec.family] = (score, model)
        else:
            model.unpersist()
    if config.train.blend and ALS in best and EASE in best:
        als_model, ease_model = best[ALS][1], best[EASE][1]
        blended = None
        weights = list(config.tune.blend_weight)
        for index, weight in enumerate(weights):
            if blended is not None and spent():
                log.info("tune: budget %.0fs spent: no blend at weights %s", budget_seconds, weights[index:])
                break
            spec = ModelSpec(
                BLEND,
                als=als_model.spec.als,
                ease_l2=ease_model.spec.ease_l2,
                ease_signal=ease_model.spec.ease_signal,
                blend_weight=weight,
            )
            model = FittedModel(
                spec,
                als_model.user_factors,
                als_model.item_factors,
                ease_model.similarity,
                local_similarity=ease_model.local_similarity,
                prepared_weights=ease_model.prepared_weights,  # built once, for every blend weight
            )
            score = _trial(holdout, spec, model, metric, len(trials) + 1)
            trials.append((spec, score))
            log.info("tune: blend %s -> %s %.4f", spec.label(), metric, score)
            if blended is None or score > blended[0]:
                blended = (score, model)
        assert blended is not None
        best[BLEND] = blended
    for _, model in best.values():
        model.unpersist()
    scores = {family: score for family, (score, _) in best.items()}
    winner = winner_of(scores)
    return Search(best[winner][1].spec, scores, {f: m.spec for f, (_, m) in best.items()}, fallback, trials)


def winner_of(scores: dict[str, float]) -> str:
    """The family with the best validation score; a blend costs two models, so it wins only when
    measured better than each of its halves (ties go to the single model)."""
    singles = {f: v for f, v in scores.items() if f != BLEND}
    best = max(singles, key=lambda f: singles[f])
    if BLEND in scores and scores[BLEND] > singles[best]:
        return BLEND
    return best


def _trial(holdout: Holdout, spec: ModelSpec, model: FittedModel, metric: str, number: int) -> float:
    with mlflow.start_run(run_name=f"trial-{number}-{spec.family}", nested=True):
        mlflow.log_params({k: v for k, v in spec.params().items()})
        scored = holdout.score_model(spec.family, model)
        metrics = {f"{name}_at_k": value for name, value in scored.metrics.items() if name != "users"}
        mlflow.log_metrics({**metrics, "validation_users": scored.metrics["users"]})
    return metrics[metric]


def validation_policy(config: Config, test_split: Split) -> SplitPolicy:
    """How the validation events are held out of the training period: ``tune.validation_split``
    (per user by default: every user's newest events are the most evidence to choose settings
    with; a time split of a few weeks holds a fraction of those users, and its noise picks
    settings at random). A per-user test split always has a per-user validation split."""
    train = config.train
    chosen = config.tune.validation_split
    return SplitPolicy(
        split=PER_USER if test_split.policy == PER_USER else chosen,
        days=config.tune.validation_days,
        min_test_users=train.min_test_users,
        max_test_share=train.max_test_share,
        test_fraction=train.test_fraction,
        days_key="tune.validation_days",
    )


def tune_on(spark: SparkSession, config: Config, lake: Lake, inputs: TrainInputs) -> TunedPlan:
    """Carve the validation period out of the test split's training events, search, and write
    the plan; raises TrainingError when no validation period can be carved."""
    test_split, all_interactions, versions = inputs.split, inputs.interactions, inputs.versions
    catalog, eligible = inputs.catalog, inputs.eligible
    try:
        validation = choose_split(test_split.train_events, validation_policy(config, test_split))
    except SplitError as exc:
        raise TrainingError(f"cannot carve a validation period out of the training period: {exc}") from exc
    data = split_period(
        spark,
        config,
        lake,
        validation,
        all_interactions=all_interactions,
        period="the validation training period",
    )
    holdout = Holdout(spark, config, validation, data, catalog, eligible)
    path = tuned_params_path(config, lake)
    tune = config.tune
    try:
        with mlflow.start_run(run_name="tune", nested=mlflow.active_run() is not None) as parent:
            mlflow.log_params(
                {
                    "grid_rank": tune.rank,
                    "grid_reg_param": tune.reg_param,
                    "grid_alpha": tune.alpha,
                    "grid_ease_l2": tune.ease_l2,
                    "grid_ease_signal": tune.ease_signal,
                    "grid_blend_weight": tune.blend_weight,
                    "families": ",".join(config.train.families),
                    "metric": tune.metric,
                    "budget_seconds": tune.budget_seconds,
                    **{f"data_version_{name}": v for name, v in versions.items()},
                }
            )
            mlflow.set_tags({**validation.tags("validation"), "best_params_path": path})
            found = search(spark, config, holdout, tune.budget_seconds)
            plan = TunedPlan(
                family=found.winner.family,
                params={family: spec.params() for family, spec in found.best.items()},
                scores=found.scores,
                metric=tune.metric,
                run_id=parent.info.run_id,
                created_at=datetime.now(timezone.utc).isoformat(),
                positives=inputs.positives,
                validation=validation.describe(),
                fallback=found.fallback,
            )
            text = write_tuned(spark, path, plan)
            mlflow.log_params({f"best_{k}": v for k, v in found.winner.params().items()})
            mlflow.log_metric(f"best_{tune.metric}", plan.value)
            mlflow.log_metrics({f"best_{family}_{tune.metric}": v for family, v in found.scores.items()})
            mlflow.log_text(text, "best_params.json")
    finally:
        holdout.unpersist()
        data.unpersist()
        validation.unpersist()
    log.info(
        "tune: %s wins (%s %.4f on %s), written to %s",
        found.winner.label(),
        tune.metric,
        plan.value,
        plan.validation,
        path,
    )
    return plan


@dataclass
class TuneResult:
    run_id: str
    plan: TunedPlan
    path: str


def tune(spark: SparkSession, config: Config, lake: Lake) -> TuneResult:
    """`recspark tune`: search on the validation period before the test period `train` uses."""
    configure_mlflow(config.mlflow)
    spark.sparkContext.setCheckpointDir(lake.path("_checkpoints/als"))
    inputs = read_inputs(spark, config, lake)
    try:
        plan = tune_on(spark, config, lake, inputs)
    finally:
        inputs.unpersist()
    return TuneResult(plan.run_id, plan, tuned_params_path(config, lake))

"""Tuning: which family, with which settings, on a validation period before the test period.

The validation period is carved out of the training period the way the test period was carved
out of all events, and the models are fitted on what came before it, so choosing settings never
looks at the test period: the test scores `train` reports stay an honest estimate. What every
trial shares (the split, its data, the lists' fallback candidates, the relevant items) is built
once; the trials run on the driver when the period is small enough, else in Spark
(:mod:`recspark.model.tuning.trials`). EASE's settings come first (a λ grid per signal from one Gram
matrix), then ALS's (by successive halving where fits can be continued), each family's
configured settings first; blends of the best ALS and the best EASE are then scored without
another fit, and win only when measured better than both. A hard time budget: no trial starts
that its estimate says cannot finish inside it (:class:`~recspark.model.tuning.budget.Budget`). One
parent MLflow run holds a nested run per trial; the plan is written where `train` reads it.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, TypedDict

import mlflow
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.config.checks import AUTO
from recspark.core.config.model import TuneConfig
from recspark.core.console import DETAIL, Progress
from recspark.core.registry import configure_mlflow
from recspark.core.tables import Lake
from recspark.model.candidates.sources import CATEGORY_POPULAR, POPULAR, TRENDING
from recspark.model.evaluation.holdout import Holdout, Scored
from recspark.model.evaluation.inputs import TrainInputs, read_inputs
from recspark.model.evaluation.splits import (
    PER_USER,
    Split,
    SplitError,
    SplitPolicy,
    choose_split,
    split_period,
)
from recspark.model.families.data import TrainingError
from recspark.model.families.ease import PATH_MIN_L2S
from recspark.model.families.model import ALS, BLEND, EASE, ModelSpec
from recspark.model.tuning.budget import Budget, Cost
from recspark.model.tuning.plan import TunedPlan, tuned_params_path, write_tuned
from recspark.model.tuning.trials import (
    DECOMPOSITION_PER_UNIT,
    EASE_FIT_PER_UNIT,
    LocalTrials,
    SparkTrials,
    Trials,
)

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


@dataclass
class Trial:
    """One measured setting: its spec (``als.max_iter``: the iterations it had), its score, and
    the seconds its fit (what it added to an earlier fit, for a continued one) and scoring took."""

    spec: ModelSpec
    score: float
    fit_seconds: float
    score_seconds: float


@dataclass
class Search:
    winner: ModelSpec
    scores: dict[str, float]  # family -> best validation score
    best: dict[str, ModelSpec]  # family -> best settings
    fallback: str  # what fills lists after popular-in-your-categories: trending | popular
    trials: list[Trial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # steps the budget did not start
    on_driver: bool = False  # whether the trials ran on the driver (LocalTrials)


def measure_fallback(config: Config, trials: Trials) -> str:
    """Trending or all-time popular, whichever fills the fallback chain better on the validation
    period (on a sparse shop a week's trend is mostly noise; on a busy one it is fresher)."""
    metric = config.tune.metric
    scores = {}
    for fill in (TRENDING, POPULAR):
        scored = trials.score_fallback((CATEGORY_POPULAR, fill))
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


def halving_rungs(points: int, max_iter: int) -> list[tuple[int, int]]:
    """Successive halving of ``points`` ALS settings: (iterations, settings) per rung. With more
    than two settings, every one gets half of ``max_iter`` and the better half is continued to
    all of it. One halving, not more: a quarter of the iterations ranks settings by how fast they
    converge (low ranks are slower and often better), not by where they end."""
    half = math.ceil(max_iter / 2)
    if points <= 2 or half >= max_iter:
        return [(max_iter, points)]
    return [(half, points), (max_iter, math.ceil(points / 2))]


TrialLogger = Callable[[int, ModelSpec, Scored, Trial], None]


def log_nested_run(number: int, spec: ModelSpec, scored: Scored, trial: Trial) -> None:
    """One trial as a nested MLflow run: its settings, metrics and seconds."""
    with mlflow.start_run(run_name=f"trial-{number}-{spec.family}", nested=True):
        mlflow.log_params(spec.params())
        metrics = {f"{name}_at_k": value for name, value in scored.metrics.items() if name != "users"}
        seconds = {"fit_seconds": trial.fit_seconds, "score_seconds": trial.score_seconds}
        mlflow.log_metrics({**metrics, "validation_users": scored.metrics["users"], **seconds})


class Searcher:
    """One search's state: the trials so far, each family's best model, the budget."""

    def __init__(
        self, config: Config, trials: Trials, budget: Budget, log_trial: TrialLogger | None = None
    ) -> None:
        self.config = config
        self.trials = trials
        self.budget = budget
        self.log_trial = log_trial or log_nested_run
        self.metric = config.tune.metric
        self.measured: list[Trial] = []
        self.progress = Progress(log)  # the trials themselves go to the log file
        self.best: dict[str, tuple[float, ModelSpec, Any]] = {}  # family -> score, spec, model

    def record(self, spec: ModelSpec, model: Any, fit_seconds: float) -> float:
        """Score ``model``, log the trial (a nested MLflow run) and return its score."""
        number = len(self.measured) + 1
        cost = self.trials.score_cost(spec.family)
        started = time.time()
        with self.budget.measuring(cost.kind, cost.work):  # logging included: it takes time too
            scored = self.trials.score(spec.family, model)
            score = scored.metrics[self.metric.removesuffix("_at_k")]
            trial = Trial(spec, score, fit_seconds, time.time() - started)
            self.log_trial(number, spec, scored, trial)
        self.measured.append(trial)
        log.info(
            "tune: trial %d %s -> %s %.4f (fit %.1fs, scoring %.1fs)",
            number,
            spec.label(),
            self.metric,
            score,
            trial.fit_seconds,
            trial.score_seconds,
            extra=DETAIL,
        )
        best = max(t.score for t in self.measured)
        self.progress.tick(f"tune: {number} trials so far, best {self.metric} {best:.4f}")
        return score

    def keep_if_best(self, family: str, score: float, spec: ModelSpec, model: Any) -> None:
        """Ties keep the earlier setting; a model that is no family's best is released."""
        if family not in self.best or score > self.best[family][0]:
            if family in self.best:
                self.trials.release(self.best[family][2])
            self.best[family] = (score, spec, model)
        else:
            self.trials.release(model)

    def ease(self, specs: list[ModelSpec]) -> None:
        """Every EASE setting, one signal at a time: each signal's λ grid from one Gram matrix
        (and one eigendecomposition of it, for a grid long enough to pay)."""
        by_signal: dict[str, list[ModelSpec]] = {}
        for spec in specs:
            by_signal.setdefault(spec.ease_signal, []).append(spec)
        for group in by_signal.values():
            cube = float(len(self.trials.gram(group[0].ease_signal).item_ids)) ** 3
            decomposes = len(group) >= PATH_MIN_L2S
            path = self.trials.ease_models(group)
            for index, spec in enumerate(group):
                parts = [Cost("ease fit", cube, EASE_FIT_PER_UNIT), self.trials.score_cost(EASE)]
                first_of_path = decomposes and index == 0
                if first_of_path:
                    parts.append(Cost("ease decomposition", cube, DECOMPOSITION_PER_UNIT))
                if not self.budget.allows(spec.label(), parts):
                    return
                started = time.time()
                with self.budget.measuring("ease decomposition" if first_of_path else "ease fit", cube):
                    _, model = next(path)
                score = self.record(spec, model, time.time() - started)
                self.keep_if_best(EASE, score, spec, model)

    def als(self, specs: list[ModelSpec]) -> None:
        """The ALS settings by successive halving when fits can be continued (each rung's better
        part continued from where it stopped), else each fitted in full once. The family's best
        is the best of the deepest rung reached: all of ``max_iter`` unless the budget ends the
        halving early."""
        max_iter = self.config.train.max_iter
        rungs = halving_rungs(len(specs), max_iter) if self.trials.warm_starts else [(max_iter, len(specs))]
        fits: dict[int, Any] = {}
        done = dict.fromkeys(range(len(specs)), 0)
        alive = list(range(len(specs)))
        best: tuple[float, ModelSpec, Any] | None = None
        for iterations, keep in rungs:
            scores: dict[int, float] = {}
            rung_best: tuple[float, ModelSpec, Any] | None = None
            for index in alive[:keep]:
                spec = specs[index]
                fit_cost = self.trials.als_cost(spec.als.rank, iterations - done[index])
                label = f"{spec.label()} to {iterations} iterations"
                if not self.budget.allows(label, [fit_cost, self.trials.score_cost(ALS)]):
                    break
                started = time.time()
                with self.budget.measuring(fit_cost.kind, fit_cost.work):
                    fits[index], model = self.trials.als_model(spec, iterations, fits.get(index))
                done[index] = iterations
                at = replace(spec, als=replace(spec.als, max_iter=iterations))
                scores[index] = self.record(at, model, time.time() - started)
                if rung_best is None or scores[index] > rung_best[0]:  # ties keep grid order
                    if rung_best is not None:
                        self.trials.release(rung_best[2])
                    rung_best = (scores[index], spec, model)
                else:
                    self.trials.release(model)
            if rung_best is not None:
                if best is not None:
                    self.trials.release(best[2])
                best = rung_best
            if len(scores) < min(keep, len(alive)):  # the budget stopped this rung
                break
            alive = sorted(scores, key=lambda i: -scores[i])  # stable: ties keep grid order
        if best is not None:
            self.best[ALS] = best

    def blends(self) -> None:
        """Blends of the best ALS and the best EASE at each configured weight, no refit."""
        (_, als_spec, als_model), (_, ease_spec, ease_model) = self.best[ALS], self.best[EASE]
        for weight in self.config.tune.blend_weight:
            spec = ModelSpec(
                BLEND,
                als=als_spec.als,
                ease_l2=ease_spec.ease_l2,
                ease_signal=ease_spec.ease_signal,
                blend_weight=weight,
            )
            if not self.budget.allows(spec.label(), [self.trials.score_cost(BLEND)]):
                return
            model = self.trials.blend(spec, als_model, ease_model)
            score = self.record(spec, model, 0.0)
            if BLEND not in self.best or score > self.best[BLEND][0]:
                self.best[BLEND] = (score, spec, model)

    def release(self) -> None:
        for family, (_, _, model) in self.best.items():
            if family != BLEND:
                self.trials.release(model)
        self.trials.close()


def search(spark: SparkSession, config: Config, holdout: Holdout, budget_seconds: float) -> Search:
    """Score the candidates on ``holdout`` (nested MLflow runs under the active run).

    Trials run on the driver when the validation training period has at most
    ``train.driver_max_pairs`` positive pairs (:class:`LocalTrials`), else in Spark. EASE first
    (one Gram matrix per signal, every λ from it), then ALS (successive halving on the driver),
    then blends of the two bests. ``budget_seconds`` is hard: no trial starts that cannot finish
    inside it by the estimate of :class:`Budget`; a family with no finished trial does not
    compete, and no trial at all is a TrainingError (train then uses the configured settings)."""
    budget = Budget(budget_seconds)
    chains = (
        ((CATEGORY_POPULAR, TRENDING), (CATEGORY_POPULAR, POPULAR)) if config.serve.fallback == AUTO else ()
    )
    started = time.time()
    local = holdout.on_driver(*chains)
    trials: Trials = SparkTrials(spark, config, holdout) if local is None else LocalTrials(config, local)
    log.info(
        "tune: %d positive pairs (train.driver_max_pairs=%d): trials %s, set up in %.1fs",
        holdout.data.positives,
        config.train.driver_max_pairs,
        "in Spark" if local is None else "on the driver",
        time.time() - started,
    )
    fallback = measure_fallback(config, trials) if config.serve.fallback == AUTO else config.serve.fallback
    trials.use_chain((CATEGORY_POPULAR, fallback))
    searcher = Searcher(config, trials, budget)
    queues = candidate_specs(config)
    try:
        if EASE in queues:
            searcher.ease(queues[EASE])
        if ALS in queues:
            searcher.als(queues[ALS])
        if config.train.blend and ALS in searcher.best and EASE in searcher.best:
            searcher.blends()
        if not searcher.best:
            raise TrainingError(
                f"tune.budget_seconds={budget_seconds:g} leaves no room for a single trial: "
                + "; ".join(budget.skipped)
            )
        scores = {family: score for family, (score, _, _) in searcher.best.items()}
        best = {family: spec for family, (_, spec, _) in searcher.best.items()}
    finally:
        searcher.release()
    log.info(
        "tune: %d trials in %.1fs (budget %.0fs)%s",
        len(searcher.measured),
        budget.elapsed(),
        budget_seconds,
        f"; not started: {'; '.join(budget.skipped)}" if budget.skipped else "",
    )
    return Search(
        best[winner_of(scores)], scores, best, fallback, searcher.measured, budget.skipped, local is not None
    )


def winner_of(scores: dict[str, float]) -> str:
    """The family with the best validation score; a blend costs two models, so it wins only when
    measured better than each of its halves (ties go to the single model)."""
    singles = {f: v for f, v in scores.items() if f != BLEND}
    best = max(singles, key=lambda f: singles[f])
    if BLEND in scores and scores[BLEND] > singles[best]:
        return BLEND
    return best


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
            mlflow.set_tags(
                {
                    "trials_on": "driver" if found.on_driver else "spark",
                    "budget_not_started": "; ".join(found.skipped)[:5000] or "none",
                }
            )
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

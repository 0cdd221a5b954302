"""`recspark tune`: a small search over rank, reg_param and alpha on a validation split.

The validation period is the last ``tune.validation_days`` before the test period that `train`
evaluates on, and the models are fitted on what came before it, so choosing settings never looks
at the test period: the test scores `train` reports stay an honest estimate. One parent MLflow
run holds a nested child run per trial; the best settings are written where `train` reads them.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, replace

import mlflow
from pyspark.sql import SparkSession

from recspark.core.config import Config, TuneConfig
from recspark.core.registry import configure_mlflow
from recspark.core.tables import EVENTS, INTERACTIONS, Lake
from recspark.model.evaluation import EvaluationError, TimeSplit, time_split
from recspark.model.train import TrainingError, evaluate_split, training_period
from recspark.model.tuned_params import TUNED_KEYS, TunedParams, tuned_params_path, write_tuned

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    run_id: str
    best: TunedParams
    trials: list[tuple[dict[str, float], float]]  # (settings, validation score) in trial order
    path: str


def search_space(tune: TuneConfig) -> list[dict[str, float]]:
    """The grid of rank x reg_param x alpha; ``max_trials`` points of it drawn with ``seed`` when
    it is larger (kept in grid order, so a run is reproducible)."""
    grid = [
        dict(zip(TUNED_KEYS, point, strict=True))
        for point in itertools.product(tune.rank, tune.reg_param, tune.alpha)
    ]
    if len(grid) <= tune.max_trials:
        return grid
    chosen = sorted(random.Random(tune.seed).sample(range(len(grid)), tune.max_trials))
    return [grid[i] for i in chosen]


def validation_split(events, config: Config) -> TimeSplit:
    """Train/validation split inside the training period (the test period is cut off first)."""
    before_test = time_split(events, config.train.test_days).train_events
    return time_split(before_test, config.tune.validation_days)


def tune(spark: SparkSession, config: Config, lake: Lake) -> TuneResult:
    """Run the search, log it to MLflow and write the best settings; returns what was chosen."""
    settings = config.train
    metric = config.tune.metric
    configure_mlflow(config.mlflow)
    spark.sparkContext.setCheckpointDir(lake.path("_checkpoints/als"))
    versions = {"events": lake.version(spark, EVENTS), "interactions": lake.version(spark, INTERACTIONS)}
    events = lake.read(spark, EVENTS, versions["events"])
    interactions = lake.read(spark, INTERACTIONS, versions["interactions"])
    try:
        split = validation_split(events, config)
    except EvaluationError as exc:
        raise TrainingError(f"cannot carve a validation period out of the training period: {exc}") from exc
    period = training_period(spark, config, lake, split, interactions, settings, "validation")
    train_interactions, user_ids, item_ids = period.interactions, period.user_ids, period.item_ids
    space = search_space(config.tune)
    path = tuned_params_path(config, lake)
    trials: list[tuple[dict[str, float], float]] = []
    with mlflow.start_run(run_name="als-tune") as parent:
        mlflow.log_params(
            {
                "grid_rank": config.tune.rank,
                "grid_reg_param": config.tune.reg_param,
                "grid_alpha": config.tune.alpha,
                "trials": len(space),
                "metric": metric,
                "validation_days": config.tune.validation_days,
                "test_days": settings.test_days,
                "max_iter": settings.max_iter,
                "seed": settings.seed,
                "confidence": settings.confidence,
                **{f"data_version_{name}": v for name, v in versions.items()},
            }
        )
        mlflow.set_tags({"validation_cutoff": split.cutoff.isoformat(), "best_params_path": path})
        for number, point in enumerate(space, start=1):
            trial = replace(settings, **point)
            with mlflow.start_run(run_name=f"trial-{number}", nested=True):
                mlflow.log_params({**point, "max_iter": trial.max_iter, "k": trial.k})
                try:
                    scores = evaluate_split(
                        spark,
                        config,
                        train_interactions,
                        split.test_events,
                        user_ids,
                        item_ids,
                        trial,
                        baselines=False,
                    ).metrics
                except EvaluationError as exc:
                    raise TrainingError(f"validation period unusable: {exc}") from exc
                mlflow.log_metrics(scores)
            trials.append((point, scores[metric]))
            log.info("tune: trial %d/%d %s -> %s %.4f", number, len(space), point, metric, scores[metric])
        best_point, best_value = trials[0]
        for point, value in trials[1:]:
            if value > best_value:  # ties keep the earlier (smaller, cheaper) setting
                best_point, best_value = point, value
        best = TunedParams(
            params=best_point,
            run_id=parent.info.run_id,
            metric=metric,
            value=best_value,
            validation_cutoff=split.cutoff.isoformat(),
        )
        text = write_tuned(spark, path, best)
        mlflow.log_params({f"best_{k}": v for k, v in best_point.items()})
        mlflow.log_metric(f"best_{metric}", best_value)
        mlflow.log_text(text, "best_params.json")
    train_interactions.unpersist()
    log.info("tune: best %s (%s %.4f) written to %s", best_point, metric, best_value, path)
    return TuneResult(parent.info.run_id, best, trials, path)

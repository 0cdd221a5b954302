"""Implicit-feedback ALS: evaluate on a time-based holdout, refit on all data, track in MLflow,
and promote the model only when it earns it."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import mlflow
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.config import Config, TrainConfig
from recspark.evaluation import (
    EvaluationError,
    catalog_metrics,
    ranking_metrics,
    relevant_items,
    time_split,
)
from recspark.idmap import extend_user_and_item_maps
from recspark.interactions import aggregate_events, strength_as_of
from recspark.quality import run_gate
from recspark.tables import EVENTS, INTERACTIONS, Lake
from recspark.topn import recommend_top_n
from recspark.tracking import (
    CHALLENGER,
    CHAMPION,
    champion_version,
    configure_mlflow,
    decide_promotion,
    set_alias,
)

log = logging.getLogger(__name__)

HYPERPARAMETERS = ("rank", "reg_param", "alpha", "max_iter", "confidence")


class TrainingError(RuntimeError):
    """Training cannot produce a trustworthy model from the data at hand."""


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    promoted: bool
    reason: str
    metrics: dict[str, float]
    data_versions: dict[str, int]
    phase_seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.time()
    log.info("train: %s ...", name)
    yield
    timings[name] = round(time.time() - started, 2)
    log.info("train: %s done in %.1fs", name, timings[name])


def preference(settings: TrainConfig) -> Column:
    """The rating ALS sees for a pair (confidence = 1 + alpha * rating)."""
    return F.log1p("strength") if settings.confidence == "log" else F.col("strength")


def als_ratings(
    interactions: DataFrame, user_ids: DataFrame, item_ids: DataFrame, settings: TrainConfig
) -> DataFrame:
    """ALS input: integer ids and the preference signal of every positive pair."""
    return (
        interactions.where(F.col("strength") > 0)
        .join(user_ids, "user_id")
        .join(item_ids, "item_id")
        .select("user_idx", "item_idx", preference(settings).cast("float").alias("rating"))
    )


def fit_als(ratings: DataFrame, settings: TrainConfig) -> ALSModel:
    als = ALS(
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="rating",
        implicitPrefs=True,
        rank=settings.rank,
        regParam=settings.reg_param,
        alpha=settings.alpha,
        maxIter=settings.max_iter,
        seed=settings.seed,
        numUserBlocks=settings.num_user_blocks,
        numItemBlocks=settings.num_item_blocks,
        checkpointInterval=settings.checkpoint_interval,
        coldStartStrategy="drop",
    )
    return als.fit(ratings)


def factor_tables(model: ALSModel, user_ids: DataFrame, item_ids: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The model's factors keyed by the shop's own ids."""
    users = model.userFactors.join(user_ids, F.col("id") == F.col("user_idx")).select("user_id", "features")
    items = model.itemFactors.join(item_ids, F.col("id") == F.col("item_idx")).select("item_id", "features")
    return users, items


def item_popularity(interactions: DataFrame) -> DataFrame:
    """How many users interacted positively with each item: the baseline everyone must beat."""
    return (
        interactions.where(F.col("strength") > 0)
        .groupBy("item_id")
        .agg(F.count("*").cast("double").alias("popularity"))
    )


def purchased_items(interactions: DataFrame) -> DataFrame:
    """Per user, the items the serving stage never recommends again."""
    return (
        interactions.where(F.col("purchase_count") > 0)
        .groupBy("user_id")
        .agg(F.collect_list("item_id").alias("exclude"))
    )


def popular_recommendations(
    spark: SparkSession, users: DataFrame, popularity: DataFrame, n: int, block: int
) -> DataFrame:
    """Most popular items per user (minus exclusions), through the same top-N path as ALS."""
    user_vectors = users.withColumn("features", F.array(F.lit(1.0).cast("float")))
    item_vectors = popularity.select("item_id", F.array(F.col("popularity").cast("float")).alias("features"))
    return recommend_top_n(spark, user_vectors, item_vectors, n, block)


def evaluate_split(
    spark: SparkSession,
    config: Config,
    train_interactions: DataFrame,
    test_events: DataFrame,
    user_ids: DataFrame,
    item_ids: DataFrame,
    settings: TrainConfig,
) -> tuple[dict[str, float], ALSModel]:
    """Fit on the training period and score model and baseline on the test period."""
    k = settings.k
    model = fit_als(als_ratings(train_interactions, user_ids, item_ids, settings), settings)
    relevant = relevant_items(
        test_events, train_interactions, config.interactions, config.serve.exclude_purchased
    ).persist()
    test_users = relevant.select("user_id").distinct()
    exclusions = purchased_items(train_interactions) if config.serve.exclude_purchased else None
    users = test_users if exclusions is None else test_users.join(exclusions, "user_id", "left")
    user_factors, item_factors = factor_tables(model, user_ids, item_ids)
    model_recs = recommend_top_n(
        spark, users.join(user_factors, "user_id"), item_factors, k, config.serve.users_per_block
    )
    popularity = item_popularity(train_interactions).persist()
    baseline_recs = popular_recommendations(spark, users, popularity, k, config.serve.users_per_block)
    catalog_size = train_interactions.select("item_id").distinct().count()
    metrics: dict[str, float] = {}
    for prefix, recs in (("", model_recs), ("popular_", baseline_recs)):
        recs = recs.persist()
        scores = ranking_metrics(recs, relevant, k) | catalog_metrics(recs, popularity, catalog_size, k)
        metrics |= {
            f"{prefix}{name}_at_k" if name not in ("users",) else f"{prefix}test_users": v
            for name, v in scores.items()
        }
        recs.unpersist()
    relevant.unpersist()
    popularity.unpersist()
    return metrics, model


def settings_from_run(run_id: str, base: TrainConfig) -> TrainConfig:
    """The hyperparameters a logged run trained with (``base`` fills anything not logged)."""
    params = mlflow.get_run(run_id).data.params
    updates = {name: type(getattr(base, name))(params[name]) for name in HYPERPARAMETERS if name in params}
    return replace(base, **updates)


def _champion_params(config: Config) -> TrainConfig | None:
    """The hyperparameters the current champion was trained with, to retrain on this split."""
    champion = champion_version(config.mlflow)
    if champion is None or champion.run_id is None:
        return None
    return settings_from_run(champion.run_id, config.train)


def train(spark: SparkSession, config: Config, lake: Lake) -> TrainResult:
    """The whole training job; stops with TrainingError before touching the registry when the
    data cannot support it."""
    settings = config.train
    timings: dict[str, float] = {}
    configure_mlflow(config.mlflow)
    spark.sparkContext.setCheckpointDir(lake.path("_checkpoints/als"))

    with _phase(timings, "read"):
        versions = {
            "events": lake.version(spark, EVENTS),
            "interactions": lake.version(spark, INTERACTIONS),
        }
        events = lake.read(spark, EVENTS, versions["events"])
        interactions = lake.read(spark, INTERACTIONS, versions["interactions"])
        run_gate(
            spark,
            config,
            lake,
            "interactions",
            interactions,
            job="train",
            table_version=versions["interactions"],
        )
        try:
            split = time_split(events, settings.test_days)
        except EvaluationError as exc:
            raise TrainingError(str(exc)) from exc
        train_interactions = strength_as_of(
            aggregate_events(split.train_events, config.interactions),
            split.cutoff,
            config.interactions,
        ).persist()
        n_train = train_interactions.where("strength > 0").count()
        if n_train < settings.min_train_interactions:
            raise TrainingError(
                f"only {n_train} positive user-item interactions before the test period "
                f"(train.min_train_interactions={settings.min_train_interactions})"
            )
        user_ids, item_ids = extend_user_and_item_maps(spark, lake, interactions)
        user_ids, item_ids = user_ids.persist(), item_ids.persist()

    with _phase(timings, "evaluate"):
        try:
            metrics, _ = evaluate_split(
                spark, config, train_interactions, split.test_events, user_ids, item_ids, settings
            )
        except EvaluationError as exc:
            raise TrainingError(str(exc)) from exc
        champion_settings = _champion_params(config)
        champion_metric: float | None = None
        metric_name = config.mlflow.promotion_metric
        if champion_settings is not None:
            if all(getattr(champion_settings, p) == getattr(settings, p) for p in HYPERPARAMETERS):
                champion_metric = metrics[metric_name]
            else:
                champion_scores, _ = evaluate_split(
                    spark,
                    config,
                    train_interactions,
                    split.test_events,
                    user_ids,
                    item_ids,
                    champion_settings,
                )
                champion_metric = champion_scores[metric_name]
            metrics[f"champion_{metric_name}"] = champion_metric

    with _phase(timings, "fit"):
        as_of = interactions.agg(F.max("last_event_time")).first()[0]
        full = strength_as_of(interactions, as_of, config.interactions)
        model = fit_als(als_ratings(full, user_ids, item_ids, settings), settings)

    decision = decide_promotion(
        metrics[metric_name],
        metrics[f"popular_{metric_name}"],
        champion_metric,
        config.mlflow.promotion_margin,
        metric_name,
    )
    with _phase(timings, "log"):
        run_id, version = _log_run(config, model, metrics, versions, lake, split.cutoff, timings, n_train)
        set_alias(config.mlflow, CHAMPION if decision.promote else CHALLENGER, version, decision.reason)
    train_interactions.unpersist()
    log.info("train: %s", decision.reason)
    return TrainResult(run_id, version, decision.promote, decision.reason, metrics, versions, timings)


def _log_run(
    config: Config,
    model: ALSModel,
    metrics: dict[str, float],
    versions: dict[str, int],
    lake: Lake,
    cutoff: datetime,
    timings: dict[str, float],
    n_train: int,
) -> tuple[str, str]:
    import mlflow.spark

    settings = config.train
    with mlflow.start_run(run_name="als-train") as run:
        mlflow.log_params(
            {
                **asdict(settings),
                "interaction_weights": config.interactions.weights,
                "half_life_days": config.interactions.half_life_days,
            }
        )
        mlflow.set_tags(
            {
                "events_table": lake.path(EVENTS.name),
                "interactions_table": lake.path(INTERACTIONS.name),
                "test_cutoff": cutoff.isoformat(),
            }
        )
        mlflow.log_params({f"data_version_{name}": v for name, v in versions.items()})
        mlflow.log_metrics({**metrics, "train_interactions": float(n_train)})
        mlflow.log_metrics({f"seconds_{phase}": s for phase, s in timings.items()})
        info = mlflow.spark.log_model(
            model,
            "model",
            registered_model_name=config.mlflow.model_name,
            dfs_tmpdir=tempfile.mkdtemp(prefix="recspark-mlflow-"),
            pip_requirements=["pyspark==4.2.0"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "evaluation.txt"
            report.write_text(
                "\n".join(f"{name}: {value:.5f}" for name, value in sorted(metrics.items())) + "\n"
            )
            mlflow.log_artifact(str(report))
    version = str(info.registered_model_version)
    return run.info.run_id, version

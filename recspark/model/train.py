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
from pyspark.sql.window import Window

from recspark.core.catalog import read_catalog
from recspark.core.config import Config, TrainConfig
from recspark.core.gates import Gate
from recspark.core.interactions import aggregate_events, strength_as_of
from recspark.core.registry import (
    CHALLENGER,
    CHAMPION,
    champion_version,
    configure_mlflow,
    set_alias,
)
from recspark.core.tables import ALS_ITEM_FACTORS, ALS_USER_FACTORS, EVENTS, INTERACTIONS, Lake
from recspark.model.evaluation import (
    EvaluationError,
    TimeSplit,
    catalog_metrics,
    metrics_by_k,
    popularity_vs_frequency,
    ranking_metrics,
    relevant_items,
    time_split,
)
from recspark.model.idmap import extend_user_and_item_maps
from recspark.model.promotion import decide_promotion
from recspark.model.report import evaluation_report
from recspark.model.topn import recommend_top_n
from recspark.model.tuned_params import TunedParams, apply_tuned, read_tuned

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
    # The `recspark tune` run whose settings this training used (None: the config's own).
    tuned_from_run: str | None = None


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


def item_categories(spark: SparkSession, config: Config) -> DataFrame | None:
    """(item_id, category) of every catalog item with a category; None without a catalog."""
    if config.catalog.path is None:
        return None
    return (
        read_catalog(spark, config.catalog.path)
        .where(F.col("category").isNotNull())
        .select("item_id", "category")
    )


def category_popular_recommendations(
    users: DataFrame,
    train_interactions: DataFrame,
    popularity: DataFrame,
    categories: DataFrame,
    n: int,
    favourites: int,
) -> DataFrame:
    """The second baseline: per user, the most popular items of the user's ``favourites``
    favourite categories (by summed training strength), then overall popularity to fill N.

    ``users``: ``user_id``, ``exclude`` (array of item ids or null) — excluded items are never
    recommended, like for the other recommenders. Returns ``user_id, rank, item_id, score``
    (score: the item's popularity). Only each category's and the shop's top ``n + most
    exclusions`` items are ever candidates, so the work grows with users, not with the catalog.
    """
    if "exclude" not in users.columns:
        users = users.withColumn("exclude", F.lit(None).cast("array<string>"))
    depth = n + int(users.agg(F.max(F.coalesce(F.size("exclude"), F.lit(0)))).first()[0] or 0)
    favourite = (
        train_interactions.where(F.col("strength") > 0)
        .join(users.select("user_id"), "user_id")
        .join(categories, "item_id")
        .groupBy("user_id", "category")
        .agg(F.sum("strength").alias("weight"))
        .withColumn(
            "_n", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("weight"), "category"))
        )
        .where(F.col("_n") <= favourites)
        .select("user_id", "category")
    )
    by_category = (
        popularity.join(categories, "item_id")
        .withColumn(
            "_n",
            F.row_number().over(Window.partitionBy("category").orderBy(F.desc("popularity"), "item_id")),
        )
        .where(F.col("_n") <= depth)
    )
    in_favourites = favourite.join(by_category, "category").select(
        "user_id", "item_id", "popularity", F.lit(0).alias("tier")
    )
    overall = popularity.orderBy(F.desc("popularity"), "item_id").limit(depth + n)
    fill = (
        users.select("user_id")
        .crossJoin(F.broadcast(overall))
        .select("user_id", "item_id", "popularity", F.lit(1).alias("tier"))
    )
    excluded = users.select("user_id", F.explode("exclude").alias("item_id"))
    best_first = Window.partitionBy("user_id").orderBy("tier", F.desc("popularity"), "item_id")
    return (
        in_favourites.unionByName(fill)
        .join(excluded, ["user_id", "item_id"], "left_anti")
        .groupBy("user_id", "item_id")
        .agg(F.min("tier").alias("tier"), F.first("popularity").alias("popularity"))
        .withColumn("rank", F.row_number().over(best_first))
        .where(F.col("rank") <= n)
        .select(
            "user_id", F.col("rank").cast("int"), "item_id", F.col("popularity").cast("double").alias("score")
        )
    )


@dataclass
class Evaluation:
    """Scores of the model (and, when asked, the baselines) on one split."""

    metrics: dict[str, float]
    model: ALSModel
    # recommender ("model", "popular", "category_popular") -> rows of metrics_by_k
    by_k: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    # recommender -> rows of popularity_vs_frequency
    popularity_bands: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def evaluate_split(
    spark: SparkSession,
    config: Config,
    train_interactions: DataFrame,
    test_events: DataFrame,
    user_ids: DataFrame,
    item_ids: DataFrame,
    settings: TrainConfig,
    baselines: bool = True,
    curves: bool = False,
) -> Evaluation:
    """Fit on the training period and score the model — and, with ``baselines``, the two
    baselines — on the test period; ``curves`` adds metric-by-K and popularity-band series."""
    k = settings.k
    model = fit_als(als_ratings(train_interactions, user_ids, item_ids, settings), settings)
    relevant = relevant_items(
        test_events, train_interactions, config.interactions, config.serve.exclude_purchased
    ).persist()
    test_users = relevant.select("user_id").distinct()
    exclusions = purchased_items(train_interactions) if config.serve.exclude_purchased else None
    users = (test_users if exclusions is None else test_users.join(exclusions, "user_id", "left")).persist()
    user_factors, item_factors = factor_tables(model, user_ids, item_ids)
    block = config.serve.users_per_block
    recommenders = {
        "model": recommend_top_n(spark, users.join(user_factors, "user_id"), item_factors, k, block)
    }
    popularity = item_popularity(train_interactions).persist()
    if baselines:
        recommenders["popular"] = popular_recommendations(spark, users, popularity, k, block)
        categories = item_categories(spark, config)
        if categories is None:
            log.warning("train: catalog.path is not set: no category baseline")
        else:
            recommenders["category_popular"] = category_popular_recommendations(
                users, train_interactions, popularity, categories, k, settings.favourite_categories
            )
    catalog_size = train_interactions.select("item_id").distinct().count()
    result = Evaluation({}, model)
    for name, recs in recommenders.items():
        prefix = "" if name == "model" else f"{name}_"
        recs = recs.persist()
        scores = ranking_metrics(recs, relevant, k) | catalog_metrics(recs, popularity, catalog_size, k)
        result.metrics |= {
            f"{prefix}{metric}_at_k" if metric != "users" else f"{prefix}test_users": v
            for metric, v in scores.items()
        }
        if curves:
            result.by_k[name] = metrics_by_k(recs, relevant, k)
            result.popularity_bands[name] = popularity_vs_frequency(recs, popularity, k)
        recs.unpersist()
    relevant.unpersist()
    users.unpersist()
    popularity.unpersist()
    return result


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


def gating_baselines(config: Config, metrics: dict[str, float]) -> dict[str, float]:
    """The configured baselines' scores on the promotion metric (those that could be computed)."""
    metric = config.mlflow.promotion_metric
    scores = {}
    for name in config.mlflow.promotion_baselines:
        key = f"{name}_{metric}"
        if key in metrics:
            scores[name] = metrics[key]
        else:
            log.warning("train: baseline %s was not computed (no catalog?): it does not gate promotion", name)
    return scores


@dataclass
class TrainingPeriod:
    interactions: DataFrame
    positives: int  # user-item pairs with strength > 0
    user_ids: DataFrame
    item_ids: DataFrame


def training_period(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    split: TimeSplit,
    interactions: DataFrame,
    settings: TrainConfig,
    held_out: str,
) -> TrainingPeriod:
    """The interactions before the held-out period (persisted), and the id maps extended to every
    user and item; refuses a period too thin to learn from."""
    train_interactions = strength_as_of(
        aggregate_events(split.train_events, config.interactions), split.cutoff, config.interactions
    ).persist()
    n_train = train_interactions.where("strength > 0").count()
    if n_train < settings.min_train_interactions:
        raise TrainingError(
            f"only {n_train} positive user-item interactions before the {held_out} period "
            f"(train.min_train_interactions={settings.min_train_interactions})"
        )
    user_ids, item_ids = extend_user_and_item_maps(spark, lake, interactions)
    return TrainingPeriod(train_interactions, n_train, user_ids.persist(), item_ids.persist())


def train(spark: SparkSession, config: Config, lake: Lake, *, gate: Gate) -> TrainResult:
    """The whole training job; stops with TrainingError before touching the registry when the
    data cannot support it."""
    timings: dict[str, float] = {}
    configure_mlflow(config.mlflow)
    spark.sparkContext.setCheckpointDir(lake.path("_checkpoints/als"))
    tuned: TunedParams | None = read_tuned(spark, config, lake) if config.train.use_tuned else None
    settings = apply_tuned(config.train, tuned)
    if tuned is not None:
        log.info("train: using tuned settings %s from tune run %s", tuned.params, tuned.run_id)
    config = replace(config, train=settings)

    with _phase(timings, "read"):
        versions = {
            "events": lake.version(spark, EVENTS),
            "interactions": lake.version(spark, INTERACTIONS),
        }
        events = lake.read(spark, EVENTS, versions["events"])
        interactions = lake.read(spark, INTERACTIONS, versions["interactions"])
        gate("interactions", interactions, versions["interactions"])
        try:
            split = time_split(events, settings.test_days)
        except EvaluationError as exc:
            raise TrainingError(str(exc)) from exc
        period = training_period(spark, config, lake, split, interactions, settings, "test")
        train_interactions, n_train = period.interactions, period.positives
        user_ids, item_ids = period.user_ids, period.item_ids

    with _phase(timings, "evaluate"):
        try:
            evaluation = evaluate_split(
                spark,
                config,
                train_interactions,
                split.test_events,
                user_ids,
                item_ids,
                settings,
                curves=True,
            )
        except EvaluationError as exc:
            raise TrainingError(str(exc)) from exc
        metrics = evaluation.metrics
        champion_settings = _champion_params(config)
        champion_metric: float | None = None
        metric_name = config.mlflow.promotion_metric
        if champion_settings is not None:
            if all(getattr(champion_settings, p) == getattr(settings, p) for p in HYPERPARAMETERS):
                champion_metric = metrics[metric_name]
            else:
                champion_metric = evaluate_split(
                    spark,
                    config,
                    train_interactions,
                    split.test_events,
                    user_ids,
                    item_ids,
                    champion_settings,
                    baselines=False,
                ).metrics[metric_name]
            metrics[f"champion_{metric_name}"] = champion_metric

    with _phase(timings, "fit"):
        as_of = interactions.agg(F.max("last_event_time")).first()[0]
        full = strength_as_of(interactions, as_of, config.interactions)
        model = fit_als(als_ratings(full, user_ids, item_ids, settings), settings)

    decision = decide_promotion(
        metrics[metric_name],
        gating_baselines(config, metrics),
        champion_metric,
        config.mlflow.promotion_margin,
        metric_name,
    )
    with _phase(timings, "log"):
        run_id, version = _log_run(
            spark, config, lake, model, evaluation, versions, split.cutoff, timings, n_train, tuned
        )
        write_factors(spark, lake, model, user_ids, item_ids, version, run_id)
        set_alias(config.mlflow, CHAMPION if decision.promote else CHALLENGER, version, decision.reason)
    train_interactions.unpersist()
    log.info("train: %s", decision.reason)
    return TrainResult(
        run_id,
        version,
        decision.promote,
        decision.reason,
        metrics,
        versions,
        timings,
        tuned.run_id if tuned is not None else None,
    )


def write_factors(
    spark: SparkSession,
    lake: Lake,
    model: ALSModel,
    user_ids: DataFrame,
    item_ids: DataFrame,
    version: str,
    run_id: str,
) -> None:
    """Keep a model version's user and item factors as Delta tables (one partition per version),
    so analysts and other jobs can use them without loading the MLlib model."""
    users, items = factor_tables(model, user_ids, item_ids)
    for spec, frame in ((ALS_USER_FACTORS, users), (ALS_ITEM_FACTORS, items)):
        lake.ensure(spark, spec)
        (
            frame.select(
                *frame.columns,
                F.lit(version).alias("model_version"),
                F.lit(run_id).alias("run_id"),
                F.current_timestamp().alias("created_at"),
            )
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"model_version = '{version}'")
            .save(lake.path(spec.name))
        )


def _log_run(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    model: ALSModel,
    evaluation: Evaluation,
    versions: dict[str, int],
    cutoff: datetime,
    timings: dict[str, float],
    n_train: int,
    tuned: TunedParams | None,
) -> tuple[str, str]:
    import mlflow.spark

    settings = config.train
    metrics = evaluation.metrics
    with mlflow.start_run(run_name="als-train") as run:
        mlflow.log_params(
            {
                **asdict(settings),
                "interaction_weights": config.interactions.weights,
                "half_life_days": config.interactions.half_life_days,
                "promotion_baselines": ",".join(config.mlflow.promotion_baselines),
                "tuned_from_run": tuned.run_id if tuned is not None else "none",
            }
        )
        mlflow.set_tags(
            {
                "events_table": lake.path(EVENTS.name),
                "interactions_table": lake.path(INTERACTIONS.name),
                "user_factors_table": lake.path(ALS_USER_FACTORS.name),
                "item_factors_table": lake.path(ALS_ITEM_FACTORS.name),
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
            text = Path(tmp) / "evaluation.txt"
            text.write_text(
                "\n".join(f"{name}: {value:.5f}" for name, value in sorted(metrics.items())) + "\n"
            )
            mlflow.log_artifact(str(text))
            report = Path(tmp) / "evaluation_report.html"
            report.write_text(
                evaluation_report(
                    f"recspark ALS evaluation: test period from {cutoff:%Y-%m-%d %H:%M}, K={settings.k}",
                    evaluation.by_k,
                    evaluation.popularity_bands,
                    metrics,
                ),
                encoding="utf-8",
            )
            mlflow.log_artifact(str(report))
    version = str(info.registered_model_version)
    return run.info.run_id, version

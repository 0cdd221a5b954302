"""The serving table: top-N per user from the champion model, published in one Delta commit."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.catalog import read_catalog
from recspark.config import Config, TrainConfig
from recspark.quality import run_gate
from recspark.tables import INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, SIMILAR_ITEMS, USER_IDS, Lake
from recspark.topn import recommend_top_n
from recspark.tracking import configure_mlflow, require_champion
from recspark.training import (
    factor_tables,
    item_popularity,
    popular_recommendations,
    purchased_items,
    settings_from_run,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    version: str
    model: ALSModel
    settings: TrainConfig  # what it was trained with: fold-in must use the same alpha and reg


def load_champion(config: Config) -> Champion:
    import mlflow.spark

    configure_mlflow(config.mlflow)
    version = require_champion(config.mlflow)
    pipeline = mlflow.spark.load_model(
        f"models:/{config.mlflow.model_name}/{version.version}",
        dfs_tmpdir=tempfile.mkdtemp(prefix="recspark-mlflow-"),
    )
    model = pipeline.stages[-1] if hasattr(pipeline, "stages") else pipeline
    return Champion(
        version=str(version.version),
        model=model,
        settings=settings_from_run(version.run_id, config.train),
    )


def unavailable_item_ids(spark: SparkSession, config: Config) -> DataFrame | None:
    if config.catalog.path is None:
        return None
    return read_catalog(spark, config.catalog.path).where(~F.col("available")).select("item_id")


def available_items(spark: SparkSession, config: Config, items: DataFrame) -> DataFrame:
    """Keep only items the catalog does not mark unavailable (no catalog: keep all)."""
    unavailable = unavailable_item_ids(spark, config)
    return items if unavailable is None else items.join(unavailable, "item_id", "left_anti")


def fallback_popularity(
    spark: SparkSession, config: Config, interactions: DataFrame
) -> tuple[DataFrame, str]:
    """What users the model cannot personalise for get: items trending over the last
    ``serve.trending_days`` (so the list moves with the shop), or all-time popular items when
    too few items were active recently."""
    available = available_items(spark, config, item_popularity(interactions))
    if config.serve.trending_days:
        newest = interactions.agg(F.max("last_event_time")).first()[0]
        if newest is not None:
            since = newest - timedelta(days=config.serve.trending_days)
            recent = interactions.where(F.col("last_event_time") >= F.lit(since))
            trending = available_items(spark, config, item_popularity(recent)).persist()
            if trending.count() >= config.serve.top_n:
                return trending, "trending"
            trending.unpersist()
    return available, "popular"


def build_recommendations(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion,
    users: DataFrame | None = None,
    user_vectors: DataFrame | None = None,
) -> DataFrame:
    """N rows for each of ``users`` (default: everyone with interactions).

    ``user_vectors`` (user_id, features) default to the champion's own user factors; the
    refresh job passes folded-in vectors of recently active users instead. Users without a
    vector get trending (else popular) available items.
    """
    n = config.serve.top_n
    block = config.serve.users_per_block
    interactions = lake.read(spark, INTERACTIONS)
    if users is None:
        users = interactions.select("user_id").distinct()
    if config.serve.exclude_purchased:
        users = users.join(purchased_items(interactions), "user_id", "left")
    user_factors, item_factors = factor_tables(
        champion.model, lake.read(spark, USER_IDS), lake.read(spark, ITEM_IDS)
    )
    if user_vectors is None:
        user_vectors = user_factors
    personal = recommend_top_n(
        spark,
        users.join(user_vectors.select("user_id", "features"), "user_id"),
        available_items(spark, config, item_factors),
        n,
        block,
    ).withColumn("source", F.lit("als"))
    unknown = users.join(user_vectors.select("user_id"), "user_id", "left_anti")
    fallback, source = fallback_popularity(spark, config, interactions)
    popular = popular_recommendations(spark, unknown, fallback, n, block).withColumn("source", F.lit(source))
    return personal.unionByName(popular).select(
        "user_id",
        "rank",
        "item_id",
        "score",
        "source",
        F.lit(champion.version).alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )


def similar_items(spark: SparkSession, config: Config, lake: Lake, champion: Champion) -> DataFrame:
    """For product pages: each item's nearest available items by cosine of the item factors."""
    _, item_factors = factor_tables(champion.model, lake.read(spark, USER_IDS), lake.read(spark, ITEM_IDS))
    unit = item_factors.select(
        "item_id",
        F.transform(
            "features", lambda x: x / F.sqrt(F.aggregate("features", F.lit(0.0), lambda a, v: a + v * v))
        )
        .cast("array<float>")
        .alias("features"),
    )
    items = unit.select(F.col("item_id").alias("user_id"), "features", F.array("item_id").alias("exclude"))
    pairs = recommend_top_n(
        spark,
        items,
        available_items(spark, config, unit),
        config.serve.similar_items,
        config.serve.users_per_block,
    )
    return pairs.select(
        F.col("user_id").alias("item_id"),
        "rank",
        F.col("item_id").alias("similar_item_id"),
        "score",
        F.lit(champion.version).alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )


def publish_recommendations(lake: Lake, recommendations: DataFrame) -> None:
    """Replace the whole serving table in one commit: readers see the old or the new list."""
    (
        recommendations.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "false")
        .save(lake.path(RECOMMENDATIONS.name))
    )


def published_model_version(spark: SparkSession, lake: Lake) -> str | None:
    """The model version the serving table was computed with (None when empty or absent)."""
    if not lake.exists(spark, RECOMMENDATIONS):
        return None
    row = lake.read(spark, RECOMMENDATIONS).select("model_version").limit(1).first()
    return None if row is None else row[0]


def recommend(spark: SparkSession, config: Config, lake: Lake) -> int:
    """The full refresh job; returns the number of users served."""
    champion = load_champion(config)
    lake.ensure(spark, RECOMMENDATIONS)
    recommendations = build_recommendations(spark, config, lake, champion).persist()
    try:
        # Validate before publishing, so a bad list never reaches the serving table.
        run_gate(
            spark,
            config,
            lake,
            "recommendations",
            recommendations,
            job="recommend",
            top_n=config.serve.top_n,
            unavailable_items=unavailable_item_ids(spark, config),
        )
        publish_recommendations(lake, recommendations)
    finally:
        recommendations.unpersist()
    if config.serve.similar_items:
        lake.ensure(spark, SIMILAR_ITEMS)
        similar_items(spark, config, lake, champion).write.format("delta").mode("overwrite").save(
            lake.path(SIMILAR_ITEMS.name)
        )
    users = lake.read(spark, RECOMMENDATIONS).select("user_id").distinct().count()
    log.info("recommend: %d users served by champion version %s", users, champion.version)
    return users

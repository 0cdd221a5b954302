"""The serving table: top-N per user from the champion model, published in one Delta commit."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.catalog import read_catalog
from recspark.config import Config
from recspark.tables import INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, USER_IDS, Lake
from recspark.topn import recommend_top_n
from recspark.tracking import configure_mlflow, require_champion
from recspark.training import (
    factor_tables,
    item_popularity,
    popular_recommendations,
    purchased_items,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    version: str
    model: ALSModel


def load_champion(config: Config) -> Champion:
    import mlflow.spark

    configure_mlflow(config.mlflow)
    version = require_champion(config.mlflow)
    pipeline = mlflow.spark.load_model(
        f"models:/{config.mlflow.model_name}@champion",
        dfs_tmpdir=tempfile.mkdtemp(prefix="recspark-mlflow-"),
    )
    model = pipeline.stages[-1] if hasattr(pipeline, "stages") else pipeline
    return Champion(version=str(version.version), model=model)


def available_items(spark: SparkSession, config: Config, items: DataFrame) -> DataFrame:
    """Keep only items the catalog does not mark unavailable (no catalog: keep all)."""
    if config.catalog.path is None:
        return items
    unavailable = read_catalog(spark, config.catalog.path).where(~F.col("available")).select("item_id")
    return items.join(unavailable, "item_id", "left_anti")


def build_recommendations(spark: SparkSession, config: Config, lake: Lake, champion: Champion) -> DataFrame:
    """Every user with interactions gets N rows: ALS for users the model knows, else popular."""
    n = config.serve.top_n
    block = config.serve.users_per_block
    interactions = lake.read(spark, INTERACTIONS)
    users = interactions.select("user_id").distinct()
    if config.serve.exclude_purchased:
        users = users.join(purchased_items(interactions), "user_id", "left")
    user_factors, item_factors = factor_tables(
        champion.model, lake.read(spark, USER_IDS), lake.read(spark, ITEM_IDS)
    )
    personal = recommend_top_n(
        spark,
        users.join(user_factors, "user_id"),
        available_items(spark, config, item_factors),
        n,
        block,
    ).withColumn("source", F.lit("als"))
    unknown = users.join(user_factors.select("user_id"), "user_id", "left_anti")
    popular = popular_recommendations(
        spark, unknown, available_items(spark, config, item_popularity(interactions)), n, block
    ).withColumn("source", F.lit("popular"))
    return personal.unionByName(popular).select(
        "user_id",
        "rank",
        "item_id",
        "score",
        "source",
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


def recommend(spark: SparkSession, config: Config, lake: Lake) -> int:
    """The full refresh job; returns the number of users served."""
    champion = load_champion(config)
    lake.ensure(spark, RECOMMENDATIONS)
    recommendations = build_recommendations(spark, config, lake, champion)
    publish_recommendations(lake, recommendations)
    users = lake.read(spark, RECOMMENDATIONS).select("user_id").distinct().count()
    log.info("recommend: %d users served by champion version %s", users, champion.version)
    return users

"""Synthetic lakes for the benchmarks: tables of a chosen size written directly, without ingesting
or training, so a bench times one stage and nothing before it.

Shared by ``bench/merge.py``, ``bench/refresh.py`` and ``bench/curve.py``: a stage measured alone
and the same stage on the cost curve see the same data.
"""

from __future__ import annotations

from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.config.ingest import InteractionsConfig
from recspark.core.interactions import aggregate_events
from recspark.core.tables import (
    INTERACTIONS,
    ITEM_IDS,
    USER_IDS,
    Lake,
    TableSpec,
    serving_table,
)
from recspark.model.families.model import ALS, FittedModel, ModelSpec
from recspark.serve.publish import Champion, publish_recommendations

PAIRS_PER_USER = 10
PAIRS_PER_FILE = 250_000
ITEMS = 50_000
SHOP_NOW = datetime(2026, 11, 23, 12, 0)


def last_commit_metrics(table: DeltaTable, operation: str | None = None) -> dict[str, str]:
    """Delta's own operation metrics of the table's newest commit (files added, removed...), or
    of its newest ``operation`` commit (an ingest batch MERGEs, then appends its new pairs)."""
    history = table.history(10)
    if operation is not None:
        history = history.where(F.col("operation") == operation)
    newest = history.orderBy(F.col("version").desc()).select("operationMetrics").first()
    return (newest[0] if newest else None) or {}


# ---- interactions as ingestion folds them (bench/merge.py, the curve's MERGE stage) ----


def pair_events(users: DataFrame, slot: F.Column, when: datetime) -> DataFrame:
    """One view event per (user, slot): slot j of user u is item (31 u + 1009 j) mod ITEMS, so
    slots below PAIRS_PER_USER are the base table's pairs and higher slots are new pairs."""
    item = (F.col("u") * 31 + slot * 1009) % ITEMS
    return users.select(
        F.concat(F.lit("u"), F.col("u").cast("string")).alias("user_id"),
        F.concat(F.lit("i"), item.cast("string")).alias("item_id"),
        F.lit("view").alias("event_type"),
        F.lit(None).cast("double").alias("value"),
        F.lit(when).cast("timestamp").alias("event_time"),
    )


def base_pairs(spark: SparkSession, settings: InteractionsConfig, pairs: int) -> DataFrame:
    """``pairs`` aggregated pairs, PAIRS_PER_USER per user, in one file per PAIRS_PER_FILE with
    random users in each (as a table that grew batch by batch)."""
    users = pairs // PAIRS_PER_USER
    grid = (
        spark.range(users)
        .select(F.col("id").alias("u"))
        .crossJoin(spark.range(PAIRS_PER_USER).select(F.col("id").alias("j")))
    )
    events = pair_events(grid, F.col("j"), datetime(2026, 11, 1))
    files = max(2, pairs // PAIRS_PER_FILE)
    return aggregate_events(events, settings).repartition(files)


def batch_increments(
    spark: SparkSession, settings: InteractionsConfig, pairs: int, batch_pairs: int, batch: int
) -> DataFrame:
    """One ingest batch's aggregates for a table of ``pairs``: half known pairs of random users,
    half new pairs (a slot no earlier batch used). Checkpointed, as ingestion does."""
    users = pairs // PAIRS_PER_USER
    half = batch_pairs // 2
    drawn = spark.range(half).select(
        (F.rand(seed=batch * 2) * users).cast("long").alias("u"),
        (F.rand(seed=batch * 2 + 1) * PAIRS_PER_USER).cast("long").alias("j"),
    )
    known = pair_events(drawn, F.col("j"), datetime(2026, 11, 2 + batch))
    fresh = pair_events(drawn.select("u"), F.lit(PAIRS_PER_USER + batch), datetime(2026, 11, 2 + batch))
    return aggregate_events(known.unionByName(fresh), settings).localCheckpoint(eager=True)


# ---- a served shop with a champion (bench/refresh.py, the curve's refresh stage) ----


def random_factors(spark: SparkSession, rows: int, rank: int, seed: int) -> DataFrame:
    vector = F.array(*[F.randn(seed * 1000 + k) * 0.1 for k in range(rank)]).cast("array<float>")
    return spark.range(rows).select(F.col("id").cast("int").alias("id"), vector.alias("features"))


def user_key(column: F.Column | str = "id") -> F.Column:
    return F.format_string("u%07d", column)


def item_key(column: F.Column | str = "id") -> F.Column:
    return F.format_string("i%06d", column)


def write_served_shop(
    spark: SparkSession, config: Config, lake: Lake, users: int, items: int, rank: int, per_user: int
) -> Champion:
    """Id maps, ``interactions`` with ``per_user`` random pairs per user, a full serving table of
    ``serve.top_n`` rows per user, and a champion of random ALS factors (its values do not change
    the cost of a refresh)."""
    n = config.serve.top_n
    for spec in (USER_IDS, ITEM_IDS, INTERACTIONS, serving_table(config.serve.deletion_vectors)):
        lake.ensure(spark, spec)
    idx = F.col("id").cast("int")
    _overwrite(spark.range(users).select(user_key().alias("user_id"), idx.alias("user_idx")), lake, USER_IDS)
    _overwrite(spark.range(items).select(item_key().alias("item_id"), idx.alias("item_idx")), lake, ITEM_IDS)
    pairs = (
        spark.range(users * per_user)
        .select(
            user_key((F.col("id") / per_user).cast("long")).alias("user_id"),
            item_key((F.rand(7) * items).cast("long")).alias("item_id"),
            F.lit(2).cast("long").alias("view_count"),
            F.lit(0).cast("long").alias("add_to_cart_count"),
            F.lit(0).cast("long").alias("remove_from_cart_count"),
            F.when(F.rand(8) < 0.1, 1).otherwise(0).cast("long").alias("purchase_count"),
            F.lit(0).cast("long").alias("rating_count"),
            F.lit(None).cast("double").alias("last_rating"),
            (F.lit(SHOP_NOW) - F.expr("make_interval(0, 0, 0, cast(rand(9) * 30 as int))")).alias(
                "first_event_time"
            ),
            F.lit(SHOP_NOW).alias("last_event_time"),
            (F.rand(10) * 5 + 1).alias("signal"),
        )
        .dropDuplicates(["user_id", "item_id"])
    )
    stamped = pairs.select("*", F.col("signal").alias("strength"), F.current_timestamp().alias("updated_at"))
    _overwrite(stamped, lake, INTERACTIONS)
    lists = spark.range(users * n).select(
        user_key((F.col("id") / n).cast("long")).alias("user_id"),
        ((F.col("id") % n) + 1).cast("int").alias("rank"),
        item_key(F.col("id") % items).alias("item_id"),
        (F.lit(1.0) / (F.col("id") % n + 1)).alias("score"),
        F.lit("als").alias("source"),
        F.lit("bench").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
        F.lit(None).cast("string").alias("because_item_id"),
    )
    publish_recommendations(lake, lists, interactions_version=0)  # laid out as a full publish writes it
    user_factors = random_factors(spark, users, rank, 1).select(user_key().alias("user_id"), "features")
    item_factors = random_factors(spark, items, rank, 2).select(item_key().alias("item_id"), "features")
    model = FittedModel(ModelSpec(ALS, als=config.train), user_factors, item_factors).persist()
    return Champion(version="bench", model=model)


def _overwrite(frame: DataFrame, lake: Lake, spec: TableSpec) -> None:
    frame.write.format("delta").mode("overwrite").save(lake.path(spec.name))


def random_active_users(spark: SparkSession, lake: Lake, active: int, users: int, seed: int) -> DataFrame:
    """``active`` random known users, as a small local frame (what a refresh batch's changes give)."""
    share = min(1.0, 2.0 * active / users)
    drawn = lake.read(spark, USER_IDS).select("user_id").sample(fraction=share, seed=seed).limit(active)
    return spark.createDataFrame(drawn.collect(), "user_id string")

"""Benchmark: one refresh batch (fold-in + top-N + MERGE) for 1k active users among 200k.

    .venv/bin/python bench/refresh.py --users 200000 --items 50000 --rank 64 --active 1000

The lake is written directly (no training): random ALS factors wrapped in an ALSModel, id
tables, an ``interactions`` table with ``--per-user`` pairs per user, and a full serving table
of N rows per user. What is timed is ``refresh_users`` — exactly what a refresh micro-batch runs
for its active users — so the figure is the refresh path's cost, not the model's quality. With
``--shop-context kept`` (the default, as the refresh job) the shop-wide rankings are built once
before the batches; ``per-batch`` ranks the whole shop in every batch (the job before 15.3).
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import load_config
from recspark.core.session import build_spark
from recspark.core.tables import INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, USER_IDS, Lake, serving_table
from recspark.model.families import ALS, FittedModel, ModelSpec
from recspark.model.sources import newest_event_time
from recspark.serve.publish import Champion, shop_context
from recspark.serve.refresh import refresh_users


def factors(spark: SparkSession, rows: int, rank: int, seed: int) -> DataFrame:
    vector = F.array(*[F.randn(seed * 1000 + k) * 0.1 for k in range(rank)]).cast("array<float>")
    return spark.range(rows).select(F.col("id").cast("int").alias("id"), vector.alias("features"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--root", default="/tmp/recspark-bench-refresh")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--shop-context",
        choices=("kept", "per-batch"),
        default="kept",
        help="rank the shop's items once and keep them, as the refresh job does (kept), or in every batch",
    )
    parser.add_argument(
        "--deletion-vectors",
        choices=("true", "false"),
        default="true",
        help="serve.deletion_vectors: MERGE marks old rows deleted (true) or rewrites files (false)",
    )
    args = parser.parse_args()

    shutil.rmtree(args.root, ignore_errors=True)
    config = load_config(
        None,
        [
            "spark.shuffle_partitions=8",
            # As conf/local.yaml: Delta's 50 log-replay tasks per new table version are waste here.
            "spark.conf.spark.databricks.delta.snapshotPartitions=2",
            "spark.driver_memory=12g",
            f"lake.root={args.root}/lake",
            "catalog.path=null",
            f"serve.top_n={args.n}",
            f"serve.deletion_vectors={args.deletion_vectors}",
        ],
    )
    spark = build_spark(config, "bench-refresh")
    lake = Lake.at(config.lake.root)
    started = time.time()
    for spec in (USER_IDS, ITEM_IDS, INTERACTIONS, serving_table(config.serve.deletion_vectors)):
        lake.ensure(spark, spec)
    user_key = F.format_string("u%07d", "id").alias("user_id")
    spark.range(args.users).select(user_key, F.col("id").cast("int").alias("user_idx")).write.format(
        "delta"
    ).mode("overwrite").save(lake.path(USER_IDS.name))
    spark.range(args.items).select(
        F.format_string("i%06d", "id").alias("item_id"), F.col("id").cast("int").alias("item_idx")
    ).write.format("delta").mode("overwrite").save(lake.path(ITEM_IDS.name))
    now = datetime(2026, 11, 23, 12, 0)
    pairs = (
        spark.range(args.users * args.per_user)
        .select(
            F.format_string("u%07d", (F.col("id") / args.per_user).cast("long")).alias("user_id"),
            F.format_string("i%06d", (F.rand(7) * args.items).cast("long")).alias("item_id"),
            F.lit(2).cast("long").alias("view_count"),
            F.lit(0).cast("long").alias("add_to_cart_count"),
            F.lit(0).cast("long").alias("remove_from_cart_count"),
            F.when(F.rand(8) < 0.1, 1).otherwise(0).cast("long").alias("purchase_count"),
            F.lit(0).cast("long").alias("rating_count"),
            F.lit(None).cast("double").alias("last_rating"),
            (F.lit(now) - F.expr("make_interval(0, 0, 0, cast(rand(9) * 30 as int))")).alias(
                "first_event_time"
            ),
            F.lit(now).alias("last_event_time"),
            (F.rand(10) * 5 + 1).alias("signal"),
        )
        .dropDuplicates(["user_id", "item_id"])
    )
    pairs.select(
        "*", F.col("signal").alias("strength"), F.current_timestamp().alias("updated_at")
    ).write.format("delta").mode("overwrite").save(lake.path(INTERACTIONS.name))
    spark.range(args.users * args.n).select(
        F.format_string("u%07d", (F.col("id") / args.n).cast("long")).alias("user_id"),
        ((F.col("id") % args.n) + 1).cast("int").alias("rank"),
        F.format_string("i%06d", F.col("id") % args.items).alias("item_id"),
        (F.lit(1.0) / (F.col("id") % args.n + 1)).alias("score"),
        F.lit("als").alias("source"),
        F.lit("bench").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
        F.lit(None).cast("string").alias("because_item_id"),
    ).write.format("delta").mode("overwrite").save(lake.path(RECOMMENDATIONS.name))
    user_factors = factors(spark, args.users, args.rank, 1).select(
        F.format_string("u%07d", "id").alias("user_id"), "features"
    )
    item_factors = factors(spark, args.items, args.rank, 2).select(
        F.format_string("i%06d", "id").alias("item_id"), "features"
    )
    model = FittedModel(ModelSpec(ALS, als=config.train), user_factors, item_factors).persist()
    champion = Champion(version="bench", model=model)
    print(f"lake written in {time.time() - started:.1f} s", flush=True)

    # As the refresh job, which carries the newest event time from batch to batch and keeps the
    # champion's scoring data cached.
    as_of = newest_event_time(lake.read(spark, INTERACTIONS))
    context = None
    if args.shop_context == "kept":
        began = time.time()
        context = shop_context(spark, config, lake, lake.read(spark, INTERACTIONS), as_of).persist()
        print(f"shop-wide rankings built in {time.time() - began:.1f} s (kept for every batch)", flush=True)
    timings = []
    for attempt in range(args.repeat):
        active = (
            lake.read(spark, USER_IDS)
            .select("user_id")
            .sample(fraction=2.0 * args.active / args.users, seed=attempt)
        ).limit(args.active)
        active = spark.createDataFrame(active.collect(), "user_id string")
        started = time.time()
        batch_context = None if context is None else context.with_current_catalog(spark, config)
        refreshed = refresh_users(spark, config, lake, champion, active, as_of, batch_context)
        timings.append(time.time() - started)
        metrics = lake.delta(spark, RECOMMENDATIONS).history(1).first()["operationMetrics"]
        print(
            f"refresh {attempt + 1}: {refreshed} users in {timings[-1]:.1f} s "
            f"(MERGE inserted {metrics.get('numTargetRowsInserted')}, "
            f"deleted {metrics.get('numTargetRowsDeleted')}, "
            f"deletion vectors added {metrics.get('numTargetDeletionVectorsAdded')}, "
            f"files added {metrics.get('numTargetFilesAdded')}, "
            f"MERGE itself {int(metrics.get('executionTimeMs', 0)) / 1000:.1f} s)",
            flush=True,
        )
    print(
        f"| {args.users:,} users x {args.items:,} items, rank {args.rank}, {args.per_user} pairs/user, "
        f"N={args.n} | {args.active:,} active users | first {timings[0]:.1f} s, "
        f"then {', '.join(f'{t:.1f}' for t in timings[1:])} s |"
    )


if __name__ == "__main__":
    main()

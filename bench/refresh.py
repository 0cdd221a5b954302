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

from recspark.core.config import load_config
from recspark.core.session import build_spark
from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS, Lake
from recspark.datasets.lakes import last_commit_metrics, random_active_users, write_served_shop
from recspark.model.candidates.sources import newest_event_time
from recspark.serve.publish import shop_context
from recspark.serve.refresh import refresh_users


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
    parser.add_argument("--set", action="append", default=[], help="more config overrides, key=value")
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
            *args.set,
        ],
    )
    spark = build_spark(config, "bench-refresh")
    lake = Lake.at(config.lake.root)
    started = time.time()
    champion = write_served_shop(spark, config, lake, args.users, args.items, args.rank, args.per_user)
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
        active = random_active_users(spark, lake, args.active, args.users, seed=attempt)
        started = time.time()
        batch_context = None if context is None else context.with_current_catalog(spark, config)
        refreshed = refresh_users(spark, config, lake, champion, active, as_of, batch_context)
        timings.append(time.time() - started)
        metrics = last_commit_metrics(lake.delta(spark, RECOMMENDATIONS))
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

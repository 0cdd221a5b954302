"""Benchmark: the cost curve. Each stage that runs per batch or per retrain, at doubling sizes.

    .venv/bin/python bench/curve.py                          # five stages, three sizes (about 10 min)
    .venv/bin/python bench/curve.py --stages refresh --sizes 4

What doubles (``n``) is what grows with the shop; everything else stays fixed:

- ``merge``: the pairs in ``interactions`` (deletion vectors on, the default). Each batch is
  10,000 aggregated pairs, half known pairs of random users, half new (bench/merge.py's batches).
- ``dedup``: the stored events within the allowed lateness of the batch's dates, which a batch
  reads to find retries (a busier shop has more events per day). A batch of 10,000 lines, half
  retries of stored events. Timed: the stored-event read, the plan and its counts.
- ``refresh``: the rows of the serving table (10 per user). One batch of 1,000 active users
  against 20,000 items, rank 32, the shop-wide rankings kept as the refresh job keeps them.
- ``topn``: the users scored against a fixed 20,000-item catalogue, rank 32 (``noop`` sink).
- ``als``: the pairs MLlib's ALS fits (10 per user, 20,000 items, rank 32, 10 iterations).

For each stage and size it reports the time (the median of the repeats after the first, which
pays for the JIT and first planning; the only run where a stage runs once), the data files a
MERGE added and removed and the deletion vectors it wrote (Delta's operation metrics), and the
bytes the driver received from tasks (Spark's task ``resultSize`` summed over the stage's jobs:
collects and Arrow transfers, which on a cluster cross the network to one process). Then the
least-squares line time = a + b·n per stage, which docs/scale.md extrapolates from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config, load_config
from recspark.core.session import build_spark
from recspark.core.tables import (
    EVENTS,
    INTERACTIONS,
    RECOMMENDATIONS,
    Lake,
    interactions_table,
    with_event_partitions,
)
from recspark.datasets.lakes import (
    ITEMS,
    PAIRS_PER_USER,
    base_pairs,
    batch_increments,
    item_key,
    last_commit_metrics,
    random_active_users,
    random_factors,
    user_key,
    write_served_shop,
)
from recspark.ingest.fold import fold_increments
from recspark.ingest.parse import TimeBounds, parse_events
from recspark.ingest.plan import CONTENT, plan_batch
from recspark.ingest.writer import append_once, month_files, stored_events
from recspark.model.candidates.sources import newest_event_time
from recspark.model.families.als import fit_als
from recspark.model.scoring.als import recommend_top_n
from recspark.serve.publish import shop_context
from recspark.serve.refresh import refresh_users

BATCH_PAIRS = 10_000
BATCH_LINES = 10_000
ACTIVE_USERS = 1_000
CATALOGUE = 20_000
RANK = 32
FILE_METRICS = {
    "numTargetFilesAdded": "files added",
    "numTargetFilesRemoved": "files removed",
    "numTargetDeletionVectorsAdded": "deletion vectors",
}


@dataclass
class Point:
    """One stage at one size."""

    stage: str
    n: int
    seconds: float
    runs: list[float]
    driver_bytes: int
    files: dict[str, int] = field(default_factory=dict)


class DriverBytes:
    """Bytes the driver received as task results since the last call: the ``resultSize`` of
    every stage Spark's status store holds that is newer than the last one counted."""

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark
        self._last_stage = -1
        self.since_last()

    def since_last(self) -> int:
        context = self._spark.sparkContext
        jvm = context._jvm
        assert jvm is not None and context._gateway is not None, "a live session has a JVM"
        none = jvm.java.util.ArrayList()
        quantiles = context._gateway.new_array(jvm.double, 0)
        stages = context._jsc.sc().statusStore().stageList(none, False, False, quantiles, none)
        total, newest = 0, self._last_stage
        for position in range(stages.size()):  # newest first
            stage = stages.apply(position)
            if stage.stageId() <= self._last_stage:
                break
            newest = max(newest, stage.stageId())
            total += stage.resultSize()
        self._last_stage = newest
        return total


def _timed(
    runs: int, step: Callable[[int], dict[str, int] | None]
) -> tuple[float, list[float], dict[str, int]]:
    seconds: list[float] = []
    files: dict[str, int] = {}
    for attempt in range(runs):
        began = time.time()
        files = step(attempt) or {}
        seconds.append(round(time.time() - began, 2))
    typical = round(statistics.median(seconds[1:]), 2) if len(seconds) > 1 else seconds[0]
    return typical, seconds, files


def _file_metrics(metrics: dict[str, str]) -> dict[str, int]:
    return {label: int(metrics.get(key, 0)) for key, label in FILE_METRICS.items()}


def merge_stage(spark: SparkSession, config: Config, root: Path, pairs: int, runs: int) -> tuple:
    lake = Lake.at(str(root / "merge" / str(pairs)))
    spec = interactions_table(deletion_vectors=True)
    lake.ensure(spark, spec)
    base_pairs(spark, config.interactions, pairs).write.format("delta").mode("append").save(
        lake.path(spec.name)
    )
    batches = [batch_increments(spark, config.interactions, pairs, BATCH_PAIRS, b) for b in range(runs)]

    def one_batch(attempt: int) -> dict[str, int]:
        fold_increments(spark, lake.path(spec.name), batches[attempt], config.interactions, "curve", attempt)
        return _file_metrics(last_commit_metrics(lake.delta(spark, spec), "MERGE"))

    return lake, one_batch


def _event_lines(spark: SparkSession, first: int, count: int, day: date, hours: float) -> DataFrame:
    """JSON lines of events ``first`` .. ``first + count - 1``, spread over ``hours`` from ``day``."""
    start = int(datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc).timestamp())
    when = F.timestamp_seconds(F.lit(start) + F.col("id") * 7919 % int(hours * 3600))
    event = F.struct(
        F.format_string("e%09d", "id").alias("event_id"),
        F.date_format(when, "yyyy-MM-dd'T'HH:mm:ssXXX").alias("event_time"),
        user_key(F.col("id") % 100_000).alias("user_id"),
        item_key(F.col("id") * 31 % ITEMS).alias("item_id"),
        F.lit("view").alias("event_type"),
    )
    return spark.range(first, first + count).select(
        F.to_json(event).alias("raw"), F.lit("bench").alias("source")
    )


def dedup_stage(spark: SparkSession, config: Config, root: Path, stored: int, runs: int) -> tuple:
    """``stored`` events over the three days before the batch's day (all within the lateness)."""
    lake = Lake.at(str(root / "dedup" / str(stored)))
    lake.ensure(spark, EVENTS)
    batch_day = date(2026, 11, 20)
    bounds = TimeBounds(config.ingest.earliest_event_time, config.ingest.max_future_minutes)
    lines = _event_lines(spark, 0, stored, batch_day - timedelta(days=3), 72)
    history = parse_events(lines, bounds).where(F.col("reason").isNull())
    events = with_event_partitions(
        history.select("event_id", *CONTENT, F.current_timestamp().alias("ingested_at"))
    )
    append_once(month_files(events), lake.path(EVENTS.name), "history", 0, stamp=True)
    forgotten = spark.createDataFrame([], "user_hash string, forgotten_at timestamp")

    def one_batch(attempt: int) -> None:
        # Half retries of stored events (their own lines again), half new events on the batch's day.
        count = min(BATCH_LINES // 2, stored)
        first_retry = attempt * count % max(1, stored - count + 1)
        retries = _event_lines(spark, first_retry, count, batch_day - timedelta(days=3), 72)
        fresh = _event_lines(spark, stored + attempt * BATCH_LINES, BATCH_LINES - count, batch_day, 12)
        parsed = parse_events(retries.unionByName(fresh), bounds).withColumn(
            "ingested_at", F.current_timestamp()
        )
        parsed = parsed.localCheckpoint(eager=True)
        dates = [row[0] for row in parsed.select(F.to_date("event_time")).distinct().collect()]
        window = stored_events(
            lake.read(spark, EVENTS), dates, config.ingest.allowed_lateness_hours, "bench", attempt + 1
        )
        counts = plan_batch(parsed, window, forgotten).counts(None)
        assert counts["duplicate_rows"] == count, counts

    return lake, one_batch


def refresh_stage(spark: SparkSession, config: Config, root: Path, rows: int, runs: int) -> tuple:
    users = rows // config.serve.top_n
    lake = Lake.at(str(root / "refresh" / str(rows)))
    champion = write_served_shop(spark, config, lake, users, CATALOGUE, RANK, PAIRS_PER_USER)
    as_of = newest_event_time(lake.read(spark, INTERACTIONS))
    context = shop_context(spark, config, lake, lake.read(spark, INTERACTIONS), as_of).persist()

    def one_batch(attempt: int) -> dict[str, int]:
        active = random_active_users(spark, lake, ACTIVE_USERS, users, seed=attempt)
        batch_context = context.with_current_catalog(spark, config)
        refresh_users(spark, config, lake, champion, active, as_of, batch_context)
        return _file_metrics(last_commit_metrics(lake.delta(spark, RECOMMENDATIONS)))

    return lake, one_batch


def topn_stage(spark: SparkSession, config: Config, root: Path, users: int, runs: int) -> tuple:
    user_vectors = (
        random_factors(spark, users, RANK, 1).select(user_key().alias("user_id"), "features").persist()
    )
    item_vectors = (
        random_factors(spark, CATALOGUE, RANK, 2).select(item_key().alias("item_id"), "features").persist()
    )
    user_vectors.count(), item_vectors.count()

    def one_run(attempt: int) -> None:
        recommend_top_n(
            spark,
            user_vectors,
            item_vectors,
            config.serve.top_n,
            items_per_block=config.serve.max_items_per_block,
        ).write.format("noop").mode("overwrite").save()

    return None, one_run


def als_stage(spark: SparkSession, config: Config, root: Path, pairs: int, runs: int) -> tuple:
    ratings = (
        spark.range(pairs)
        .select(
            (F.col("id") / PAIRS_PER_USER).cast("int").alias("user_idx"),
            (F.rand(3) * CATALOGUE).cast("int").alias("item_idx"),
            (F.rand(4) * 3 + 1).cast("float").alias("rating"),
        )
        .dropDuplicates(["user_idx", "item_idx"])
        .repartition(max(2, config.spark.shuffle_partitions))
        .persist()
    )
    ratings.count()

    def one_fit(attempt: int) -> None:
        model = fit_als(ratings, config.train)
        model.itemFactors.write.format("noop").mode("overwrite").save()

    return None, one_fit


STAGES: dict[str, tuple[Callable, int, int, str]] = {
    # stage: (setup, smallest n, runs per size, what n counts)
    "merge": (merge_stage, 250_000, 3, "pairs in interactions"),
    "dedup": (dedup_stage, 200_000, 3, "stored events within the lateness"),
    "refresh": (refresh_stage, 500_000, 3, "serving rows"),
    "topn": (topn_stage, 25_000, 2, "users scored"),
    "als": (als_stage, 250_000, 1, "pairs fitted"),
}


def linear_fit(points: list[Point]) -> dict[str, float]:
    """time = a + b·n by least squares, and the worst relative miss of the line on the points."""
    n = np.array([p.n for p in points], dtype=float)
    t = np.array([p.seconds for p in points], dtype=float)
    b, a = np.polyfit(n, t, 1) if len(points) > 1 else (0.0, t[0])
    worst = float(np.max(np.abs(a + b * n - t) / t))
    return {
        "a_seconds": round(float(a), 3),
        "b_seconds_per_million": round(float(b) * 1e6, 3),
        "worst_miss": worst,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated, of: " + ", ".join(STAGES)
    )
    parser.add_argument("--sizes", type=int, default=3, help="doubling sizes from each stage's smallest")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's smallest size")
    parser.add_argument("--root", type=Path, default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the points and fits here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.root or Path(tempfile.mkdtemp(prefix="recspark-curve-"))
    config = load_config(
        None,
        [
            f"lake.root={root}/lake",
            "catalog.path=null",
            "spark.shuffle_partitions=4",
            "spark.driver_memory=12g",
            "spark.conf.spark.databricks.delta.snapshotPartitions=2",
            # The status store keeps 1,000 stages by default: too few to count a stage's results.
            "spark.conf.spark.ui.retainedStages=100000",
            f"train.rank={RANK}",
        ],
    )
    spark = build_spark(config, "bench-curve")
    results = DriverBytes(spark)
    began = time.time()
    print(
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now():%Y-%m-%d %H:%M}"
    )
    report: dict[str, dict] = {}
    for stage in args.stages.split(","):
        setup, smallest, runs, counts = STAGES[stage]
        points: list[Point] = []
        # An untimed pass at a sixteenth of the smallest size first: the JVM compiles the stage's
        # code paths there, so the smallest size is not charged for the JIT.
        lake, step = setup(spark, config, root / "warm-up", max(1_000, int(smallest * args.scale) // 16), 1)
        step(0)
        spark.catalog.clearCache()
        for size in range(args.sizes):
            n = int(smallest * args.scale) * 2**size
            lake, step = setup(spark, config, root, n, runs)
            results.since_last()
            seconds, each, files = _timed(runs, step)
            point = Point(stage, n, seconds, each, results.since_last() // runs, files)
            points.append(point)
            print(json.dumps(asdict(point)), flush=True)
            spark.catalog.clearCache()
            if lake is not None:
                shutil.rmtree(lake.root, ignore_errors=True)
        fit = linear_fit(points)
        report[stage] = {"n counts": counts, "points": [asdict(p) for p in points], "fit": fit}
        print(
            f"{stage}: time = {fit['a_seconds']} s + {fit['b_seconds_per_million']} s per million {counts}",
            flush=True,
        )
    print(f"\nall stages in {time.time() - began:.0f} s\n")
    print("| stage | n | time (runs) | files added / removed / deletion vectors | driver received |")
    print("|---|---|---|---|---|")
    for stage, entry in report.items():
        for p in entry["points"]:
            file_ops = " / ".join(str(v) for v in p["files"].values()) or "—"
            times = ", ".join(f"{s:.1f}" for s in p["runs"])
            print(
                f"| {stage} | {p['n']:,} {entry['n counts']} | {p['seconds']:.2f} s ({times}) | {file_ops} | "
                f"{p['driver_bytes'] / 2**20:.1f} MiB |"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()

"""Benchmark: one long backfill (years of history in one file) through `recspark ingest --once`.

    .venv/bin/python bench/backfill.py --events 80000 --years 22

A real log's history (e.g. a ratings log spanning 22 years) lands as one file in a lake whose
stream has already run (``--warm-up-batches``, default 2: a small batch of new pairs, appended,
then one that MERGEs into pairs the table holds, as every running stream has). The figure is the
batch time ``ingest_metrics`` records (and its phases), plus the files and date partitions
written to ``events``: about one file per date partition, not one per date and task.

``--floor`` also times the bare Delta steps on the same file in the same session, with no
recspark bookkeeping: read it with a schema, write it month-partitioned, and fold its pairs into
an empty change-feed table by MERGE and by plain append. That is what a batch cannot go below on
the machine at hand. It runs once before the batch (as warm as the batch) and once after (the
JVM warmed by the batch too).

``--gates`` then lands 25 more events, ingests them, and times the quality gates of that run two
ways: on the rows the run wrote (what `ingest --once` does) and on the whole tables (what it did
before, and what the scheduled `recspark check` does). Data Docs are off: validation alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config, load_config
from recspark.core.interactions import aggregate_events
from recspark.core.session import build_spark
from recspark.core.tables import EVENTS, INGEST_METRICS, INTERACTIONS, Lake, with_event_partitions
from recspark.ingest.stream import run_ingest
from recspark.ops.quality.gate import gate_table


def write_history(path: Path, events: int, years: int, seed: int, prefix: str = "h") -> None:
    """``events`` ratings and views over ``years``, busier towards the end (as real shops grow)."""
    rng = np.random.default_rng(seed)
    end = datetime(2026, 11, 1, tzinfo=timezone.utc)
    span = years * 365 * 86_400
    ages = (rng.power(3.0, events) * span).astype(np.int64)  # skewed to the recent past
    users = rng.zipf(1.4, events) % 700
    items = rng.zipf(1.2, events) % 9000
    kinds = rng.choice(["view", "rating", "purchase"], events, p=[0.5, 0.4, 0.1])
    lines = []
    for k in range(events):
        record: dict[str, str | float] = {
            "event_id": f"{prefix}{k:07d}",
            "event_time": (end - timedelta(seconds=span - int(ages[k]))).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "user_id": f"u{users[k]}",
            "item_id": f"i{items[k]}",
            "event_type": str(kinds[k]),
        }
        if kinds[k] == "rating":
            record["value"] = float(rng.integers(1, 6))
        lines.append(json.dumps(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


RAW_SCHEMA = (
    "event_id STRING, event_time STRING, user_id STRING, item_id STRING, event_type STRING, value DOUBLE"
)


def floor(spark: SparkSession, config: Config, history: Path, root: Path) -> dict[str, float]:
    """Seconds for each bare Delta step of a backfill batch (see the module docstring)."""
    lake = Lake.at(str(root))
    seconds: dict[str, float] = {}

    def timed(name: str, step: Callable[[], object]) -> None:
        began = time.time()
        step()
        seconds[name] = round(time.time() - began, 2)

    raw = spark.read.schema(RAW_SCHEMA).json(str(history))
    events = with_event_partitions(raw.withColumn("event_time", F.to_timestamp("event_time"))).persist()
    timed("read", events.count)
    timed(
        "events write",
        lambda: (
            events.repartition("event_month")
            .sortWithinPartitions("event_month", "event_time")
            .write.format("delta")
            .partitionBy("event_month")
            .save(lake.path(EVENTS.name))
        ),
    )
    increments = aggregate_events(events, config.interactions)
    merged = lake.ensure(spark, INTERACTIONS).alias("t")
    on_pair = "t.user_id = s.user_id AND t.item_id = s.item_id"
    timed(
        "pairs MERGE",
        lambda: merged.merge(increments.alias("s"), on_pair).whenNotMatchedInsertAll().execute(),
    )
    appended = Lake.at(str(root / "append"))
    appended.ensure(spark, INTERACTIONS)
    timed(
        "pairs append",
        lambda: increments.write.format("delta").mode("append").save(appended.path(INTERACTIONS.name)),
    )
    events.unpersist()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=80_000)
    parser.add_argument("--years", type=int, default=22)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--floor", action="store_true", help="also time the bare Delta steps")
    parser.add_argument("--gates", action="store_true", help="then time a small run's quality gates")
    parser.add_argument(
        "--warm-up-batches", type=int, default=2, help="small batches the stream runs first (1: appends only)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.root or Path(tempfile.mkdtemp(prefix="recspark-backfill-"))
    config = load_config(
        None,
        [
            f"lake.root={root / 'lake'}",
            f"ingest.path={root / 'events'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            "spark.shuffle_partitions=4",
            "quality.enabled=false",  # the batch alone
            *args.set,
        ],
    )
    spark = build_spark(config, "bench-backfill")
    lake = Lake.at(config.lake.root)
    # A running stream is warm: its JVM, Delta and the tables are loaded, and it has run both
    # kinds of batch (one of new pairs only, appended; one that MERGEs into pairs the table
    # holds), so Spark has generated their code, before the backfill lands.
    for k in range(args.warm_up_batches):
        # The same users, items and times each time, under new event ids: the same pairs again.
        write_history(Path(config.ingest.path) / f"warm-up-{k}.jsonl", 20, 1, args.seed + 1, prefix=f"w{k}_")
        run_ingest(spark, config, lake, once=True)
    history = root / "history.jsonl"
    write_history(history, args.events, args.years, args.seed)
    floors: dict[str, dict[str, float]] = {}
    if args.floor:  # before the batch, as warm as the batch will be
        floors["before the batch"] = floor(spark, config, history, root / "floor-before")
    history.rename(Path(config.ingest.path) / history.name)  # the producer contract: rename in
    began = time.time()
    run_ingest(spark, config, lake, once=True)
    wall = time.time() - began
    metrics = lake.read(spark, INGEST_METRICS).orderBy(F.col("batch_id").desc()).take(1)[0]
    detail = lake.delta(spark, EVENTS).detail().collect()[0]
    dates = lake.read(spark, EVENTS).select("event_date").distinct().count()
    print(f"machine: {platform.machine()}, {platform.python_version()}, date {datetime.now():%Y-%m-%d}")
    print(
        f"backfill of {metrics['input_rows']:,} lines over {args.years} years: batch "
        f"{metrics['duration_seconds']:.1f} s (phases {dict(metrics['phase_seconds'])}), "
        f"command wall {wall:.1f} s"
    )
    print(f"events: {metrics['events_written']:,} rows in {detail['numFiles']:,} files over {dates:,} dates")
    if args.floor:
        landed = Path(config.ingest.path) / history.name
        floors["after the batch"] = floor(spark, config, landed, root / "floor-after")
    for when, steps in floors.items():
        print(f"floor {when} (bare Delta steps, same session): {steps}, total {sum(steps.values()):.1f} s")
    if args.gates:
        time_gates(spark, config, lake, root, args.seed)
    spark.stop()


def time_gates(spark: SparkSession, config: Config, lake: Lake, root: Path, seed: int) -> None:
    """A 25-event run after the backfill: its gates on the rows it wrote, then on whole tables,
    then on its rows again (the JVM as warm as for the whole-table pass)."""
    small = root / "small.jsonl"
    write_history(small, 25, 1, seed + 2, prefix="s")
    small.rename(Path(config.ingest.path) / small.name)
    started = datetime.now(timezone.utc)
    run_ingest(spark, config, lake, once=True)
    checking = config.with_overrides(["quality.enabled=true", "quality.data_docs=false"])
    passes = (("rows the run wrote", started), ("whole tables", None), ("rows the run wrote, again", started))
    for label, since in passes:
        began = time.time()
        rows = [
            gate_table(spark, checking, lake, spec, job="bench", written_since=since).rows
            for spec in (EVENTS, INTERACTIONS)
        ]
        print(f"gates on {label}: {time.time() - began:.1f} s (events, interactions rows: {rows})")


if __name__ == "__main__":
    main()

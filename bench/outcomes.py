"""Benchmark: the attribution phase of ingest (``recommendation_outcomes``) on a day of 1M impressions.

    PYTHONPATH=$PWD .venv/bin/python bench/outcomes.py --impressions 1000000

Times :meth:`EventBatchWriter.write_outcomes`, the ``outcomes`` phase of an ingest batch, on
typed events built in Spark (JSON parsing and dedup are the other phases, measured by
bench/ingest.py):

1. ``day in one batch``: a day's impressions (lists of 10, 90% champion, 10% challenger) and the
   views, add-to-carts and purchases that followed them (3% of shown items clicked, 30% of those
   carted, half of those bought) arrive in one batch into a lake that holds the day before.
2. ``streaming batch``: the day now stored, a batch of new clicks on random lists of that day
   plus new impressions, as the 5 s trigger forms them at the day's rate.
3. ``late impressions``: a batch of impressions whose clicks were stored before them.

Each figure is the median of ``--repeats`` runs of the phase (each on a fresh batch id, so the
MERGE is really committed).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import load_config
from recspark.core.session import build_spark
from recspark.core.tables import EVENTS, RECOMMENDATION_OUTCOMES, Lake, with_event_partitions
from recspark.ingest.plan import CONTENT
from recspark.ingest.stream import QUERY_NAME, ensure_ingest_tables
from recspark.ingest.writer import EventBatchWriter

ITEMS = 50_000
LENGTH = 10
DAY_MS = 86_400_000


def _unit(seed: F.Column, salt: str) -> F.Column:
    """A deterministic uniform [0, 1) from a seed column."""
    return (F.abs(F.xxhash64(seed, F.lit(salt))) % 1_000_000) / 1_000_000.0


def _rid(ms: F.Column, seed: F.Column) -> F.Column:
    """A UUIDv7 text for serving time ``ms`` (the format of recspark.core.recommendation_ids)."""
    t = F.lpad(F.lower(F.hex(ms)), 12, "0")
    h = F.sha2(seed.cast("string"), 256)
    variant = F.element_at(
        F.array(*[F.lit(c) for c in "89ab"]), (F.abs(F.xxhash64(seed)) % 4 + 1).cast("int")
    )
    return F.concat(
        F.substring(t, 1, 8), F.lit("-"), F.substring(t, 9, 4), F.lit("-7"), F.substring(h, 1, 3),
        F.lit("-"), variant, F.substring(h, 4, 3), F.lit("-"), F.substring(h, 7, 12),
    )  # fmt: skip


def impressions(spark: SparkSession, first: int, count: int, day_start_ms: int) -> DataFrame:
    """``count`` impressions (ids ``first``...) served over the day starting at ``day_start_ms``."""
    n = F.col("id")
    ms = F.lit(day_start_ms) + (n * 7919) % DAY_MS
    rid = _rid(ms, n)
    champion = _unit(n, "arm") < 0.9
    return spark.range(first, first + count).select(
        rid.alias("event_id"),
        F.timestamp_millis(ms).alias("event_time"),
        F.concat(F.lit("u"), (n % 200_000).cast("string")).alias("user_id"),
        F.lit("").alias("item_id"),
        F.lit("impression").alias("event_type"),
        F.lit(None).cast("double").alias("value"),
        F.lit(None).cast("string").alias("session_id"),
        rid.alias("recommendation_id"),
        F.transform(
            F.sequence(F.lit(0), F.lit(LENGTH - 1)),
            lambda k: F.concat(F.lit("i"), ((n * 7919 + k * 104_729) % ITEMS).cast("string")),
        ).alias("items"),
        F.lit("recommendations").alias("list"),
        F.when(champion, F.lit("5")).otherwise(F.lit("6")).alias("model_version"),
        F.when(champion, F.lit(None)).otherwise(F.lit("challenger")).alias("variant"),
        F.array(*[F.lit("als")] * (LENGTH - 2), F.lit("popular"), F.lit("popular")).alias("sources"),
    )


def followers(shown: DataFrame, click: float, salt: str) -> DataFrame:
    """The views (share ``click`` of shown items), add-to-carts and purchases after ``shown``."""
    slots = shown.select(
        "recommendation_id", "event_time", "user_id", F.posexplode("items").alias("pos", "item")
    ).withColumn("_seed", F.concat("recommendation_id", F.lit(salt), F.col("pos").cast("string")))
    clicked = slots.where(_unit(F.col("_seed"), "click") < click)
    carted = clicked.where(_unit(F.col("_seed"), "cart") < 0.3)
    bought = carted.where(_unit(F.col("_seed"), "buy") < 0.5)

    def events(frame: DataFrame, kind: str, minutes: int, value: F.Column) -> DataFrame:
        return frame.select(
            F.concat(F.lit(kind[0] + salt + "-"), F.col("_seed")).alias("event_id"),
            (F.col("event_time") + F.expr(f"INTERVAL {minutes} MINUTES")).alias("event_time"),
            "user_id",
            F.col("item").alias("item_id"),
            F.lit(kind).alias("event_type"),
            value.alias("value"),
            F.lit(None).cast("string").alias("session_id"),
            "recommendation_id",
            *[F.lit(None).cast(t).alias(c) for c, t in IMPRESSION_ONLY],
        )

    none = F.lit(None).cast("double")
    return (
        events(clicked, "view", 3, none)
        .unionByName(events(carted, "add_to_cart", 5, none))
        .unionByName(events(bought, "purchase", 9, F.lit(1.0)))
    )


IMPRESSION_ONLY = (
    ("items", "array<string>"),
    ("list", "string"),
    ("model_version", "string"),
    ("variant", "string"),
    ("sources", "array<string>"),
)


def as_batch(frame: DataFrame) -> DataFrame:
    """``frame`` as ``BatchPlan.events()`` hands it to the writer."""
    return with_event_partitions(
        frame.select("event_id", *CONTENT, F.current_timestamp().alias("ingested_at"))
    )


def store(frame: DataFrame, lake: Lake, batch_id: int) -> None:
    """Append a batch to ``events`` as ingest would have (its app id and batch id)."""
    as_batch(frame).select(
        "*", F.lit("bench").alias("ingest_app_id"), F.lit(batch_id).cast("long").alias("ingest_batch_id")
    ).write.format("delta").mode("append").save(lake.path(EVENTS.name))


def timed(writer: EventBatchWriter, batch: DataFrame, batch_id: int) -> tuple[float, int, dict]:
    began = time.perf_counter()
    rows, issues = writer.write_outcomes(batch, "bench", batch_id)
    return time.perf_counter() - began, rows, issues


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impressions", type=int, default=1_000_000, help="impressions in the day")
    parser.add_argument("--stream-clicks", type=int, default=300, help="clicks in a streaming batch")
    parser.add_argument("--stream-impressions", type=int, default=60, help="impressions in it")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="recspark-bench-outcomes-"))
    catalog = root / "catalog.jsonl"
    catalog.write_text(
        "".join(json.dumps({"item_id": f"i{k}", "price": 1 + k % 97}) + "\n" for k in range(ITEMS))
    )
    config = load_config(
        "conf/local.yaml",
        [f"lake.root={root / 'lake'}", f"catalog.path={catalog}", f"ingest.path={root / 'incoming'}"],
    )
    spark = build_spark(config, "bench-outcomes")
    lake = Lake.at(config.lake.root)
    ensure_ingest_tables(spark, config, lake)
    writer = EventBatchWriter(config, lake, lake.checkpoint(QUERY_NAME))

    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    day_ms = int(today.timestamp() * 1000)
    n = args.impressions
    # The day before, stored: what the look-up of stored events has to skip.
    before = impressions(spark, 10 * n, n, day_ms - DAY_MS)
    store(before.unionByName(followers(before, 0.03, "y")), lake, 0)

    shown = impressions(spark, 0, n, day_ms)
    day = as_batch(shown.unionByName(followers(shown, 0.03, "d"))).localCheckpoint(eager=True)
    figures: dict[str, list[float]] = {"day in one batch": [], "streaming batch": [], "late impressions": []}
    sizes: dict[str, int] = {"day in one batch": day.count()}
    detail: dict[str, tuple] = {}
    for r in range(args.repeats):
        seconds, rows, issues = timed(writer, day, 100 + r)
        figures["day in one batch"].append(seconds)
        detail["day in one batch"] = (rows, issues)
        print(f"day in one batch #{r}: {seconds:.2f}s ({rows} outcome rows, issues {issues})", flush=True)
    store(day.drop("event_date", "event_month", "ingested_at"), lake, 1)

    for r in range(args.repeats):
        sample = shown.sample(fraction=min(1.0, args.stream_clicks / n), seed=r)
        clicks = (
            followers(sample, 0.34, f"s{r}").where(F.col("event_type") == "view").limit(args.stream_clicks)
        )
        fresh = impressions(spark, 20 * n + r * 1000, args.stream_impressions, day_ms)
        batch = as_batch(clicks.unionByName(fresh)).localCheckpoint(eager=True)
        sizes["streaming batch"] = batch.count()
        seconds, rows, issues = timed(writer, batch, 200 + r)
        figures["streaming batch"].append(seconds)
        print(
            f"streaming batch #{r}: {seconds:.2f}s ({sizes['streaming batch']} events, {rows} rows)",
            flush=True,
        )

    for r in range(args.repeats):
        late = impressions(spark, 30 * n + r * 10_000, 2_000, day_ms)
        store(followers(late, 0.1, f"l{r}"), lake, 400 + r)  # their clicks, stored by an earlier batch
        batch = as_batch(late).localCheckpoint(eager=True)
        sizes["late impressions"] = batch.count()
        seconds, rows, issues = timed(writer, batch, 300 + r)
        figures["late impressions"].append(seconds)
        print(f"late impressions #{r}: {seconds:.2f}s ({rows} rows, issues {issues})", flush=True)

    outcome_rows = lake.read(spark, RECOMMENDATION_OUTCOMES).count()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"\ncommit {commit}, {platform.platform()}, {platform.processor() or platform.machine()}")
    print(
        f"spark.master {config.spark.master}, {n:,} impressions/day x {LENGTH} items, "
        f"{outcome_rows} outcome rows"
    )
    for name, values in figures.items():
        print(
            f"{name:18s} {sizes[name]:>10,} events  median {statistics.median(values):6.2f}s  runs {values}"
        )
    spark.stop()


if __name__ == "__main__":
    main()

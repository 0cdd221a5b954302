"""Benchmark: sustained ingestion throughput and landing-to-visible latency (file source).

    .venv/bin/python bench/ingest.py --events 3200000 --days 32 --files-per-trigger 8 --probes 5

1. Throughput: a generated shop (JSON lines, one file per day, with its usual 1% retried
   duplicates and 0.2% broken lines) is folded into a fresh lake by ``recspark ingest --once``
   with ``maxFilesPerTrigger`` setting the batch size (8 files of ~100,000 lines: about what the
   stream forms by itself at 20,000 events/s, when each batch takes what landed during the last).
   Sustained rate = input lines of the batches after the first (JVM and Delta warm-up) / the
   wall time they took, end to end (``ingest_metrics`` start of the second batch to the end of the last).
2. Latency: the same lake, the query now running with its processing-time trigger (5 s by
   default). A small file for a fresh user lands atomically (rename), and the table is polled
   until that user's row is in ``interactions``; the figure is landing -> visible.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import functions as F

from recspark.core.config import load_config
from recspark.core.session import build_spark
from recspark.core.tables import INGEST_METRICS, INTERACTIONS, Lake
from recspark.datasets.shop.files import write_shop
from recspark.datasets.shop.spec import ShopSpec
from recspark.ingest.stream import run_ingest, start_ingest


def probe_file(directory: Path, probe: int, events: int) -> str:
    """Write one file of ``events`` fresh events for a new user atomically; return the user id."""
    user = f"probe-user-{probe}"
    now = datetime.now(timezone.utc)
    lines = [
        json.dumps(
            {
                "event_id": f"probe-{probe}-{k}",
                "event_time": (now - timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "user_id": user,
                "item_id": f"i{k % 50:05d}",
                "event_type": "view",
            }
        )
        for k in range(events)
    ]
    tmp = directory / f".probe-{probe}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(directory / f"probe-{probe}.jsonl")
    return user


def print_slowest_executions(spark, top: int = 40) -> None:
    """Where a batch's time goes: Spark SQL executions of the last batches, from the UI's REST API."""
    import urllib.request

    base = spark.sparkContext.uiWebUrl + "/api/v1/applications/" + spark.sparkContext.applicationId
    with urllib.request.urlopen(base + "/sql?details=false&length=100000") as response:
        executions = json.load(response)
    for e in executions[-top:]:
        print(f"{e['id']:>5} {e['duration'] / 1000:6.2f}s {e['description'][:150]!r}")


def visible(spark, lake: Lake, user: str) -> bool:
    """Wait for the next commit to ``interactions`` (a cheap listing of its log), then ask
    whether ``user`` is in the table; polling with queries would steal the job's 2 cores."""
    log_dir = Path(lake.path(INTERACTIONS.name)) / "_delta_log"
    seen = len(list(log_dir.glob("*.json")))
    while len(list(log_dir.glob("*.json"))) == seen:
        time.sleep(0.05)
    return lake.read(spark, INTERACTIONS).where(F.col("user_id") == user).limit(1).count() > 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recspark.ingest.stream").setLevel(logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--files-per-trigger", type=int, default=8)
    parser.add_argument("--trigger-seconds", type=float, default=5.0)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--shuffle-partitions", type=int, default=4)
    parser.add_argument("--probe-events", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="print the slowest Spark SQL executions")
    parser.add_argument("--root", type=Path, default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="recspark-bench-ingest-"))
    shutil.rmtree(root / "lake", ignore_errors=True)
    incoming = root / "incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    config = load_config(
        "conf/local.yaml",
        [
            "spark.master=local[2]",
            f"spark.shuffle_partitions={args.shuffle_partitions}",
            "spark.driver_memory=8g",
            f"spark.conf.spark.ui.enabled={'true' if args.profile else 'false'}",
            f"lake.root={root / 'lake'}",
            f"ingest.path={incoming / 'events'}",
            f"catalog.path={incoming / 'catalog.jsonl'}",
            f"ingest.max_files_per_trigger={args.files_per_trigger}",
            f"ingest.trigger_seconds={args.trigger_seconds}",
        ],
        environ={},
    )
    started = time.time()
    spec = ShopSpec(
        users=max(2000, args.events // 100), items=20_000, categories=50, events=args.events, days=args.days
    )
    summary = write_shop(spec, incoming / "events", incoming / "catalog.jsonl")
    print(
        f"generated {summary.events:,} events (+{summary.duplicates:,} duplicates, "
        f"{summary.bad_lines:,} bad) in {summary.files} files in {time.time() - started:.0f}s"
    )

    spark = build_spark(config, "bench-ingest")
    lake = Lake.at(config.lake.root)
    began = time.time()
    run_ingest(spark, config, lake, once=True)
    total = time.time() - began
    batches = lake.read(spark, INGEST_METRICS).orderBy("batch_id").collect()
    steady = batches[1:]
    lines = sum(b.input_rows for b in steady)
    # Wall time of the steady batches: from the start of the second batch to the end of the last.
    last = batches[-1]
    wall = (last.started_at - steady[0].started_at).total_seconds() + last.duration_seconds
    batch_seconds = [b.duration_seconds for b in steady]
    print(
        f"throughput: {len(batches)} batches, {sum(b.input_rows for b in batches):,} lines in {total:.1f}s "
        f"(with warm-up); steady {lines:,} lines in {wall:.1f}s = {lines / wall:,.0f} events/s; "
        f"batch {statistics.median(batch_seconds):.1f}s median for "
        f"{statistics.median(b.input_rows for b in steady):,.0f} lines"
    )

    # Latency: a running query, files landing between triggers.
    query = start_ingest(spark, config, lake, once=False)
    latencies = []
    try:
        time.sleep(args.trigger_seconds * 2)
        for probe in range(args.probes):
            time.sleep(args.trigger_seconds * (probe + 1) / (args.probes + 1))  # spread over the trigger
            landed = time.time()
            user = probe_file(incoming / "events", probe, args.probe_events)
            while not visible(spark, lake, user):
                if time.time() - landed > 120:
                    raise SystemExit(f"probe {probe} not visible after 120 s")
            latencies.append(time.time() - landed)
            print(f"probe {probe}: visible in interactions {latencies[-1]:.1f}s after landing")
        query.processAllAvailable()  # stop between batches, not in the middle of one
    finally:
        query.stop()
    print(
        f"landing -> visible at a {args.trigger_seconds:g}s trigger: "
        f"median {statistics.median(latencies):.1f}s, max {max(latencies):.1f}s over {len(latencies)} files"
    )
    print(
        f"date {date.today()}, machine {platform.machine()} {platform.processor() or ''}, "
        f"{len(batches)} batches of {args.files_per_trigger} files"
    )
    if args.profile:
        print_slowest_executions(spark)
    spark.stop()


if __name__ == "__main__":
    main()

"""Benchmark: `recspark api` with a large serving table: memory, latency under load, and how
soon a refresh MERGE is visible.

    flock /tmp/spark.lock .venv/bin/python bench/api.py --users 1000000 --rate 2000 --seconds 60

1. Spark writes a lake of ``--users`` × ``--n`` recommendation rows (as a full publish lays them
   out: clustered by user, deletion vectors and the change feed on), ``similar_items`` for
   ``--items`` items, ``fallback_items`` and a catalog.
2. The service starts in a subprocess on 127.0.0.1; the bench waits for the full load and reads
   its resident memory (against the same service on an empty lake) and the arrays' bytes.
3. A load test, open loop at ``--rate`` requests/s for ``--seconds`` (bounded in count and
   time): a lean asyncio client on ``--connections`` keep-alive connections sends each request
   at its intended time; latency is measured from that time, so queueing counts. The mix: known
   users (a fifth with a basket to exclude, a tenth with a category), unknown users, similar
   items. The client's and the server's CPU are reported.
4. A refresh of ``--active`` users: new lists MERGEd by ``serve/refresh.py``'s
   ``merge_user_rows`` (a real Spark MERGE with deletion vectors); the time from its commit to
   the service answering a refreshed user with the new list, and whether it was incremental.
5. The cost of the impression log: the same load for ``--compare-seconds`` on a fresh service
   with impressions on, then off; server CPU per request of each.

Impressions land under ``--root``/impressions (every list served, as in production).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from recspark.core.config import Config, load_config
from recspark.core.session import build_spark
from recspark.core.tables import FALLBACK_ITEMS, RECOMMENDATIONS, SIMILAR_ITEMS, Lake, serving_table
from recspark.datasets.lakes import item_key, user_key
from recspark.serve.publish import publish_recommendations
from recspark.serve.refresh import merge_user_rows

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = 50


def write_lake(spark: Any, config: Config, lake: Lake, users: int, items: int, n: int) -> None:
    """The serving tables and the catalog (a few items out of stock)."""
    from pyspark.sql import functions as F

    lake.ensure(spark, serving_table(True))
    lists = spark.range(users * n).select(
        user_key((F.col("id") / n).cast("long")).alias("user_id"),
        ((F.col("id") % n) + 1).cast("int").alias("rank"),
        item_key((F.rand(11) * items).cast("long")).alias("item_id"),
        (F.lit(1.0) / (F.col("id") % n + 1) + F.rand(12) * 1e-3).alias("score"),
        F.when(F.col("id") % n < n - 2, "als").otherwise("trending").alias("source"),
        F.lit("7").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
        F.when(F.col("id") % n < n - 2, item_key((F.rand(13) * items).cast("long"))).alias("because_item_id"),
    )
    publish_recommendations(lake, lists, interactions_version=0)
    lake.ensure(spark, SIMILAR_ITEMS)
    similar = spark.range(items * 10).select(
        item_key((F.col("id") / 10).cast("long")).alias("item_id"),
        ((F.col("id") % 10) + 1).cast("int").alias("rank"),
        item_key((F.rand(14) * items).cast("long")).alias("similar_item_id"),
        (F.lit(1.0) / (F.col("id") % 10 + 1)).alias("score"),
        F.lit("7").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )
    similar.write.format("delta").mode("overwrite").save(lake.path(SIMILAR_ITEMS.name))
    lake.ensure(spark, FALLBACK_ITEMS)
    per_category = 2 * config.api.max_n
    fallback = spark.range(CATEGORIES * per_category).select(
        item_key(F.col("id")).alias("item_id"),
        F.format_string("c%02d", F.col("id") % CATEGORIES).alias("category"),
        (F.col("id") + 1).cast("int").alias("rank"),
        (F.lit(1e6) - F.col("id")).cast("double").alias("score"),
        F.lit("trending").alias("source"),
        F.lit("7").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )
    fallback.write.format("delta").mode("overwrite").save(lake.path(FALLBACK_ITEMS.name))
    assert config.catalog.path is not None
    rng = np.random.default_rng(3)
    with open(config.catalog.path, "w") as catalog:
        for k in range(items):
            line = {
                "item_id": f"i{k:06d}",
                "category": f"c{k % CATEGORIES:02d}",
                "available": bool(rng.random() > 0.02),
            }
            catalog.write(json.dumps(line) + "\n")


class Service:
    """`recspark api` in a subprocess."""

    def __init__(self, config: Config, port: int, log: Path) -> None:
        settings = [
            f"lake.root={config.lake.root}",
            f"catalog.path={config.catalog.path}",
            f"serve.top_n={config.serve.top_n}",
            f"api.port={port}",
            f"api.poll_seconds={config.api.poll_seconds}",
            f"ingest.path={config.ingest.path}",
            f"impressions.enabled={str(config.impressions.enabled).lower()}",
        ]
        command = [sys.executable, "-m", "recspark.cli", "api", *(a for s in settings for a in ("--set", s))]
        self.port = port
        with log.open("w") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.process.pid)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait(self, ready: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, health = self.get("/health")
                if ready(health):
                    return health
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the service did not get ready")

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request_mix(users: int, items: int, count: int, seed: int) -> tuple[list[bytes], list[str]]:
    """``count`` GET requests (raw HTTP/1.1) and their kinds."""
    rng = random.Random(seed)
    requests, kinds = [], []
    for _ in range(count):
        draw = rng.random()
        if draw < 0.80:
            path = f"/v1/users/u{rng.randrange(users):07d}/recommendations"
            extra = rng.random()
            if extra < 0.2:
                basket = ",".join(f"i{rng.randrange(items):06d}" for _ in range(3))
                path += f"?exclude={basket}"
            elif extra < 0.3:
                path += f"?category=c{rng.randrange(CATEGORIES):02d}"
            kind = "user"
        elif draw < 0.90:
            path, kind = f"/v1/users/stranger-{rng.randrange(10**9)}/recommendations", "unknown user"
        else:
            shopper = f"u{rng.randrange(users):07d}"
            path, kind = f"/v1/items/i{rng.randrange(items):06d}/similar?user_id={shopper}", "similar"
        requests.append(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        kinds.append(kind)
    return requests, kinds


async def open_loop(
    port: int, requests: list[bytes], rate: float, connections: int, cap: float
) -> dict[str, Any]:
    """Send request k at start + k / rate on the first free connection; latency from that time."""
    total = len(requests)
    latency = np.full(total, np.nan)
    lag = np.full(total, np.nan)
    status = np.zeros(total, np.int32)
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    start = time.perf_counter() + 0.2

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (k := await queue.get()) is not None:
                intended = start + k / rate
                lag[k] = time.perf_counter() - intended
                writer.write(requests[k])
                head = await reader.readuntil(b"\r\n\r\n")
                status[k] = int(head[9:12])
                at = head.lower().find(b"content-length:")
                length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
                await reader.readexactly(length)
                latency[k] = time.perf_counter() - intended
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    sent = 0
    for k in range(total):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() - start > cap:
            break
        queue.put_nowait(k)
        sent += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=cap)
    wall = time.perf_counter() - wall_before
    return {
        "sent": sent,
        "latency": latency[:sent],
        "lag": lag[:sent],
        "status": status[:sent],
        "client_cpu": (time.process_time() - cpu_before) / wall,
        "wall": wall,
    }


def percentiles(values: np.ndarray) -> dict[str, float]:
    done = values[~np.isnan(values)] * 1000
    if done.size == 0:
        return {}
    points = {"p50": 50, "p90": 90, "p99": 99, "p99.9": 99.9}
    found = {name: round(float(np.percentile(done, q)), 3) for name, q in points.items()}
    found["max"] = round(float(done.max()), 3)
    return found


def in_service_buckets(service: Service) -> dict[float, float]:
    """The service's own latency histogram (``/metrics``), both list endpoints: le -> count."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=30) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recspark_api_request_seconds_bucket" and sample.labels["endpoint"] in (
                "recommendations",
                "similar",
            ):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def load_test(service: Service, args: argparse.Namespace, seconds: float, seed: int) -> dict[str, Any]:
    count = int(args.rate * seconds)
    requests, kinds = request_mix(args.users, args.items, count, seed)
    before = in_service_buckets(service)
    server_cpu = sum(service.ps.cpu_times()[:2])
    result = asyncio.run(open_loop(service.port, requests, args.rate, args.connections, cap=seconds + 60))
    server_cpu = (sum(service.ps.cpu_times()[:2]) - server_cpu) / result["wall"]
    sent = result["sent"]
    kinds_sent = np.array(kinds[:sent])
    after = in_service_buckets(service)
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    within = {
        f"<= {le * 1000:g} ms": round((after[le] - before.get(le, 0.0)) / total, 5)
        for le in sorted(after)
        if le in (0.0005, 0.001, 0.002, 0.005, 0.01) and total
    }
    return {
        "requests": sent,
        "seconds": round(result["wall"], 2),
        "rate": round(sent / result["wall"], 1),
        "errors": int(np.sum(result["status"] != 200)),
        "latency_ms": percentiles(result["latency"]),
        "by_kind_ms": {
            kind: percentiles(result["latency"][kinds_sent == kind]) for kind in sorted(set(kinds_sent))
        },
        "client_send_lag_ms": percentiles(result["lag"]),
        # The time inside the service (endpoint to response), from its own histogram: what the
        # request cost there, apart from waiting for a CPU or in a socket.
        "in_service_share": within,
        "client_cpu_cores": round(result["client_cpu"], 3),
        "server_cpu_cores": round(server_cpu, 3),
        "server_cpu_us_per_request": round(server_cpu * result["wall"] / sent * 1e6, 1),
        "load_average": os.getloadavg(),
    }


def refresh(spark: Any, lake: Lake, service: Service, args: argparse.Namespace) -> dict[str, Any]:
    """MERGE new lists for ``--active`` random users; time until the service serves them."""
    from pyspark.sql import functions as F

    rng = random.Random(17)
    chosen = rng.sample(range(args.users), args.active)
    users = spark.createDataFrame([(f"u{u:07d}",) for u in chosen], "user_id string")
    fresh = users.crossJoin(spark.range(args.n).withColumnRenamed("id", "r")).select(
        "user_id",
        (F.col("r") + 1).cast("int").alias("rank"),
        item_key((F.rand(21) * args.items).cast("long")).alias("item_id"),
        (F.lit(2.0) / (F.col("r") + 1)).alias("score"),
        F.lit("als").alias("source"),
        F.lit("8").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
        F.lit(None).cast("string").alias("because_item_id"),
    )
    before = service.get("/health")[1]["tables"]["recommendations"]
    probe = f"u{chosen[0]:07d}"
    merge_user_rows(spark, lake, fresh, users, skip_files_up_to=0)
    merged = time.time()
    commit = (
        lake.delta(spark, RECOMMENDATIONS)
        .history(1)
        .select("operation", F.col("timestamp").cast("double").alias("at"))
        .first()
    )
    assert commit is not None
    committed = commit["at"]  # epoch seconds, whatever the driver's time zone
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = service.get(f"/v1/users/{probe}/recommendations")[1]
        if body["model_version"] == "8":
            break
        time.sleep(0.01)
    visible = time.time()
    after = service.get("/health")[1]["tables"]["recommendations"]
    return {
        "operation": commit["operation"],
        "users": args.active,
        "merge_returned_after_commit_s": round(merged - committed, 3),
        "visible_after_commit_s": round(visible - committed, 3),
        "apply_seconds": after["last_reload"]["seconds"],
        "kind": after["last_reload"]["kind"],
        "full_reloads": [before["reloads"]["full"], after["reloads"]["full"]],
        "incremental_reloads": [before["reloads"]["incremental"], after["reloads"]["incremental"]],
    }


def impression_cost(config: Config, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same load with the impression log on, then off: server CPU per request, each run on
    a fresh service (the aim: logging costs at most 10% of the throughput a core gives)."""
    found: dict[str, Any] = {}
    for enabled in (True, False):
        setting = "on" if enabled else "off"
        configured = config.with_overrides([f"impressions.enabled={str(enabled).lower()}"])
        service = Service(configured, free_port(), root / f"api-impressions-{setting}.log")
        try:
            service.wait(lambda h: h["status"] == "ok", 900)
            load_test(service, args, args.warmup, seed=3)
            run = load_test(service, args, args.compare_seconds, seed=4)
            found[setting] = {
                "server_cpu_us_per_request": run["server_cpu_us_per_request"],
                "latency_ms": run["latency_ms"],
                "errors": run["errors"],
                "impressions": service.get("/health")[1]["impressions"],
            }
        finally:
            service.stop()
    on, off = found["on"]["server_cpu_us_per_request"], found["off"]["server_cpu_us_per_request"]
    found["cpu_share_of_logging"] = round((on - off) / on, 3)
    return found


def git_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--root", default="/tmp/recspark-bench-api")
    parser.add_argument("--reuse", action="store_true", help="keep the lake of an earlier run at --root")
    parser.add_argument(
        "--no-refresh", action="store_true", help="with --reuse: no Spark at all, load and load test only"
    )
    parser.add_argument(
        "--compare-seconds",
        type=float,
        default=30,
        help="then the same load this long with impressions on and off (0: skip)",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    root = Path(args.root)
    if not args.reuse:
        shutil.rmtree(root, ignore_errors=True)
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    config = load_config(
        None,
        [
            "spark.shuffle_partitions=8",
            "spark.conf.spark.databricks.delta.snapshotPartitions=2",
            "spark.driver_memory=6g",
            f"lake.root={root / 'lake'}",
            f"catalog.path={root / 'incoming' / 'catalog.jsonl'}",
            f"serve.top_n={args.n}",
            "api.poll_seconds=1",
            f"ingest.path={root / 'impressions'}",
        ],
    )
    if args.no_refresh and not args.reuse:
        parser.error("--no-refresh needs --reuse (the lake is written by Spark)")
    spark = None if args.no_refresh else build_spark(config, "bench-api")
    lake = Lake.at(config.lake.root)
    figures: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "machine": f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}",
        "users": args.users,
        "items": args.items,
        "n": args.n,
    }
    if not args.reuse:
        started = time.time()
        write_lake(spark, config, lake, args.users, args.items, args.n)
        figures["lake_written_s"] = round(time.time() - started, 1)
        print(f"lake written in {figures['lake_written_s']} s", flush=True)

    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    idle = Service(config.with_overrides([f"lake.root={empty}"]), free_port(), root / "idle.log")
    idle.wait(lambda h: True, 60)
    time.sleep(2)
    figures["idle_rss_mb"] = round(idle.rss() / 2**20, 1)
    idle.stop()

    service = Service(config, free_port(), root / "api.log")
    try:
        started = time.time()
        health = service.wait(lambda h: h["status"] == "ok", 900)
        table = health["tables"]["recommendations"]
        figures["load"] = {
            "ready_s": round(time.time() - started, 1),
            "full_load_s": table["last_reload"]["seconds"],
            "rows": table["rows"],
            "users": table["keys"],
            "array_mb": round(table["bytes"] / 2**20, 1),
            "rss_mb": round(service.rss() / 2**20, 1),
            "rss_over_idle_mb": round(service.rss() / 2**20 - figures["idle_rss_mb"], 1),
            "peak_rss_mb": round(service.peak_rss() / 2**20, 1),
        }
        print("loaded:", json.dumps(figures["load"]), flush=True)
        load_test(service, args, args.warmup, seed=1)
        figures["load_test"] = load_test(service, args, args.seconds, seed=2)
        print("load test:", json.dumps(figures["load_test"]), flush=True)
        if spark is not None:
            figures["refresh"] = refresh(spark, lake, service, args)
            print("refresh:", json.dumps(figures["refresh"]), flush=True)
        figures["after_refresh_rss_mb"] = round(service.rss() / 2**20, 1)
        figures["impressions"] = service.get("/health")[1]["impressions"]
    finally:
        service.stop()
    if args.compare_seconds > 0:
        figures["impression_cost"] = impression_cost(config, root, args)
        print("impression cost:", json.dumps(figures["impression_cost"]), flush=True)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

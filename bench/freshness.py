"""Benchmark: from an event file landing to the buyer's changed list, with both streams running.

    .venv/bin/python bench/freshness.py --events 10

A generated shop (``--users``, ``--items``, ``--shop-events`` over ``--days``) goes through
`recspark ingest --once`, `train` (ALS at its configured settings: the model is not under test
here) and `recommend`. Then `recspark ingest` and `recspark refresh` start as two long-running
processes, as a deployment runs them, with the default 5-second triggers and the quality gates
on. One warm-up purchase waits for both streams to be up; then, one at a time, ``--events``
purchases by different users land (written under a temporary name, renamed into the folder),
and each is timed from its rename to the moment the buyer's rows in ``recommendations`` carry
a newer ``generated_at``. The bench itself reads the serving table with delta-rs' DataFusion
``QueryBuilder`` (no third JVM competing for the cores). Prints the median and the worst
latency, and the steady-state batch times (after the warm-up event) of both streams.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

ROOT = Path(__file__).resolve().parents[1]
RECSPARK = Path(sys.executable).parent / "recspark"


def settings(root: Path) -> list[str]:
    values = [
        f"lake.root={root / 'lake'}",
        f"ingest.path={root / 'incoming' / 'events'}",
        f"catalog.path={root / 'incoming' / 'catalog.jsonl'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_location={root / 'mlartifacts'}",
        "train.families=[als]",
        "tune.auto=false",
    ]
    return ["--conf", str(ROOT / "conf" / "local.yaml"), *(a for v in values for a in ("--set", v))]


def run(root: Path, *command: str) -> None:
    began = time.time()
    with open(root / "setup.log", "a") as log:
        subprocess.run([str(RECSPARK), *command, *settings(root)], stdout=log, stderr=log, check=True)
    print(f"setup: recspark {command[0]} in {time.time() - began:.0f} s", flush=True)


def newest_list_time(lake: Path, user: str) -> datetime | None:
    table = DeltaTable(str(lake / "recommendations"))
    query = f"SELECT max(generated_at) AS t FROM r WHERE user_id = '{user}'"
    value = QueryBuilder().register("r", table).execute(query).read_all().column("t")[0].as_py()
    return None if value is None else value.replace(tzinfo=timezone.utc)


def land(folder: Path, name: str, user: str, item: str) -> float:
    """One purchase, written under a temporary name and renamed in; returns the rename time."""
    record = {
        "event_id": f"fresh-{name}",
        "event_time": (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user_id": user,
        "item_id": item,
        "event_type": "purchase",
        "value": 1,
    }
    partial = folder / f".{name}.tmp"
    partial.write_text(json.dumps(record) + "\n")
    landed = time.time()
    partial.rename(folder / f"{name}.jsonl")
    return landed


def wait_for_new_list(lake: Path, user: str, after: float, timeout: float) -> float:
    """Seconds from ``after`` until ``user``'s list is newer than it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        newest = newest_list_time(lake, user)
        if newest is not None and newest.timestamp() > after:
            return time.time() - after
        time.sleep(0.25)
    raise TimeoutError(f"{user}'s list did not change within {timeout:.0f} s")


def users_and_items(lake: Path, count: int) -> tuple[list[str], list[str]]:
    recommendations = DeltaTable(str(lake / "recommendations"))
    users = (
        QueryBuilder()
        .register("r", recommendations)
        .execute(f"SELECT DISTINCT user_id FROM r ORDER BY user_id LIMIT {count}")
    )
    items = (
        QueryBuilder()
        .register("r", recommendations)
        .execute("SELECT item_id FROM r GROUP BY item_id ORDER BY count(*) DESC LIMIT 5")
    )
    return (
        [str(u) for u in users.read_all().column("user_id").to_pylist()],
        [str(i) for i in items.read_all().column("item_id").to_pylist()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--shop-events", type=int, default=60_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one list")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="recspark-freshness-"))
    root.mkdir(parents=True, exist_ok=True)
    sizes = ["--users", str(args.users), "--items", str(args.items), "--events", str(args.shop_events)]
    run(root, "generate", *sizes, "--days", str(args.days))
    for step in (("ingest", "--once"), ("train",), ("recommend",)):
        run(root, *step)

    lake, folder = root / "lake", root / "incoming" / "events"
    users, items = users_and_items(lake, args.events + 1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    streams = [
        subprocess.Popen(
            [str(RECSPARK), job, *settings(root)],
            stdout=open(root / f"{job}.log", "w"),  # noqa: SIM115 (closed with the process)
            stderr=subprocess.STDOUT,
            env=env,
        )
        for job in ("ingest", "refresh")
    ]
    latencies: list[float] = []
    try:
        began = land(folder, "warm-up", users[0], items[0])
        print(
            f"warm-up (both streams starting): {wait_for_new_list(lake, users[0], began, args.timeout):.1f} s"
        )
        for k, user in enumerate(users[1:]):
            landed = land(folder, f"event-{k:02d}", user, items[k % len(items)])
            latencies.append(wait_for_new_list(lake, user, landed, args.timeout))
            print(
                f"event {k + 1}: {user}'s list changed {latencies[-1]:.1f} s after its file landed",
                flush=True,
            )
    finally:
        for stream in streams:
            stream.terminate()
        for stream in streams:
            try:
                stream.wait(timeout=120)
            except subprocess.TimeoutExpired:
                stream.kill()

    metrics = (
        QueryBuilder()
        .register("m", DeltaTable(str(lake / "ingest_metrics")))
        .execute("SELECT duration_seconds FROM m WHERE input_rows = 1 ORDER BY started_at")
    )
    batches = pa.table(metrics.read_all()).column("duration_seconds").to_pylist()[1:]  # after warm-up
    refresh_log = (root / "refresh.log").read_text()
    one_user = r"refresh batch \d+: 1 users refreshed .* in ([\d.]+)s"
    refreshes = [float(seconds) for seconds in re.findall(one_user, refresh_log)][1:]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"date {datetime.now():%Y-%m-%d}"
    )
    print(f"shop: {args.users} users, {args.items} items, {args.shop_events} events; logs under {root}")
    print(
        f"landing to changed list over {len(latencies)} events: median {statistics.median(latencies):.1f} s, "
        f"worst {max(latencies):.1f} s, best {min(latencies):.1f} s"
    )
    if batches:
        median, worst = statistics.median(batches), max(batches)
        print(f"ingest batches of one event: median {median:.1f} s, worst {worst:.1f} s")
    if refreshes:
        median, worst = statistics.median(refreshes), max(refreshes)
        print(f"refresh batches of one user: median {median:.1f} s, worst {worst:.1f} s")


if __name__ == "__main__":
    main()

"""The jobs on a real Spark cluster: a standalone master and one worker (deploy/standalone.sh,
from pyspark's own jars, bound to 127.0.0.1), the jobs submitted by cron's daily chain and by
deploy/submit.sh with the --py-files zip. The driver and the executors are separate JVMs, as on
any cluster, so closures, shipped code, broadcasts and absolute paths are exercised for real.

The driver and the executors run a Python that sees this virtualenv's third-party packages
but not its recspark (installed editable, so it would shadow a broken zip): every job can only
work through the code deploy/submit.sh ships, as on a cluster whose image has recspark's
dependencies and nothing of recspark itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from tests.entrypoints.test_deploy import (
    DAILY,
    DAILY_TIMEOUT,
    ROOT,
    RUN_LOCKED,
    SUBMIT,
    clean_env,
    generate_tiny_shop,
    locked_env,
    needs_spark_submit,
    write_config,
)

pytestmark = pytest.mark.cluster

STANDALONE = ROOT / "deploy" / "standalone.sh"
# Small and quick: the cluster is under test here, not the search or the gates.
FAST = ("train.min_train_interactions=10", "train.rank=4", "train.max_iter=3", "tune.auto=false")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running standalone cluster (master URL, state directory), stopped at the end even when
    a test fails."""
    needs_spark_submit()
    state = tmp_path_factory.mktemp("cluster")
    try:
        started = subprocess.run(
            [str(STANDALONE), "start", str(state)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield started.stdout.strip().splitlines()[-1], state
    finally:
        subprocess.run([str(STANDALONE), "stop", str(state)], env=clean_env(), timeout=120, check=False)


@pytest.fixture(scope="module")
def python_without_recspark(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A throwaway virtualenv whose only addition is a .pth line naming this virtualenv's
    site-packages: a plain path line adds the directory, but its own .pth files (the editable
    install's finder among them) are not processed, so recspark cannot be imported."""
    venv = tmp_path_factory.mktemp("python-without-recspark")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return str(python)


def test_the_cluster_python_has_the_dependencies_but_not_recspark(
    python_without_recspark: str, tmp_path: Path
) -> None:
    """The jobs below can only work through deploy/submit.sh's zip: the Python their driver and
    executors run imports recspark's dependencies, and no recspark (this virtualenv's editable
    install would import the checkout it points at, whatever the zip holds)."""
    probe = "import numpy, pandas, pyarrow, pyspark, mlflow, yaml, great_expectations"
    deps = subprocess.run(
        [python_without_recspark, "-c", probe],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deps.returncode == 0, deps.stderr[-3000:]
    lost = subprocess.run(
        [python_without_recspark, "-c", "import recspark; print(recspark.__file__)"],
        cwd=tmp_path,
        env=clean_env(),  # what the jobs see: no PYTHONPATH
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lost.returncode != 0, f"the cluster's Python imports recspark from {lost.stdout.strip()}"
    assert "No module named 'recspark'" in lost.stderr, lost.stderr


def cluster_env(tmp_path: Path, master: str, python: str) -> dict[str, str]:
    return locked_env(
        tmp_path,
        SPARK_MASTER=master,
        SPARK_LOCAL_IP="127.0.0.1",  # the driver binds to loopback too
        PYSPARK_PYTHON=python,  # the executors'
        PYSPARK_DRIVER_PYTHON=python,
        RECSPARK_TIMEOUT=str(DAILY_TIMEOUT),
    )


def submit(tmp_path: Path, master: str, python: str, job: str, conf: Path, *args: str) -> str:
    done = subprocess.run(
        [str(SUBMIT), job, "--conf", str(conf), *args, *(a for s in FAST for a in ("--set", s))],
        cwd=tmp_path,
        env=cluster_env(tmp_path, master, python),
        capture_output=True,
        text=True,
        timeout=DAILY_TIMEOUT,
    )
    assert done.returncode == 0, f"{job}: exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout + done.stderr  # the job's log lines reach stdout under spark-submit


def land(folder: Path, name: str, records: list[dict]) -> None:
    """The producer contract: write under a temporary name, then rename into the folder."""
    partial = folder / f".{name}.tmp"
    partial.write_text("".join(json.dumps(r) + "\n" for r in records))
    partial.rename(folder / name)


def test_cron_daily_then_an_incremental_refresh_run_on_a_standalone_cluster(
    tmp_path: Path, spark: SparkSession, cluster: tuple[str, Path], python_without_recspark: str
) -> None:
    master, state = cluster
    python = python_without_recspark
    conf = write_config(tmp_path, catalog=True)
    generate_tiny_shop(tmp_path, conf)

    # cron's daily chain: ingest, train (which promotes the first model), full refresh.
    started = time.monotonic()
    daily = subprocess.run(
        [
            str(RUN_LOCKED),
            "daily",
            "--",
            str(DAILY),
            str(conf),
            *(a for s in (*FAST, "quality.enabled=false") for a in ("--set", s)),
        ],
        cwd=tmp_path,
        # run-locked.sh's own timeout kills the whole chain (a job that, say, forgot --once
        # and kept streaming) rather than leave JVMs behind a pytest timeout.
        env=cluster_env(tmp_path, master, python),
        capture_output=True,
        text=True,
        timeout=DAILY_TIMEOUT + 120,
    )
    print(f"daily.sh: exit {daily.returncode} in {time.monotonic() - started:.0f}s")
    logs = tmp_path / "logs"
    all_logs = "\n".join(f"== {p.name}\n{p.read_text()[-4000:]}" for p in sorted(logs.glob("*.log")))
    assert daily.returncode == 0, daily.stderr + all_logs
    for name in ("daily", "ingest_events", "refresh_recommendations"):  # the lock (log) names
        assert "end: exit 0" in (logs / f"{name}.log").read_text(), all_logs
    daily_log = (logs / "daily.log").read_text()
    assert "model version" in daily_log  # train's last line
    assert "daily: done" in daily_log

    lake = tmp_path / "lake"
    events = spark.read.format("delta").load(str(lake / "events"))
    assert events.count() == events.select("event_id").distinct().count() > 0
    recs = spark.read.format("delta").load(str(lake / "recommendations"))
    per_user = {r["count"] for r in recs.groupBy("user_id").count().collect()}
    assert len(per_user) == 1, f"every user should get the same number of rows: {per_user}"
    users = recs.select("user_id").distinct().count()
    assert users > 0 and recs.where(F.col("model_version").isNull()).count() == 0
    published = recs.agg(F.max("generated_at")).first()[0]

    # Fresh activity of three users, then the 15-minute jobs: ingest, incremental refresh.
    active = sorted(r["user_id"] for r in recs.select("user_id").distinct().limit(3).collect())
    items = [r["item_id"] for r in events.select("item_id").distinct().limit(2).collect()]
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    land(
        tmp_path / "incoming" / "events",
        "fresh.jsonl",
        [
            {
                "event_id": f"fresh-{user}-{item}",
                "event_time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "user_id": user,
                "item_id": item,
                "event_type": "purchase",
                "value": 1,
            }
            for user in active
            for item in items
        ],
    )
    ingest = submit(tmp_path, master, python, "ingest", conf, "--once")
    refresh = submit(tmp_path, master, python, "refresh", conf, "--once")

    recs = spark.read.format("delta").load(str(lake / "recommendations"))
    refreshed = sorted(
        r["user_id"]
        for r in recs.where(F.col("generated_at") > published).select("user_id").distinct().collect()
    )
    assert refreshed == active
    assert recs.select("user_id").distinct().count() == users
    gates = spark.read.format("delta").load(str(lake / "quality_results"))
    assert {(r["job"], r["rows_validated"]) for r in gates.where("table_name = 'events'").collect()} == {
        ("ingest", len(active) * len(items))
    }

    # The scheduled whole-table check runs on the cluster too (after the gates above: its own
    # results are recorded in quality_results as well).
    check = submit(tmp_path, master, python, "check", conf)
    assert "quality suite 'recommendations' passed on table recommendations" in check

    # Every job ran against the cluster, with executors in the worker's JVMs.
    whole_logs = "\n".join(p.read_text() for p in logs.glob("*.log")) + ingest + refresh + check
    sessions = re.findall(r"spark session \S+ ready \(master=(\S+)\)", whole_logs)
    assert len(sessions) >= 6 and set(sessions) == {master}, sessions
    applications = sorted((state / "work").glob("app-*"))
    assert len(applications) >= 6, applications
    assert all(list(app.glob("*/stderr")) for app in applications)

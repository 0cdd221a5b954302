"""deploy/: the spark-submit wrapper, the cron lock wrapper, the Airflow DAGs, real submissions.

The Airflow test builds (once, then reuses) a separate virtualenv from
deploy/airflow/requirements.txt, outside the repository, keyed by the file's hash:
``~/.cache/recspark/airflow-venv-<hash>`` (or ``$RECSPARK_AIRFLOW_VENV``). Without network it
is skipped with the reason. The spark-submit tests run the real ``deploy/submit.sh`` against
a tiny lake in tmp_path; each submission starts its own JVM, so there are only a few. One test
runs a real Airflow scheduler (with its dag-processor and execution API, on 127.0.0.1, for a
bounded time) so the daily DAG's trigger of the refresh DAG really runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recspark.core.secrets import log4j2_properties
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "deploy" / "submit.sh"
BUILD_ZIP = ROOT / "deploy" / "build-zip.sh"
RUN_LOCKED = ROOT / "deploy" / "cron" / "run-locked.sh"
DAILY = ROOT / "deploy" / "cron" / "daily.sh"
CRONTAB = ROOT / "deploy" / "cron" / "recspark.crontab"
DAG_FOLDER = ROOT / "deploy" / "airflow"
REQUIREMENTS = DAG_FOLDER / "requirements.txt"
RUN = ROOT / "jobs" / "run.py"
VENV_BIN = Path(sys.executable).parent
DAILY_TIMEOUT = 1800
SCHEDULER_TIMEOUT = 1200  # seconds for the daily DAG run and the refresh it triggers


def submitted_jobs() -> list[str]:
    """The jobs spark-submit runs, as deploy/submit.sh reads them from the registry."""
    done = subprocess.run(
        [sys.executable, "-m", "recspark.jobs", "--names"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def expected_packages(kafka: bool) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "recspark.packages", *(["--kafka"] if kafka else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ",".join(out.split())


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECSPARK_", "SPARK_", "PYSPARK_", "AIRFLOW"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------- run-locked.sh


def locked_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        RECSPARK_LOCK_DIR=str(tmp_path / "locks"), RECSPARK_LOG_DIR=str(tmp_path / "logs"), **extra
    )


def wait_for(path: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_run_locked_skips_an_overlapping_run_and_releases_the_lock(tmp_path: Path) -> None:
    env = locked_env(tmp_path)
    started = tmp_path / "started"
    first = subprocess.Popen(
        [str(RUN_LOCKED), "job", "--", "bash", "-c", f"touch {started}; sleep 3; echo first-done"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(started)
        t0 = time.monotonic()
        second = subprocess.run(
            [str(RUN_LOCKED), "job", "--", "bash", "-c", "echo second-ran"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - t0
        assert second.returncode == 0, second.stderr
        assert "locked" in second.stderr
        assert elapsed < 2, f"the second run waited {elapsed:.1f}s instead of exiting at once"
        assert first.poll() is None, "the first run should still be going"
    finally:
        _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err

    log = (tmp_path / "logs" / "job.log").read_text()
    assert "first-done" in log
    assert "second-ran" not in log
    assert "skipping" in log
    assert "end: exit 0" in log

    # The lock is free again: the next run runs.
    third = subprocess.run(
        [str(RUN_LOCKED), "job", "--", "bash", "-c", "echo third-ran"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert third.returncode == 0, third.stderr
    assert "third-ran" in (tmp_path / "logs" / "job.log").read_text()


def test_run_locked_keeps_the_exit_code_and_separates_jobs(tmp_path: Path) -> None:
    env = locked_env(tmp_path)
    failed = subprocess.run(
        [str(RUN_LOCKED), "a", "--", "bash", "-c", "echo oops >&2; exit 3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode == 3
    assert "oops" in (tmp_path / "logs" / "a.log").read_text()
    assert "end: exit 3" in (tmp_path / "logs" / "a.log").read_text()

    # Holding lock "a" does not block job "b"; waiting mode gives up with 75 after the wait.
    lock = tmp_path / "locks" / "a.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        other = subprocess.run([str(RUN_LOCKED), "b", "--", "true"], env=env, capture_output=True, timeout=30)
        assert other.returncode == 0
        waited = subprocess.run(
            [str(RUN_LOCKED), "a", "--", "true"],
            env={**env, "RECSPARK_LOCK_WAIT": "1"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert waited.returncode == 75, waited.stderr
        assert "giving up" in waited.stderr

    for bad in ([], ["a"], ["a", "true"], ["../x", "--", "true"]):
        usage = subprocess.run([str(RUN_LOCKED), *bad], env=env, capture_output=True, text=True, timeout=30)
        assert usage.returncode == 2, bad


def test_crontab_lines_use_the_lock_wrapper_and_existing_scripts() -> None:
    lines = [
        line
        for line in CRONTAB.read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 5
    for line in lines:
        fields = line.split()
        assert len(fields[:5]) == 5
        command = fields[5:]
        assert command[0] == "$RECSPARK_HOME/deploy/cron/run-locked.sh"
        assert command[2] == "--"
        assert "%" not in line
    # The lock (and log) names are the ones operators' installed crontabs and daily.sh share.
    locks = {line.split()[6] for line in lines}
    assert locks == {"ingest_events", "refresh_recommendations", "daily", "maintenance", "quality"}
    for script in (SUBMIT, BUILD_ZIP, RUN_LOCKED, DAILY):
        assert os.access(script, os.X_OK), script
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_every_scheduled_job_runs_on_spark_through_submit_sh() -> None:
    """No job starts a Spark of its own on the scheduler's host: cron's lines and daily.sh hand
    every job to deploy/submit.sh (the cluster), under its registry name, with what the
    registry says a scheduled run adds (``--once`` for the streams)."""
    registry = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from recspark.jobs import JOBS; "
            "print(json.dumps({n: list(j.scheduled_args) for n, j in JOBS.items() if j.submit}))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    scheduled_args = json.loads(registry.stdout)
    submissions = []
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        command = line.split()[8:]  # after the schedule, run-locked.sh LOCK --
        assert command[0] in ("$RECSPARK_HOME/deploy/submit.sh", "$RECSPARK_HOME/deploy/cron/daily.sh"), line
        if command[0].endswith("submit.sh"):
            submissions.append(command[1:])
    daily = [
        shlex.split(line.split('"$SUBMIT"', 1)[1])
        for line in DAILY.read_text().splitlines()
        if '"$SUBMIT"' in line and not line.lstrip().startswith("#")
    ]
    assert [args[0] for args in daily] == ["ingest", "train", "refresh"]
    assert sorted(args[0] for args in submissions) == ["check", "ingest", "maintain", "refresh"]
    for args in submissions + daily:
        assert args[0] in scheduled_args, args
        for flag in scheduled_args[args[0]]:
            assert flag in args, args


# --------------------------------------------------------------------------- submit.sh


def test_build_zip_is_the_recspark_package_and_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "out" / "recspark.zip"
    printed = subprocess.run(
        [str(BUILD_ZIP), str(out)], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == str(out)
    first = out.read_bytes()
    names = set(zipfile.ZipFile(out).namelist())
    sources = {
        str(p.relative_to(ROOT)) for p in (ROOT / "recspark").rglob("*.py") if "__pycache__" not in p.parts
    }
    assert sources <= names
    assert "recspark/__init__.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    inode = out.stat().st_ino
    subprocess.run([str(BUILD_ZIP), str(out)], capture_output=True, check=True)
    assert out.read_bytes() == first
    assert out.stat().st_ino == inode, "an unchanged zip must not be replaced"


def dry_run(cwd: Path, *args: str, **env: str) -> list[str]:
    done = subprocess.run(
        [str(SUBMIT), *args],
        cwd=cwd,
        env=clean_env(RECSPARK_DRY_RUN="1", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def test_submit_builds_the_command_from_one_place(tmp_path: Path) -> None:
    files_conf = tmp_path / "files.yaml"
    files_conf.write_text("ingest:\n  source: files\n")
    cmd = dry_run(tmp_path, "ingest", "--conf", str(files_conf), "--once")
    assert cmd[0] == str(ROOT / ".venv" / "bin" / "spark-submit")
    assert cmd[cmd.index("--packages") + 1] == expected_packages(kafka=False)
    zip_path = Path(cmd[cmd.index("--py-files") + 1])
    assert zip_path == ROOT / "build" / "recspark.zip"
    assert "recspark/cli.py" in zipfile.ZipFile(zip_path).namelist()
    assert cmd[cmd.index("--master") + 1] == "local[2]"  # the config's spark.master (its default)
    assert "--archives" not in cmd
    assert not any(c.startswith("spark.pyspark.python") for c in cmd)
    assert cmd[-5:] == [str(RUN), "ingest", "--conf", str(files_conf), "--once"]

    kafka_conf = tmp_path / "kafka.yaml"
    kafka_conf.write_text(
        "spark:\n  master: local[1]\n"
        "ingest:\n  source: kafka\n  kafka:\n    bootstrap_servers: k:9092\n    topic: t\n"
    )
    cmd = dry_run(
        tmp_path,
        "train",
        "--conf",
        str(kafka_conf),
        "--set",
        "train.rank=4",
        SPARK_MASTER="local[2]",
        PYSPARK_PYTHON="./environment/bin/python",
        RECSPARK_ARCHIVES="env.tar.gz#environment",
        RECSPARK_SUBMIT_OPTS="--driver-memory 2g",
        SPARK_HOME="/opt/spark",
    )
    assert cmd[0] == "/opt/spark/bin/spark-submit"
    assert cmd[cmd.index("--packages") + 1] == expected_packages(kafka=True)
    assert cmd[cmd.index("--master") + 1] == "local[2]"  # SPARK_MASTER wins over the config
    assert cmd.count("--master") == 1
    assert "spark.pyspark.python=./environment/bin/python" in cmd
    assert cmd[cmd.index("--archives") + 1] == "env.tar.gz#environment"
    assert cmd[cmd.index("--driver-memory") + 1] == "2g"
    assert cmd[-6:] == [str(RUN), "train", "--conf", str(kafka_conf), "--set", "train.rank=4"]

    # The same config with Kafka turned off by an override, and the forcing switch.
    cmd = dry_run(tmp_path, "train", "--conf", str(kafka_conf), "--set", "ingest.source=files")
    assert cmd[cmd.index("--packages") + 1] == expected_packages(kafka=False)
    cmd = dry_run(tmp_path, "train", "--conf", str(files_conf), RECSPARK_KAFKA="1")
    assert cmd[cmd.index("--packages") + 1] == expected_packages(kafka=True)

    # A config without a master (conf/cluster.yaml) leaves it to spark-defaults.conf.
    cmd = dry_run(tmp_path, "train", "--conf", str(files_conf), "--set", "spark.master=null")
    assert "--master" not in cmd

    # maintain and check go to the cluster like every other job.
    for job in ("maintain", "check"):
        cmd = dry_run(tmp_path, job, "--conf", str(files_conf))
        assert cmd[-4:] == [str(RUN), job, "--conf", str(files_conf)]


def test_submit_prints_no_credentials(tmp_path: Path) -> None:
    """The command it prints, and everything spark-submit and the JVM print, pass through the
    redaction recspark uses everywhere: user-info and ``?token=`` style secrets alike."""
    conf = tmp_path / "files.yaml"
    conf.write_text("ingest:\n  source: files\n")
    uri = "http://bob:s3cret@tracker:5000/?token=t0psekrit"
    secret = ["--conf", str(conf), "--set", f"mlflow.tracking_uri={uri}"]

    cmd = dry_run(tmp_path, "train", *secret)
    assert cmd[-1] == "mlflow.tracking_uri=http://***@tracker:5000/?token=***"
    assert not any("s3cret" in c or "t0psekrit" in c for c in cmd)

    # A real submission, to a stand-in spark-submit that prints what a failing JVM would (its
    # arguments and a log line quoting the URI, on stdout and stderr) and fails.
    fake = tmp_path / "spark" / "bin" / "spark-submit"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "#!/bin/sh\n"
        'echo "args: $*"\n'
        'echo "log4j2: $LOG4J_CONFIGURATION_FILE"\n'
        f'echo "ERROR MicroBatchExecution: cannot reach {uri}" >&2\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    done = subprocess.run(
        [str(SUBMIT), "train", *secret],
        cwd=tmp_path,
        env=clean_env(SPARK_HOME=str(tmp_path / "spark")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    for text in (done.stdout, done.stderr):
        assert "s3cret" not in text and "t0psekrit" not in text
    assert "deploy/submit.sh: " in done.stderr and "http://***@tracker:5000/?token=***" in done.stderr
    assert "ERROR MicroBatchExecution: cannot reach http://***@tracker:5000/?token=***" in done.stderr
    assert "mlflow.tracking_uri=http://***@tracker:5000/?token=***" in done.stdout

    # The driver JVM logs through the redacting log4j2 configuration, named in the environment
    # spark-submit hands it (the session builder names it for the executors).
    log4j2 = Path(done.stdout.split("log4j2: ")[1].splitlines()[0])
    assert log4j2.read_text() == log4j2_properties()


def test_submit_validates_the_job_against_the_registry(tmp_path: Path) -> None:
    jobs = submitted_jobs()
    assert {"ingest", "train", "refresh", "recommend", "maintain", "check"} <= set(jobs)
    for args in ([], ["nope"], ["jobs/run.py"], ["demo"], ["generate"]):
        done = subprocess.run(
            [str(SUBMIT), *args], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
        )
        assert done.returncode == 2
        for job in jobs:
            assert f"  {job} " in done.stderr, job

    # The former names still submit the same job, and say what it is called now.
    done = subprocess.run(
        [str(SUBMIT), "train_als", "--conf", "c.yaml"],
        cwd=tmp_path,
        env=clean_env(RECSPARK_DRY_RUN="1"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout)[-3:] == ["train", "--conf", "c.yaml"]
    assert "job 'train_als' is now called 'train'" in done.stderr


# --------------------------------------------------------------------------- Airflow

DAG_REPORT = textwrap.dedent(
    """
    import inspect, json, sys
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from airflow.models import DagBag

    kwargs = {"include_examples": False}
    if "include_examples" not in inspect.signature(DagBag.__init__).parameters:
        kwargs = {}
    bag = DagBag(dag_folder=sys.argv[1], **kwargs)
    report = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag in bag.dags.values():
        tasks = {}
        for task in dag.tasks:
            info = {"type": type(task).__name__, "upstream": sorted(task.upstream_task_ids)}
            info["retries"] = task.retries
            if task.execution_timeout is not None:
                info["execution_timeout_s"] = task.execution_timeout.total_seconds()
            for attr in ("application", "py_files", "packages", "application_args",
                         "bash_command", "_conn_id", "mode", "timeout", "trigger_dag_id",
                         "wait_for_completion"):
                if hasattr(task, attr):
                    info[attr.lstrip("_")] = getattr(task, attr)
            tasks[task.task_id] = info
        timetable = dag.timetable
        report["dags"][dag.dag_id] = {
            "schedule": getattr(timetable, "_expression", None) or str(dag.schedule),
            "max_active_runs": dag.max_active_runs,
            "catchup": dag.catchup,
            "tasks": tasks,
        }
    sensor = bag.dags["recspark_daily"].get_task("wait_for_ingest").python_callable
    calls = []

    class FakeTI:
        def __init__(self, count):
            self.count = count

        def get_ti_count(self, **query):
            calls.append(query)
            return self.count

    run = SimpleNamespace(run_after=datetime(2026, 11, 2, 3, 0, tzinfo=timezone.utc),
                          logical_date=None)
    report["sensor"] = [sensor(ti=FakeTI(0), dag_run=run), sensor(ti=FakeTI(1), dag_run=run)]
    report["sensor_query"] = {**calls[0],
                              "logical_dates": [d.isoformat() for d in calls[0]["logical_dates"]]}
    report["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("recspark", "pyspark"))
    print("REPORT " + json.dumps(report, default=str))
    """
)


def airflow_venv() -> Path:
    """The Airflow virtualenv, created on first use (under a lock) and cached by content."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    default = Path.home() / ".cache" / "recspark" / f"airflow-venv-{digest}"
    venv = Path(os.environ.get("RECSPARK_AIRFLOW_VENV", default))
    marker = venv / ".recspark-complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        steps = (
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        )
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            except subprocess.TimeoutExpired:
                pytest.skip(f"creating the Airflow virtualenv timed out: {' '.join(step)}")
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                reason = (done.stdout + done.stderr).strip().splitlines()[-5:]
                pytest.skip("cannot create the Airflow virtualenv: " + " | ".join(reason))
        marker.write_text(f"created in {time.monotonic() - started:.0f}s\n")
        print(f"Airflow virtualenv {venv} created in {time.monotonic() - started:.0f}s")
    return venv


def airflow_home_env(home: Path, variables: dict[str, str], **extra: str) -> dict[str, str]:
    """An Airflow home of its own with this checkout's DAGs and ``variables`` as Airflow
    Variables (``AIRFLOW_VAR_<NAME>``)."""
    return clean_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FOLDER),
        **{f"AIRFLOW_VAR_{k.upper()}": v for k, v in variables.items()},
        **extra,
    )


def dag_report(venv: Path, home: Path, **variables: str) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_home_env(home, variables)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", DAG_REPORT, str(DAG_FOLDER)],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT ") :])


@pytest.mark.airflow
def test_airflow_dags_load_with_the_intended_shape(tmp_path: Path) -> None:
    venv = airflow_venv()
    # Neither recspark nor a Spark with a JVM is installed where the DAGs are parsed.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import recspark"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
    )
    assert probe.returncode != 0, "recspark must not be importable in the Airflow virtualenv"

    report = dag_report(venv, tmp_path / "home1")
    assert report["import_errors"] == {}
    assert report["modules"] == []
    dags = report["dags"]
    assert set(dags) == {
        "recspark_ingest",
        "recspark_daily",
        "recspark_refresh",
        "recspark_maintenance",
        "recspark_quality",
    }

    conf = str(ROOT / "conf" / "cluster.yaml")  # the default; it reads from Kafka
    packages = expected_packages(kafka=True)
    zip_path = str(ROOT / "build" / "recspark.zip")

    def spark_task(dag: str, task: str, *args: str) -> dict:
        """A task running job ``task`` with spark-submit, as the registry names it."""
        info = dags[dag]["tasks"][task]
        assert info["type"] == "SparkSubmitOperator"
        assert info["application"] == str(RUN)
        assert info["py_files"] == zip_path
        assert info["packages"] == packages
        assert info["conn_id"] == "spark_default"
        assert info["application_args"] == [task, "--conf", conf, *args]
        return info

    ingest = dags["recspark_ingest"]
    assert ingest["schedule"] == "*/10 * * * *"
    assert ingest["max_active_runs"] == 1
    assert not ingest["catchup"]
    assert set(ingest["tasks"]) == {"ingest"}
    spark_task("recspark_ingest", "ingest", "--once")

    refresh = dags["recspark_refresh"]
    assert refresh["schedule"] == "*/15 * * * *"
    assert refresh["max_active_runs"] == 1
    assert set(refresh["tasks"]) == {"refresh"}
    spark_task("recspark_refresh", "refresh", "--once")

    daily = dags["recspark_daily"]
    assert daily["schedule"] == "0 3 * * *"
    assert set(daily["tasks"]) == {"wait_for_ingest", "train", "refresh"}
    sensor = daily["tasks"]["wait_for_ingest"]
    assert sensor["upstream"] == []
    assert sensor["mode"] == "reschedule"
    train = spark_task("recspark_daily", "train")
    assert train["upstream"] == ["wait_for_ingest"]
    assert train["retries"] == 2
    assert train["execution_timeout_s"] == 3 * 3600
    full = daily["tasks"]["refresh"]
    assert full["type"] == "TriggerDagRunOperator"
    assert full["trigger_dag_id"] == "recspark_refresh"
    assert full["wait_for_completion"] is True
    assert full["upstream"] == ["train"]

    # Maintenance and the whole-table checks run on the cluster too, not on the scheduler's host.
    maintenance = dags["recspark_maintenance"]
    assert maintenance["schedule"] == "0 4 * * 0"
    assert set(maintenance["tasks"]) == {"maintain"}
    spark_task("recspark_maintenance", "maintain")

    # Each job's gates see only the rows it wrote; the whole tables are checked daily.
    quality = dags["recspark_quality"]
    assert quality["schedule"] == "0 5 * * *"
    assert set(quality["tasks"]) == {"check"}
    spark_task("recspark_quality", "check")

    # Every task that runs a job is a registered job spark-submit can run.
    tasks = [t for d in dags.values() for t in d["tasks"].values() if t["type"] == "SparkSubmitOperator"]
    assert {t["application_args"][0] for t in tasks} <= set(submitted_jobs())

    # The sensor: succeeds once any ingest slot from an hour before the run on succeeded.
    assert report["sensor"] == [False, True]
    query = report["sensor_query"]
    assert query["dag_id"] == "recspark_ingest"
    assert query["task_ids"] == ["ingest"]
    assert query["states"] == ["success"]
    assert query["logical_dates"][0] == "2026-11-02T02:00:00+00:00"
    assert "2026-11-02T03:00:00+00:00" in query["logical_dates"]
    assert all(d[14:16] in ("00", "10", "20", "30", "40", "50") for d in query["logical_dates"])

    # Airflow Variables (here as AIRFLOW_VAR_* environment variables) change the settings.
    other_conf = str(ROOT / "conf" / "local.yaml")  # files, so no Kafka package
    report = dag_report(
        venv,
        tmp_path / "home2",
        recspark_conf=other_conf,
        recspark_ingest_every_minutes="5",
        recspark_spark_conn_id="spark_cluster",
        recspark_train_timeout_hours="1.5",
    )
    assert report["import_errors"] == {}
    dags = report["dags"]
    assert dags["recspark_ingest"]["schedule"] == "*/5 * * * *"
    train = dags["recspark_daily"]["tasks"]["train"]
    assert train["conn_id"] == "spark_cluster"
    assert train["application_args"] == ["train", "--conf", other_conf]
    assert train["packages"] == expected_packages(kafka=False)
    assert train["execution_timeout_s"] == 1.5 * 3600


# --------------------------------------------------------------------------- real spark-submit


def write_config(root: Path, catalog: bool = False) -> Path:
    conf = root / "conf.yaml"
    catalog_path = json.dumps(str(root / "incoming" / "catalog.jsonl")) if catalog else "null"
    conf.write_text(
        textwrap.dedent(
            f"""\
            spark:
              master: local[1]
              shuffle_partitions: 2
              driver_memory: null
            lake:
              root: {json.dumps(str(root / "lake"))}
            ingest:
              source: files
              path: {json.dumps(str(root / "incoming" / "events"))}
            catalog:
              path: {catalog_path}
            mlflow:
              tracking_uri: {json.dumps(f"sqlite:///{root / 'mlflow.db'}")}
              artifact_location: {json.dumps(str(root / "mlartifacts"))}
            """
        )
    )
    return conf


def generate_tiny_shop(root: Path, conf: Path) -> None:
    """A few thousand events for 60 users, written by ``recspark generate`` under ``root``."""
    generate = subprocess.run(
        [
            str(VENV_BIN / "recspark"),
            "generate",
            "--conf",
            str(conf),
            "--users",
            "60",
            "--items",
            "30",
            "--events",
            "2500",
            "--days",
            "20",
        ],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generate.returncode == 0, generate.stderr[-3000:]


def needs_spark_submit() -> None:
    if not (VENV_BIN / "spark-submit").is_file() or shutil.which("java") is None:
        pytest.skip("spark-submit or java is not available")


# --------------------------------------------------------------------------- Airflow runs the DAGs

# Small and quick: one family, no search, no Great Expectations runs (tested on their own); the
# schedule is under test here.
FAST_JOBS = """\
quality:
  enabled: false
train:
  families: [als]
  min_train_interactions: 10
  rank: 4
  max_iter: 3
tune:
  auto: false
"""


def airflow_env(home: Path, conf: Path, py_files: Path) -> dict[str, str]:
    """:func:`airflow_home_env` with the job config and code artifact as Variables, and
    ``spark_default`` submitting to local[2] with this venv's spark-submit (as a worker with
    pyspark installed would)."""
    variables = {
        "recspark_conf": str(conf),
        "recspark_py_files": str(py_files),
        "recspark_pyspark_python": sys.executable,
    }
    return airflow_home_env(
        home,
        variables,
        AIRFLOW_CONN_SPARK_DEFAULT=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def airflow(venv: Path, env: dict[str, str], *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(
        [str(venv / "bin" / "airflow"), *args],
        cwd=env["AIRFLOW_HOME"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"airflow {' '.join(args)}: exit {done.returncode} in {time.monotonic() - started:.0f}s")
    return done


def migrated_airflow(tmp_path: Path, conf: Path) -> tuple[Path, dict[str, str]]:
    needs_spark_submit()
    venv = airflow_venv()
    built = subprocess.run(
        [str(BUILD_ZIP), str(tmp_path / "recspark.zip")], check=True, capture_output=True, text=True
    )
    zip_path = Path(built.stdout.strip())
    home = tmp_path / "airflow"
    home.mkdir()
    env = airflow_env(home, conf, zip_path)
    migrate = airflow(venv, env, "db", "migrate", timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return venv, env


@contextmanager
def airflow_running(venv: Path, env: dict[str, str]) -> Iterator[dict[str, subprocess.Popen]]:
    """Airflow's scheduler, dag-processor and the API server's execution API (what task
    processes report to), on 127.0.0.1 for the body; each stopped with everything it started
    (its process group) at the end, even on failure. Logs: ``<AIRFLOW_HOME>/<component>.log``."""
    home = Path(env["AIRFLOW_HOME"])
    port = free_port()
    env = {
        **env,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),  # shared by the scheduler and API
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    }
    commands = {
        "api-server": ["api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        "scheduler": ["scheduler"],
        "dag-processor": ["dag-processor"],
    }
    running: dict[str, subprocess.Popen] = {}
    try:
        for name, args in commands.items():
            with (home / f"{name}.log").open("w") as log:
                running[name] = subprocess.Popen(
                    [str(venv / "bin" / "airflow"), *args],
                    cwd=home,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        yield running
    finally:
        for process in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what it started may outlive it
            process.wait(timeout=30)


def metastore_rows(home: Path, query: str, *params: str) -> list[sqlite3.Row]:
    """Rows of the Airflow metastore (SQLite, read-only while Airflow writes it)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=30)
    ) as db:
        db.row_factory = sqlite3.Row
        return db.execute(query, params).fetchall()


def task_logs(home: Path) -> str:
    """The end of every task's log, for a failure message."""
    return "".join(f"== {p}\n{p.read_text()[-3000:]}\n" for p in sorted((home / "logs").rglob("*.log")))


@pytest.mark.airflow
def test_the_scheduler_runs_the_daily_dag_and_the_refresh_run_it_triggers(tmp_path: Path, spark) -> None:
    """``dags test`` runs no scheduler, so it cannot run the refresh that the daily DAG's last
    task triggers and waits for. Here a real scheduler does: the daily run's sensor finds an
    ingest run, ``train`` promotes a model, ``refresh`` starts a run of ``recspark_refresh``,
    the scheduler runs it (after the refresh DAG's own scheduled run: one at a time), and the
    daily run succeeds only once that run has."""
    conf = write_config(tmp_path, catalog=True)
    conf.write_text(conf.read_text() + FAST_JOBS)
    generate_tiny_shop(tmp_path, conf)
    venv, env = migrated_airflow(tmp_path, conf)
    home = Path(env["AIRFLOW_HOME"])
    now = datetime.now(timezone.utc)
    ingest_slot = now.replace(minute=now.minute - now.minute % 10, second=0, microsecond=0)

    # An ingest run in the current slot: what the daily run's sensor waits for.
    ingest = airflow(venv, env, "dags", "test", "recspark_ingest", ingest_slot.isoformat())
    assert ingest.returncode == 0, ingest.stdout[-5000:] + ingest.stderr[-3000:]
    lake = tmp_path / "lake"
    assert spark.read.format("delta").load(str(lake / "events")).count() > 0

    # The daily DAG and the refresh DAG it triggers; every other DAG stays paused.
    for args in (
        ["dags", "reserialize"],
        ["dags", "unpause", "recspark_refresh"],
        ["dags", "unpause", "recspark_daily"],
    ):
        done = airflow(venv, env, *args, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    started = time.monotonic()
    with airflow_running(venv, env) as running:
        while True:
            runs = metastore_rows(home, "SELECT state FROM dag_run WHERE dag_id = 'recspark_daily'")
            if runs and runs[0]["state"] in ("success", "failed"):
                break
            dead = [name for name, process in running.items() if process.poll() is not None]
            logs = "".join((home / f"{n}.log").read_text()[-3000:] for n in running)
            assert not dead, f"{dead} exited:\n{logs}"
            assert time.monotonic() - started < SCHEDULER_TIMEOUT, (
                f"no daily run finished:\n{logs}{task_logs(home)}"
            )
            time.sleep(5)
    print(f"the daily run and its refresh under the scheduler: {time.monotonic() - started:.0f}s")

    tasks = {
        r["task_id"]: r
        for r in metastore_rows(
            home,
            "SELECT task_id, state, start_date, end_date FROM task_instance WHERE dag_id = 'recspark_daily'",
        )
    }
    assert {task: row["state"] for task, row in tasks.items()} == {
        "wait_for_ingest": "success",
        "train": "success",
        "refresh": "success",
    }, task_logs(home)
    assert runs[0]["state"] == "success"
    refreshes = metastore_rows(
        home,
        "SELECT run_type, state, start_date, end_date FROM dag_run WHERE dag_id = 'recspark_refresh' "
        "ORDER BY start_date",
    )
    # Airflow 3 records a TriggerDagRunOperator's run as "operator_triggered" (older: "manual").
    triggered = [r for r in refreshes if r["run_type"] in ("operator_triggered", "manual")]
    assert len(triggered) == 1 and triggered[0]["state"] == "success", [dict(r) for r in refreshes]
    assert tasks["train"]["end_date"] < triggered[0]["start_date"]  # after the promotion
    assert triggered[0]["end_date"] <= tasks["refresh"]["end_date"]  # and waited for

    # The triggered refresh published the promoted model's lists for every user.
    recs = spark.read.format("delta").load(str(lake / "recommendations"))
    assert recs.select("user_id").distinct().count() == 60
    assert {r["model_version"] for r in recs.select("model_version").distinct().collect()} == {"1"}


@pytest.mark.airflow
def test_a_failing_airflow_task_fails_the_run_with_the_jobs_error(tmp_path: Path) -> None:
    conf = tmp_path / "broken.yaml"
    conf.write_text("train:\n  rank: -3\n")
    venv, env = migrated_airflow(tmp_path, conf)
    run = airflow(venv, env, "dags", "test", "recspark_ingest")
    assert run.returncode != 0
    assert "DagRun failed" in run.stdout + run.stderr
    # The job's own one-line error reaches the task log (here, dags test's output).
    assert "recspark ingest: error: train.rank must be > 0" in run.stdout + run.stderr

"""recspark's schedules as Airflow DAGs (Airflow 3, see requirements.txt beside this file).

Five DAGs; each job is a ``SparkSubmitOperator`` running ``jobs/run.py JOB`` on the cluster,
its task named after the job (the registry, ``recspark/jobs.py``):

``recspark_ingest``       every N minutes (default 10): ``ingest --once`` (availableNow).
``recspark_refresh``      every 15 minutes: ``refresh --once``.
``recspark_daily``        03:00 UTC: ``wait_for_ingest`` (a recent ingest run succeeded) >>
                          ``train`` >> ``refresh``: a run of ``recspark_refresh``, triggered and
                          waited for. The job recomputes every user when the champion changed
                          (training just promoted a model), else only users with new activity.
                          Going through the refresh DAG (max_active_runs=1) means two refreshes
                          never run at once: they are one streaming query with one checkpoint.
``recspark_maintenance``  Sundays 04:00 UTC: ``maintain`` (OPTIMIZE / VACUUM).
``recspark_quality``      05:00 UTC: ``check``, every quality suite on its whole table (each
                          job's own gates see only the rows it wrote).

Settings are Airflow Variables (set them in the UI, with ``airflow variables set``, or as
``AIRFLOW_VAR_<NAME>`` environment variables); every one has a default:

==================================== ========================================================
``recspark_project_dir``             the recspark checkout on the Airflow workers (default:
                                     two levels above this file, i.e. the repository)
``recspark_conf``                    job config (default ``<project>/conf/cluster.yaml``)
``recspark_spark_conn_id``           Spark connection (default ``spark_default``): its host
                                     is the master (``yarn``, ``k8s://...``, ``local[2]``)
``recspark_py_files``                the code artifact (default ``<project>/build/recspark.zip``,
                                     built by ``deploy/build-zip.sh`` when deploying)
``recspark_kafka``                   ``auto`` (default: look at ``ingest.source`` in the
                                     config), ``true`` or ``false``: add the Kafka connector
``recspark_pyspark_python``          optional ``spark.pyspark.python`` (executors' Python)
``recspark_archives``                optional ``--archives`` (e.g. ``env.tar.gz#environment``)
``recspark_ingest_every_minutes``    ingest period, a divisor of 60 (default 10)
``recspark_ingest_fresh_minutes``    how recent a successful ingest run must be for the daily
                                     training to start (default 60)
``recspark_train_timeout_hours``     execution timeout of ``train`` (default 3)
==================================== ========================================================

The file must import where the Airflow scheduler and dag-processor run, which have neither
pyspark nor recspark: it imports neither. The Maven coordinates come from
``recspark/packages.py`` and the jobs from ``recspark/jobs.py``, each executed on its own with
:func:`runpy.run_path` (both are standard-library only at import; packages.py is the one place
that names versions, jobs.py the one that names jobs); tests/entrypoints/test_deploy.py checks that the
DAGs pass exactly what ``python -m recspark.packages`` prints.

Variables are read when the file is parsed (the dag-processor re-parses it every few
minutes), because the schedule, the connection and the package list must be known then.
"""

from __future__ import annotations

import logging
import runpy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, Variable

log = logging.getLogger(__name__)

INGEST_DAG_ID = "recspark_ingest"
INGEST_TASK_ID = "ingest"
REFRESH_DAG_ID = "recspark_refresh"
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)
TAGS = ["recspark"]


def setting(name: str, default: str) -> str:
    """An Airflow Variable, or ``default`` when it is unset (or Variables cannot be reached)."""
    try:
        value = Variable.get(name, default=None)
    except Exception as exc:  # a DAG file must import even when the metastore is away
        log.warning("Airflow Variable %s unreadable (%s); using %r", name, exc, default)
        return default
    return default if value in (None, "") else str(value)


def spark_packages(project_dir: Path, kafka: bool) -> list[str]:
    """The Maven coordinates recspark jobs need, from ``recspark/packages.py`` (run on its own:
    neither pyspark nor the recspark package is imported)."""
    module = runpy.run_path(str(project_dir / "recspark" / "packages.py"), run_name="packages")
    return list(module["spark_packages"](kafka=kafka))


def job_registry(project_dir: Path) -> dict[str, Any]:
    """The job registry, ``recspark/jobs.py``, run on its own (its imports are standard library
    only; the run functions import recspark when a job runs, which never happens here)."""
    return runpy.run_path(str(project_dir / "recspark" / "jobs.py"), run_name="recspark_jobs")


def config_wants_kafka(conf_path: str) -> bool:
    """``ingest.source: kafka`` in the job config, when the config is a readable local file."""
    try:
        import yaml

        raw = yaml.safe_load(Path(conf_path).read_text(encoding="utf-8")) or {}
    except Exception:
        return False
    ingest = raw.get("ingest") if isinstance(raw, dict) else None
    return isinstance(ingest, dict) and ingest.get("source") == "kafka"


def every_minutes_cron(minutes: int) -> str:
    """A cron expression firing every ``minutes`` minutes on the hour's grid."""
    if minutes <= 0 or 60 % minutes:
        raise ValueError(f"recspark_ingest_every_minutes must divide 60, got {minutes}")
    return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"


PROJECT_DIR = Path(setting("recspark_project_dir", str(Path(__file__).resolve().parents[2])))
CONF = setting("recspark_conf", str(PROJECT_DIR / "conf" / "cluster.yaml"))
SPARK_CONN_ID = setting("recspark_spark_conn_id", "spark_default")
PY_FILES = setting("recspark_py_files", str(PROJECT_DIR / "build" / "recspark.zip"))
_KAFKA = setting("recspark_kafka", "auto").strip().lower()
KAFKA = config_wants_kafka(CONF) if _KAFKA == "auto" else _KAFKA in ("1", "true", "yes")
PACKAGES = ",".join(spark_packages(PROJECT_DIR, kafka=KAFKA))
PYSPARK_PYTHON = setting("recspark_pyspark_python", "")
ARCHIVES = setting("recspark_archives", "")
REGISTRY = job_registry(PROJECT_DIR)
INGEST_EVERY_MINUTES = int(setting("recspark_ingest_every_minutes", "10"))
INGEST_FRESH_MINUTES = int(setting("recspark_ingest_fresh_minutes", "60"))
TRAIN_TIMEOUT = timedelta(hours=float(setting("recspark_train_timeout_hours", "3")))

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "recspark",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
}
# The frequent jobs catch up on their next run anyway: retry once, quickly.
FREQUENT_ARGS: dict[str, Any] = {**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(minutes=1)}


def spark_job(name: str, **kwargs: Any) -> SparkSubmitOperator:
    """Task ``name``: ``spark-submit --packages ... --py-files recspark.zip jobs/run.py <name>
    --conf CONF`` plus what the registry says a scheduled run of the job adds (``--once``)."""
    job = REGISTRY["submitted"](name)  # an unknown job fails the DAG file's import, with the names
    return SparkSubmitOperator(
        task_id=job.name,
        doc=job.help,
        application=str(PROJECT_DIR / "jobs" / "run.py"),
        conn_id=SPARK_CONN_ID,
        py_files=PY_FILES,
        packages=PACKAGES,
        archives=ARCHIVES or None,
        conf={"spark.pyspark.python": PYSPARK_PYTHON} if PYSPARK_PYTHON else None,
        name=f"recspark-{job.name}",
        application_args=[job.name, "--conf", CONF, *job.scheduled_args],
        **kwargs,
    )


def ingest_grid_dates(since: datetime, until: datetime, every_minutes: int) -> list[datetime]:
    """The logical dates the ingest DAG's cron schedule produces in ``[since, until]``."""
    step = timedelta(minutes=every_minutes)
    first = since.replace(second=0, microsecond=0)
    first -= timedelta(minutes=first.minute % every_minutes)
    if first < since:
        first += step
    dates = []
    while first <= until:
        dates.append(first)
        first += step
    return dates


def ingest_is_fresh(ti: Any, dag_run: Any, **_: Any) -> bool:
    """True once an ``ingest`` task scheduled at most ``INGEST_FRESH_MINUTES`` before this run
    (or any time since) has succeeded.

    Unlike an ExternalTaskSensor pinned to one logical date, this does not hang when the
    ingest DAG skipped that date (max_active_runs=1 and catchup=False skip slots while a long
    run is still going)."""
    reference = dag_run.run_after or dag_run.logical_date
    # Up to now (a success after the run started counts too), at most a day on (a run
    # cleared and re-run much later should not list weeks of slots).
    until = min(max(datetime.now(timezone.utc), reference), reference + timedelta(days=1))
    since = reference - timedelta(minutes=INGEST_FRESH_MINUTES)
    dates = ingest_grid_dates(since, until, INGEST_EVERY_MINUTES)
    if not dates:
        return False
    done = ti.get_ti_count(
        dag_id=INGEST_DAG_ID, task_ids=[INGEST_TASK_ID], logical_dates=dates, states=["success"]
    )
    log.info("%d successful %s runs in %d slots since %s", done, INGEST_DAG_ID, len(dates), since)
    return done > 0


def scheduled(
    dag_id: str, description: str, schedule: str, default_args: dict[str, Any], **extra: Any
) -> DAG:
    """A recspark DAG: no catchup, one run at a time (a job's runs never overlap)."""
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=TAGS,
        **extra,
    )


with scheduled(
    INGEST_DAG_ID,
    "Stream new events into the Delta tables (availableNow, then stop)",
    every_minutes_cron(INGEST_EVERY_MINUTES),
    FREQUENT_ARGS,
) as ingest_dag:
    spark_job(INGEST_TASK_ID, execution_timeout=timedelta(hours=1))


with scheduled(
    REFRESH_DAG_ID,
    "Refresh recommendations: all users after a new champion, else the active ones",
    "*/15 * * * *",
    FREQUENT_ARGS,
) as refresh_dag:
    spark_job("refresh", execution_timeout=timedelta(hours=1))


with scheduled(
    "recspark_daily",
    "Wait for fresh events, retrain ALS, then recompute every user's top-N",
    "0 3 * * *",
    DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=12),
) as daily_dag:
    wait_for_ingest = PythonSensor(
        task_id="wait_for_ingest",
        python_callable=ingest_is_fresh,
        mode="reschedule",
        poke_interval=300,
        timeout=2 * 3600,
    )
    train = spark_job("train", execution_timeout=TRAIN_TIMEOUT)
    # A run of recspark_refresh rather than a second SparkSubmitOperator: the refresh is one
    # streaming query with one checkpoint, and that DAG's max_active_runs=1 keeps its runs
    # (scheduled or triggered) from overlapping. After a promotion it recomputes every user.
    full_refresh = TriggerDagRunOperator(
        task_id="refresh",
        trigger_dag_id=REFRESH_DAG_ID,
        wait_for_completion=True,
        poke_interval=60,
        failed_states=["failed"],
        fail_when_dag_is_paused=True,
        execution_timeout=timedelta(hours=3),
    )
    wait_for_ingest >> train >> full_refresh


with scheduled(
    "recspark_maintenance", "OPTIMIZE and VACUUM the Delta tables", "0 4 * * 0", DEFAULT_ARGS
) as maintenance_dag:
    spark_job("maintain", execution_timeout=timedelta(hours=6))


with scheduled(
    "recspark_quality",
    "Every quality suite on its whole table (the per-run gates see only new rows)",
    "0 5 * * *",
    DEFAULT_ARGS,
) as quality_dag:
    spark_job("check", execution_timeout=timedelta(hours=3))

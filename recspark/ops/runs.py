"""Job-run history: the ``job_runs`` Delta table.

Every command wrapped in :func:`track_job` leaves one row behind, succeeded or failed, so "what
ran, when, how long, with what result" is a query on the lake rather than a search through
scheduler logs (``recspark status`` shows the newest, see :mod:`recspark.ops.status`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.console import DETAIL
from recspark.core.secrets import redact
from recspark.core.tables import (
    INGEST_METRICS,
    JOB_RUNS,
    Lake,
)

log = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
ERROR_LIMIT = 1000


def active_spark() -> SparkSession | None:
    """The session a job built, if any: the provider to give :func:`track_job`.

    Never creates one: a job that failed before Spark started must not start it just to
    record the failure.
    """
    return SparkSession.getActiveSession()


@dataclass
class JobRun:
    """What the body of :func:`track_job` reports about its run."""

    job: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    rows_in: int | None = None
    rows_out: int | None = None
    model_version: str | None = None
    catalog_malformed_lines: int | None = None  # None: the job read no catalog


def error_text(exc: BaseException) -> str:
    """The first line of the error, with its type, short enough for a table cell and with any
    credentials redacted (an error about the tracking store quotes its URI)."""
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {redact(lines[0])}" if lines else type(exc).__name__
    return message[:ERROR_LIMIT]


def record_job_run(
    spark: SparkSession,
    lake: Lake,
    run: JobRun,
    *,
    ended_at: datetime,
    status: str,
    error: str | None,
) -> None:
    """Append ``run``'s row to ``job_runs`` (blind appends: concurrent jobs never conflict)."""
    row = (
        run.run_id,
        run.job,
        run.started_at,
        ended_at,
        status,
        None if run.rows_in is None else int(run.rows_in),
        None if run.rows_out is None else int(run.rows_out),
        None if run.model_version is None else str(run.model_version),
        None if error is None else redact(error)[:ERROR_LIMIT],
        None if run.catalog_malformed_lines is None else int(run.catalog_malformed_lines),
    )
    lake.append_row(spark, JOB_RUNS, row)


@contextmanager
def track_job(spark_provider: Callable[[], SparkSession | None], lake: Lake, job: str) -> Iterator[JobRun]:
    """Record the wrapped job in ``job_runs``: ``succeeded``, or ``failed`` with the error.

    The job's own exception always propagates unchanged; a failure to record (no Spark
    session, an unwritable lake) is logged as a warning and never replaces it.
    """
    run = JobRun(job=job)
    try:
        yield run
    except BaseException as exc:
        _record_safely(spark_provider, lake, run, FAILED, error_text(exc))
        raise
    _record_safely(spark_provider, lake, run, SUCCEEDED, None)


def _record_safely(
    spark_provider: Callable[[], SparkSession | None],
    lake: Lake,
    run: JobRun,
    status: str,
    error: str | None,
) -> None:
    ended_at = datetime.now(timezone.utc)
    try:
        spark = spark_provider()
    except Exception as exc:
        log.warning("job run %s (%s) not recorded: no Spark session (%s)", run.run_id, run.job, exc)
        return
    if spark is None:
        log.warning(
            "job run %s (%s, %s) not recorded: the job ended before a Spark session existed",
            run.run_id,
            run.job,
            status,
        )
        return
    try:
        record_job_run(spark, lake, run, ended_at=ended_at, status=status, error=error)
    except Exception as exc:
        log.warning(
            "job run %s (%s, %s) not recorded in %s: %s",
            run.run_id,
            run.job,
            status,
            lake.path(JOB_RUNS.name),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return
    log.info("job run %s (%s) recorded as %s", run.run_id, run.job, status, extra=DETAIL)


def ingest_counts(spark: SparkSession, lake: Lake, since: datetime) -> tuple[int, int]:
    """Rows read and events written by the ingest batches that started at or after ``since``
    (the ``ingest_metrics`` rows a run wrote), for its ``job_runs`` row."""
    if not lake.exists(spark, INGEST_METRICS):
        return 0, 0
    row = (
        lake.read(spark, INGEST_METRICS)
        .where(F.col("started_at") >= F.lit(since))
        .agg(F.sum("input_rows"), F.sum("events_written"))
        .first()
    )
    return (0, 0) if row is None else (int(row[0] or 0), int(row[1] or 0))

"""Job-run history (the ``job_runs`` Delta table) and the on-call status report.

Every command wrapped in :func:`track_job` leaves one row behind, succeeded or failed, so "what
ran, when, how long, with what result" is a query on the lake rather than a search through
scheduler logs. :func:`status_report` puts that next to table freshness and the champion model.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.tables import ALL_TABLES, JOB_RUNS, JOB_RUNS_SCHEMA, QUALITY_RESULTS, Lake

log = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
ERROR_LIMIT = 1000
REPORT_RUNS = 10
CHAMPION_METRICS = ("ndcg_at_k", "popular_ndcg_at_k", "precision_at_k", "recall_at_k")


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


def error_text(exc: BaseException) -> str:
    """The first line of the error, with its type, short enough for a table cell."""
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return message[:ERROR_LIMIT]


def record_job_run(
    spark: SparkSession,
    lake: Lake,
    *,
    run_id: str,
    job: str,
    started_at: datetime,
    ended_at: datetime,
    status: str,
    rows_in: int | None,
    rows_out: int | None,
    model_version: str | None,
    error: str | None,
) -> None:
    """Append one row to ``job_runs`` (blind appends: concurrent jobs never conflict)."""
    lake.ensure(spark, JOB_RUNS)
    row = (
        run_id,
        job,
        started_at,
        ended_at,
        status,
        None if rows_in is None else int(rows_in),
        None if rows_out is None else int(rows_out),
        None if model_version is None else str(model_version),
        None if error is None else error[:ERROR_LIMIT],
    )
    (
        spark.createDataFrame([row], JOB_RUNS_SCHEMA)
        .write.format("delta")
        .mode("append")
        .save(lake.path(JOB_RUNS.name))
    )


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
        record_job_run(
            spark,
            lake,
            run_id=run.run_id,
            job=run.job,
            started_at=run.started_at,
            ended_at=ended_at,
            status=status,
            rows_in=run.rows_in,
            rows_out=run.rows_out,
            model_version=run.model_version,
            error=error,
        )
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
    log.info("job run %s (%s) recorded as %s", run.run_id, run.job, status)


# --------------------------------------------------------------------------------------------
# Status report


def format_age(seconds: float) -> str:
    """'45s ago', '3m ago', '2h ago', '4d ago'."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def format_duration(seconds: float | None) -> str:
    """'0.4s', '42s', '3m05s', '1h02m'."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """Plain-text columns: numbers right-aligned, text left-aligned, the last column free."""
    cells = [[("-" if v is None else v) for v in row] for row in rows]
    text = [[f"{v:,}" if isinstance(v, int) else str(v) for v in row] for row in cells]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    numeric = [
        any(isinstance(r[i], int) for r in cells) and all(isinstance(r[i], int) or r[i] == "-" for r in cells)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            last = i == len(values) - 1
            if numeric[i]:
                parts.append(value.rjust(widths[i]))
            else:
                parts.append(value if last else value.ljust(widths[i]))
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers)] + [line(r) for r in text]


def _tables_section(spark: SparkSession, lake: Lake, now: float) -> list[str]:
    rows, missing = [], []
    for spec in ALL_TABLES:
        try:
            if not lake.exists(spark, spec):
                missing.append(spec.name)
                continue
            last = (
                lake.delta(spark, spec)
                .history(1)
                .select("version", F.col("timestamp").cast("double").alias("at"))
                .first()
            )
            count = lake.read(spark, spec).count()
        except Exception as exc:  # one broken table must not hide the others
            rows.append((spec.name, None, None, None, f"unreadable: {str(exc).splitlines()[0]}"))
            continue
        assert last is not None
        at = float(last["at"])
        rows.append((spec.name, int(count), int(last["version"]), _utc(at), format_age(now - at)))
    lines = [f"Tables (Delta, under {lake.root})"]
    if rows:
        lines += _aligned(("table", "rows", "version", "last commit (UTC)", "age"), rows)
    else:
        lines.append("  no tables yet: run `recspark ingest` first")
    if missing:
        lines.append("  not written yet: " + ", ".join(missing))
    return lines


@contextmanager
def _quick_http_failures() -> Iterator[None]:
    """An unreachable tracking server should cost the on-call seconds, not minutes of retries."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    added = [k for k in settings if k not in os.environ]
    os.environ.update({k: settings[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _model_section(config: Config) -> list[str]:
    from mlflow.tracking import MlflowClient

    from recspark.core.registry import champion_version, configure_mlflow

    settings = config.mlflow
    lines = [f"Model ({settings.model_name}, MLflow at {settings.tracking_uri})"]
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return [
            *lines,
            "  no champion: the tracking store does not exist yet (run `recspark train`)",
        ]
    try:
        with _quick_http_failures():
            configure_mlflow(settings)
            champion = champion_version(settings)
            if champion is None:
                return [*lines, f"  no champion: model '{settings.model_name}' has no champion"]
            metrics = MlflowClient().get_run(champion.run_id).data.metrics if champion.run_id else {}
    except Exception as exc:
        return [*lines, f"  tracking store not reachable: {str(exc).splitlines()[0]}"]
    registered = _utc(champion.creation_timestamp / 1000) if champion.creation_timestamp else "unknown time"
    lines.append(f"  champion: version {champion.version} (run {champion.run_id}, registered {registered})")
    shown = [(name, metrics.get(name)) for name in CHAMPION_METRICS]
    lines.append(
        "  " + "  ".join(f"{name} {'-' if value is None else f'{value:.4f}'}" for name, value in shown)
    )
    return lines


def _runs_section(spark: SparkSession, lake: Lake) -> list[str]:
    title = f"Last {REPORT_RUNS} job runs"
    if not lake.exists(spark, JOB_RUNS):
        return [title, "  none recorded yet"]
    recent = (
        lake.read(spark, JOB_RUNS)
        .orderBy(F.col("started_at").desc())
        .limit(REPORT_RUNS)
        .select(
            "job",
            "status",
            F.col("started_at").cast("double").alias("started"),
            (F.col("ended_at").cast("double") - F.col("started_at").cast("double")).alias("took"),
            "rows_out",
            "model_version",
            "error",
        )
        .collect()
    )
    if not recent:
        return [title, "  none recorded yet"]
    rows = [
        (
            r["job"],
            r["status"],
            _utc(r["started"]),
            format_duration(r["took"]),
            r["rows_out"],
            r["model_version"],
            _shorten(r["error"], 80),
        )
        for r in recent
    ]
    headers = ("job", "status", "started (UTC)", "duration", "rows out", "model", "error")
    return [title, *_aligned(headers, rows)]


def _quality_section(spark: SparkSession, lake: Lake) -> list[str]:
    if not lake.exists(spark, QUALITY_RESULTS):
        return []
    from recspark.ops.quality import latest_results

    latest = (
        latest_results(spark, lake)
        .select(
            "suite",
            "table_name",
            "table_version",
            F.col("validated_at").cast("double").alias("at"),
            "success",
            "action",
            "failures",
        )
        .orderBy("suite", "table_name")
        .collect()
    )
    rows = [
        (
            r["suite"],
            r["table_name"],
            r["table_version"],
            _utc(r["at"]),
            "passed" if r["success"] else f"FAILED ({r['action']})",
            _shorten(r["failures"], 120),
        )
        for r in latest
    ]
    headers = ("suite", "table", "version", "validated (UTC)", "result", "failures")
    return ["Latest quality gates", *_aligned(headers, rows)] if rows else []


def _shorten(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_report(spark: SparkSession, config: Config, lake: Lake) -> str:
    """What an on-call engineer runs first: table freshness, the champion, recent job runs."""
    now = datetime.now(timezone.utc)
    sections = [
        [f"recspark status at {now:%Y-%m-%d %H:%M:%S} UTC"],
        _tables_section(spark, lake, now.timestamp()),
        _model_section(config),
        _runs_section(spark, lake),
        _quality_section(spark, lake),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"

"""Job-run history (the ``job_runs`` Delta table) and the on-call status report.

Every command wrapped in :func:`track_job` leaves one row behind, succeeded or failed, so "what
ran, when, how long, with what result" is a query on the lake rather than a search through
scheduler logs. :func:`gather_status` reads that next to table freshness, the champion model and
the quality gates, once; :func:`render_status` shows it to a person, :func:`status_json` to a
monitoring system.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.secrets import redact
from recspark.core.tables import (
    ALL_TABLES,
    CHAMPION_HISTORY,
    INGEST_METRICS,
    JOB_RUNS,
    QUALITY_RESULTS,
    RECOMMENDATION_OUTCOMES,
    Lake,
    TableSpec,
)

log = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
FAILED = "failed"
ERROR_LIMIT = 1000
REPORT_RUNS = 10
CHAMPION_METRICS = ("ndcg_at_k", "popular_ndcg_at_k", "precision_at_k", "recall_at_k")
# recspark status shows what shoppers did with the lists served on the newest days of outcomes.
OUTCOME_DAYS = 7


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
    log.info("job run %s (%s) recorded as %s", run.run_id, run.job, status)


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


# --------------------------------------------------------------------------------------------
# Status: gathered once (:func:`gather_status`), rendered as text or as JSON


@dataclass(frozen=True)
class TableState:
    """One table's freshness; ``error`` is set when the table exists but cannot be read."""

    name: str
    exists: bool
    rows: int | None = None
    version: int | None = None
    last_commit: float | None = None  # epoch seconds, UTC
    error: str | None = None


@dataclass(frozen=True)
class ChampionState:
    """The registry's answer. ``state``: champion, none, no_store (no local store yet) or
    unreachable (``message`` says why)."""

    model_name: str
    tracking_uri: str
    state: str
    message: str | None = None
    version: str | None = None
    run_id: str | None = None
    family: str | None = None
    registered_at: float | None = None
    promoted_at: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RunState:
    """One ``job_runs`` row (times as epoch seconds)."""

    run_id: str
    job: str
    status: str
    started_at: float
    ended_at: float | None
    rows_in: int | None
    rows_out: int | None
    model_version: str | None
    error: str | None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True)
class GateState:
    """The newest quality gate result of one suite on one table."""

    suite: str
    table: str
    table_version: int | None
    validated_at: float
    success: bool
    action: str
    failures: str | None
    rows_validated: int | None  # None: recorded before the column existed
    scope: str | None  # "whole table", or "rows written since ..." (a run's own rows)


@dataclass(frozen=True)
class OutcomeState:
    """What shoppers did with one model version's (and variant's) lists over the days shown:
    ``ctr`` = clicks / impressions, ``conversion`` = purchases / impressions (per shown item)."""

    model_version: str | None
    variant: str | None
    first_day: str
    last_day: str
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float

    @property
    def ctr(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None

    @property
    def conversion(self) -> float | None:
        return self.purchases / self.impressions if self.impressions else None


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything the status report shows, read once so text and JSON cannot disagree."""

    at: float
    lake_root: str
    tables: list[TableState]
    champion: ChampionState
    runs: list[RunState]
    gates: list[GateState]
    outcomes: list[OutcomeState] = field(default_factory=list)
    # Attribution issues now (ingest_metrics.outcome_issues summed over all batches).
    outcome_issues: dict[str, int] = field(default_factory=dict)


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


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


# Gathering ----------------------------------------------------------------------------------


def _table_state(spark: SparkSession, lake: Lake, spec: TableSpec) -> TableState:
    try:
        if not lake.exists(spark, spec):
            return TableState(spec.name, exists=False)
        last = (
            lake.delta(spark, spec)
            .history(1)
            .select("version", F.col("timestamp").cast("double").alias("at"))
            .first()
        )
        count = lake.read(spark, spec).count()
    except Exception as exc:  # one broken table must not hide the others
        return TableState(spec.name, exists=True, error=_first_line(exc))
    assert last is not None
    return TableState(spec.name, True, int(count), int(last["version"]), float(last["at"]))


def _gather_tables(spark: SparkSession, lake: Lake) -> list[TableState]:
    return [_table_state(spark, lake, spec) for spec in ALL_TABLES]


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


def _promoted_at(spark: SparkSession, lake: Lake, config: Config, version: str) -> float | None:
    """When ``version`` last became champion, from ``champion_history`` (None if unrecorded)."""
    from recspark.core.registry import CHAMPION

    try:
        if not lake.exists(spark, CHAMPION_HISTORY):
            return None
        row = (
            lake.read(spark, CHAMPION_HISTORY)
            .where(
                (F.col("model_name") == config.mlflow.model_name)
                & (F.col("alias") == CHAMPION)
                & (F.col("version") == version)
            )
            .agg(F.max(F.col("moved_at").cast("double")).alias("at"))
            .first()
        )
    except Exception as exc:  # the history is a nicety here; the registry is the truth
        log.warning("status: champion_history not readable: %s", _first_line(exc))
        return None
    return None if row is None or row["at"] is None else float(row["at"])


def _gather_champion(spark: SparkSession, config: Config, lake: Lake) -> ChampionState:
    from mlflow.tracking import MlflowClient

    from recspark.core.registry import champion_version, configure_mlflow

    settings = config.mlflow
    base: dict[str, Any] = {"model_name": settings.model_name, "tracking_uri": settings.tracking_uri}
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return ChampionState(**base, state="no_store", message="the tracking store does not exist yet")
    try:
        with _quick_http_failures():
            configure_mlflow(settings)
            champion = champion_version(settings)
            if champion is None:
                return ChampionState(
                    **base, state="none", message=f"model '{settings.model_name}' has no champion"
                )
            metrics = MlflowClient().get_run(champion.run_id).data.metrics if champion.run_id else {}
    except Exception as exc:
        return ChampionState(**base, state="unreachable", message=_first_line(exc))
    created = champion.creation_timestamp
    return ChampionState(
        **base,
        state="champion",
        version=str(champion.version),
        run_id=champion.run_id,
        family=(champion.tags or {}).get("model_family"),
        registered_at=created / 1000 if created else None,
        promoted_at=_promoted_at(spark, lake, config, str(champion.version)),
        metrics={name: metrics.get(name) for name in CHAMPION_METRICS},
    )


def _gather_runs(spark: SparkSession, lake: Lake) -> list[RunState]:
    if not lake.exists(spark, JOB_RUNS):
        return []
    recent = (
        lake.read(spark, JOB_RUNS)
        .orderBy(F.col("started_at").desc())
        .limit(REPORT_RUNS)
        .select(
            "run_id",
            "job",
            "status",
            F.col("started_at").cast("double").alias("started_at"),
            F.col("ended_at").cast("double").alias("ended_at"),
            "rows_in",
            "rows_out",
            "model_version",
            "error",
        )
        .collect()
    )
    return [RunState(**r.asDict()) for r in recent]


def _gather_gates(spark: SparkSession, lake: Lake) -> list[GateState]:
    if not lake.exists(spark, QUALITY_RESULTS):
        return []
    from recspark.ops.quality import latest_results

    results = latest_results(spark, lake)
    # Columns added later: a lake whose gates all ran before them has none yet.
    later = {"rows_validated": "long", "scope": "string"}
    results = results.withColumns(
        {c: F.lit(None).cast(t) for c, t in later.items() if c not in results.columns}
    )
    latest = (
        results.select(
            "suite",
            F.col("table_name").alias("table"),
            "table_version",
            F.col("validated_at").cast("double").alias("validated_at"),
            "success",
            "action",
            "failures",
            "rows_validated",
            "scope",
        )
        .orderBy("suite", "table")
        .collect()
    )
    return [GateState(**r.asDict()) for r in latest]


def _gather_outcomes(spark: SparkSession, lake: Lake) -> list[OutcomeState]:
    """Per model version and variant, the outcomes of the lists served on the newest
    ``OUTCOME_DAYS`` days of ``recommendation_outcomes`` (relative to its newest day, so a
    stalled log still shows its last days)."""
    if not lake.exists(spark, RECOMMENDATION_OUTCOMES):
        return []
    outcomes = lake.read(spark, RECOMMENDATION_OUTCOMES)
    newest = outcomes.agg(F.max("day")).first()
    if newest is None or newest[0] is None:
        return []
    recent = outcomes.where(F.col("day") > F.date_sub(F.lit(newest[0]), OUTCOME_DAYS))
    rows = (
        recent.groupBy("model_version", "variant")
        .agg(
            F.min("day").cast("string").alias("first_day"),
            F.max("day").cast("string").alias("last_day"),
            *[F.sum(c).cast("long").alias(c) for c in ("impressions", "clicks", "add_to_carts", "purchases")],
            F.sum("revenue").alias("revenue"),
        )
        .orderBy(F.col("model_version").desc_nulls_last(), "variant")
        .collect()
    )
    return [OutcomeState(**r.asDict()) for r in rows]


def _gather_outcome_issues(spark: SparkSession, lake: Lake) -> dict[str, int]:
    if not lake.exists(spark, INGEST_METRICS):
        return {}
    metrics = lake.read(spark, INGEST_METRICS)
    if "outcome_issues" not in metrics.columns:
        return {}
    rows = (
        metrics.select(F.explode("outcome_issues").alias("reason", "events"))
        .groupBy("reason")
        .agg(F.sum("events").alias("events"))
        .where(F.col("events") != 0)
        .orderBy("reason")
        .collect()
    )
    return {r["reason"]: int(r["events"]) for r in rows}


def gather_status(spark: SparkSession, config: Config, lake: Lake) -> StatusSnapshot:
    """Read what the status report shows, once: tables, champion, last runs, last gates, and
    what shoppers did with the lists served lately."""
    return StatusSnapshot(
        at=datetime.now(timezone.utc).timestamp(),
        lake_root=lake.root,
        tables=_gather_tables(spark, lake),
        champion=_gather_champion(spark, config, lake),
        runs=_gather_runs(spark, lake),
        gates=_gather_gates(spark, lake),
        outcomes=_gather_outcomes(spark, lake),
        outcome_issues=_gather_outcome_issues(spark, lake),
    )


# Text ---------------------------------------------------------------------------------------


def _tables_section(snapshot: StatusSnapshot) -> list[str]:
    rows: list[tuple[Any, ...]] = []
    for t in snapshot.tables:
        if t.error is not None:
            rows.append((t.name, None, None, None, f"unreadable: {t.error}"))
        elif t.exists and t.last_commit is not None:
            age = format_age(snapshot.at - t.last_commit)
            rows.append((t.name, t.rows, t.version, _utc(t.last_commit), age))
    missing = [t.name for t in snapshot.tables if not t.exists]
    lines = [f"Tables (Delta, under {snapshot.lake_root})"]
    if rows:
        lines += _aligned(("table", "rows", "version", "last commit (UTC)", "age"), rows)
    else:
        lines.append("  no tables yet: run `recspark ingest` first")
    if missing:
        lines.append("  not written yet: " + ", ".join(missing))
    return lines


def _model_section(champion: ChampionState) -> list[str]:
    lines = [f"Model ({champion.model_name}, MLflow at {champion.tracking_uri})"]
    if champion.state == "no_store":
        return [*lines, "  no champion: the tracking store does not exist yet (run `recspark train`)"]
    if champion.state == "none":
        return [*lines, f"  no champion: {champion.message}"]
    if champion.state == "unreachable":
        return [*lines, f"  tracking store not reachable: {champion.message}"]
    registered = _utc(champion.registered_at) if champion.registered_at else "unknown time"
    details = [f"run {champion.run_id}", f"registered {registered}"]
    if champion.family:
        details.append(f"family {champion.family}")
    if champion.promoted_at is not None:
        details.append(f"champion since {_utc(champion.promoted_at)}")
    lines.append(f"  champion: version {champion.version} ({', '.join(details)})")
    shown = champion.metrics.items()
    lines.append(
        "  " + "  ".join(f"{name} {'-' if value is None else f'{value:.4f}'}" for name, value in shown)
    )
    return lines


def _runs_section(runs: list[RunState]) -> list[str]:
    title = f"Last {REPORT_RUNS} job runs"
    if not runs:
        return [title, "  none recorded yet"]
    rows = [
        (
            r.job,
            r.status,
            _utc(r.started_at),
            format_duration(r.duration),
            r.rows_out,
            r.model_version,
            _shorten(r.error, 80),
        )
        for r in runs
    ]
    headers = ("job", "status", "started (UTC)", "duration", "rows out", "model", "error")
    return [title, *_aligned(headers, rows)]


def _quality_section(gates: list[GateState]) -> list[str]:
    rows = [
        (
            g.suite,
            g.table,
            g.table_version,
            _utc(g.validated_at),
            "-" if g.rows_validated is None else f"{g.rows_validated:,}",
            g.scope or "-",
            "passed" if g.success else f"FAILED ({g.action})",
            _shorten(g.failures, 120),
        )
        for g in gates
    ]
    headers = ("suite", "table", "version", "validated (UTC)", "rows", "of", "result", "failures")
    return ["Latest quality gates", *_aligned(headers, rows)] if rows else []


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _outcomes_section(outcomes: list[OutcomeState], issues: dict[str, int]) -> list[str]:
    if not outcomes and not issues:
        return []
    days = (
        f"{min(o.first_day for o in outcomes)} to {max(o.last_day for o in outcomes)}" if outcomes else "none"
    )
    rows = [
        (
            o.model_version or "(no model)",
            o.variant or "-",
            o.impressions,
            o.clicks,
            _share(o.ctr),
            o.purchases,
            _share(o.conversion),
            f"{o.revenue:,.2f}",
        )
        for o in outcomes
    ]
    headers = ("model", "variant", "impressions", "clicks", "ctr", "purchases", "conversion", "revenue")
    lines = [f"Shoppers (lists served {days}; per shown item)"]
    lines += _aligned(headers, rows) if rows else ["  no impressions recorded"]
    if issues:
        lines.append("  attribution issues: " + ", ".join(f"{k} {v:,}" for k, v in issues.items()))
    return lines


def _shorten(text: str | None, limit: int) -> str | None:
    """Redacted before it is cut: a URI cut before its ``@`` no longer looks like one."""
    if text is None:
        return None
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_status(snapshot: StatusSnapshot) -> str:
    """The on-call text report. Redacted as a whole: it quotes the tracking URI, error texts
    and rows written by older versions, any of which may carry credentials."""
    at = datetime.fromtimestamp(snapshot.at, timezone.utc)
    sections = [
        [f"recspark status at {at:%Y-%m-%d %H:%M:%S} UTC"],
        _tables_section(snapshot),
        _model_section(snapshot.champion),
        _runs_section(snapshot.runs),
        _quality_section(snapshot.gates),
        _outcomes_section(snapshot.outcomes, snapshot.outcome_issues),
    ]
    return redact("\n\n".join("\n".join(s) for s in sections if s) + "\n")


def status_report(spark: SparkSession, config: Config, lake: Lake) -> str:
    """What an on-call engineer runs first: table freshness, the champion, recent job runs."""
    return render_status(gather_status(spark, config, lake))


# JSON ---------------------------------------------------------------------------------------


def _redacted(value: Any) -> Any:
    """Every string in a JSON-ready structure redacted one by one (redacting the serialised text
    could eat a closing quote)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


# The fields that hold epoch seconds; JSON carries them as ISO 8601 UTC.
_EPOCH_FIELDS = frozenset(
    {"last_commit", "registered_at", "promoted_at", "started_at", "ended_at", "validated_at"}
)


def _as_json(
    state: TableState | ChampionState | RunState | GateState | OutcomeState, **derived: Any
) -> dict[str, Any]:
    """A state's fields, its times as ISO text, plus ``derived`` values computed from them."""
    fields = {k: _iso(v) if k in _EPOCH_FIELDS else v for k, v in asdict(state).items()}
    return {**fields, **derived}


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def status_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    """The same snapshot as one JSON-ready object for monitoring systems (times ISO 8601 UTC,
    newest run first), every string redacted."""
    return _redacted(
        {
            "generated_at": _iso(snapshot.at),
            "lake_root": snapshot.lake_root,
            "tables": [
                _as_json(
                    t, age_seconds=_rounded(None if t.last_commit is None else snapshot.at - t.last_commit)
                )
                for t in snapshot.tables
            ],
            "champion": _as_json(snapshot.champion),
            "job_runs": [_as_json(r, duration_seconds=_rounded(r.duration)) for r in snapshot.runs],
            "quality_gates": [_as_json(g) for g in snapshot.gates],
            "outcomes": [_as_json(o, ctr=o.ctr, conversion=o.conversion) for o in snapshot.outcomes],
            "outcome_issues": snapshot.outcome_issues,
        }
    )

"""The status report as text for a person: a section per part of the snapshot, redacted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.secrets import redact
from recspark.core.tables import Lake
from recspark.core.text import utc_text
from recspark.ops.status.catalog import CatalogState
from recspark.ops.status.champion import ChampionState
from recspark.ops.status.job_runs import REPORT_RUNS, RunState
from recspark.ops.status.outcomes import OutcomeState
from recspark.ops.status.quality_gates import GateState
from recspark.ops.status.snapshot import StatusSnapshot, gather_status


def format_span(seconds: float) -> str:
    """'45s', '3m', '2h', '4d' (whole units, rounded down)."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def format_age(seconds: float) -> str:
    """'45s ago', '3m ago', '2h ago', '4d ago'."""
    return f"{format_span(seconds)} ago"


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


def _tables_section(snapshot: StatusSnapshot) -> list[str]:
    rows: list[tuple[Any, ...]] = []
    for t in snapshot.tables:
        if t.error is not None:
            rows.append((t.name, None, None, None, f"unreadable: {t.error}"))
        elif t.exists and t.last_commit is not None:
            age = format_age(snapshot.at - t.last_commit)
            rows.append((t.name, t.rows, t.version, utc_text(t.last_commit), age))
    missing = [t.name for t in snapshot.tables if not t.exists]
    lines = [f"Tables (Delta, under {snapshot.lake_root})"]
    if rows:
        lines += _aligned(("table", "rows", "version", "last commit (UTC)", "age"), rows)
    else:
        lines.append("  no tables yet: run `recspark ingest` first")
    if missing:
        lines.append("  not written yet: " + ", ".join(missing))
    return lines


def _model_section(champion: ChampionState, at: float) -> list[str]:
    lines = [f"Model ({champion.model_name}, MLflow at {champion.tracking_uri})"]
    if champion.state == "no_store":
        return [*lines, "  no champion: the tracking store does not exist yet (run `recspark train`)"]
    if champion.state == "none":
        return [*lines, f"  no champion: {champion.message}", *_unchanged_lines(champion, at)]
    if champion.state == "unreachable":
        return [*lines, f"  tracking store not reachable: {champion.message}"]
    registered = utc_text(champion.registered_at) if champion.registered_at else "unknown time"
    details = [f"run {champion.run_id}", f"registered {registered}"]
    if champion.family:
        details.append(f"family {champion.family}")
    if champion.promoted_at is not None:
        details.append(f"champion since {utc_text(champion.promoted_at)}")
    lines.append(f"  champion: version {champion.version} ({', '.join(details)})")
    shown = champion.metrics.items()
    lines.append(
        "  " + "  ".join(f"{name} {'-' if value is None else f'{value:.4f}'}" for name, value in shown)
    )
    return [*lines, *_unchanged_lines(champion, at)]


def _unchanged_lines(champion: ChampionState, at: float) -> list[str]:
    """How long the champion has held, and what the newest `train` run decided and why."""
    lines = []
    if champion.state == "champion":
        if champion.promoted_at is None:
            since = "since an unrecorded time (no champion_history row)"
        else:
            span = format_span(at - champion.promoted_at)
            since = f"unchanged for {span} since {utc_text(champion.promoted_at)} UTC"
        lines.append(f"  champion version {champion.version}, {since}")
    if champion.newest_version is not None:
        when = utc_text(champion.newest_trained_at)
        if champion.newest_promoted:
            lines.append(f"  newest train run: version {champion.newest_version} ({when} UTC), promoted")
        else:
            status = f" ({champion.newest_status})" if champion.newest_status else ""
            lines.append(
                f"  newest train run: version {champion.newest_version} ({when} UTC) not promoted{status}: "
                f"{champion.newest_reason or 'no reason recorded'}"
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
            utc_text(r.started_at),
            format_duration(r.duration),
            r.rows_out,
            r.model_version,
            r.catalog_malformed_lines,
            _shorten(r.error, 80),
        )
        for r in runs
    ]
    headers = (
        "job",
        "status",
        "started (UTC)",
        "duration",
        "rows out",
        "model",
        "bad catalog lines",
        "error",
    )
    return [title, *_aligned(headers, rows)]


def _quality_section(gates: list[GateState]) -> list[str]:
    rows = [
        (
            g.suite,
            g.table,
            g.table_version,
            utc_text(g.validated_at),
            "-" if g.rows_validated is None else f"{g.rows_validated:,}",
            g.scope or "-",
            "passed" if g.success else f"FAILED ({g.action})",
            _shorten(g.failures, 120),
        )
        for g in gates
    ]
    headers = ("suite", "table", "version", "validated (UTC)", "rows", "of", "result", "failures")
    return ["Latest quality gates", *_aligned(headers, rows)] if rows else []


def _catalog_section(catalog: CatalogState) -> list[str]:
    if catalog.path is None:
        return ["Catalog", "  no catalog (catalog.path is null): every item is eligible"]
    title = f"Catalog ({catalog.path}; items it does not list: {catalog.unlisted_items}d)"
    if catalog.error is not None:
        return [title, f"  unreadable: {catalog.error}"]
    listed = f"  {catalog.items:,} items, {catalog.available_items:,} of them available; "
    if not catalog.malformed_lines:
        return [title, listed + f"all {catalog.lines:,} lines well-formed"]
    lines = [
        title,
        listed
        + f"{catalog.malformed_lines:,} of {catalog.lines:,} lines malformed: "
        + f"{catalog.held_back_items:,} items held back (fix the lines; see docs/operations.md)",
    ]
    rows = [(r.reason, r.lines, _shorten("; ".join(r.examples), 100)) for r in catalog.reasons]
    return lines + _aligned(("reason", "lines", "e.g."), rows)


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
        _model_section(snapshot.champion, snapshot.at),
        _runs_section(snapshot.runs),
        _quality_section(snapshot.gates),
        _catalog_section(snapshot.catalog),
        _outcomes_section(snapshot.outcomes, snapshot.outcome_issues),
    ]
    return redact("\n\n".join("\n".join(s) for s in sections if s) + "\n")


def status_report(spark: SparkSession, config: Config, lake: Lake) -> str:
    """What an on-call engineer runs first: table freshness, the champion, recent job runs."""
    return render_status(gather_status(spark, config, lake))

"""Validating a frame with one suite: the verdict, with each failed expectation described in one
line (how many rows broke it, and a few of them). Nothing recorded, nothing raised."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame

from recspark.ops.quality.ge_context import EXAMPLES_PER_FAILURE, quality_context
from recspark.ops.quality.result import QualityResult
from recspark.ops.quality.suites import SUITE_DEFINITIONS, SUITES


def _run_suite(
    suite: str,
    frame: DataFrame,
    parameters: dict[str, Any] | None = None,
    project_dir: Path | None = None,
) -> QualityResult:
    """Validate ``frame`` (persisted for the run unless the caller cached it) against a suite."""
    owned = not frame.is_cached
    if owned:
        frame = frame.persist()
    try:
        rows = frame.count()
        context = quality_context(project_dir)
        outcome = context.validate(suite, frame, parameters or {})
        if project_dir is None:
            context.keep_recent_results(0)  # in memory: nothing reads them again
    finally:
        if owned:
            frame.unpersist()
    failures = [_describe(r) for r in outcome.results if not r.success]
    stats = outcome.statistics
    return QualityResult(
        suite=suite,
        table_name=suite,
        success=bool(outcome.success),
        evaluated=int(stats["evaluated_expectations"]),
        failed=int(stats["unsuccessful_expectations"]),
        failures=failures,
        rows=rows,
    )


def _describe(result: Any) -> str:
    """'<what was expected>: <how many rows broke it> (e.g. <examples>)'."""
    config = result.expectation_config
    expected = config.description or config.type
    info = result.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "error").splitlines()[0][:200]
        return f"{expected}: could not be checked ({message})"
    details = result.result or {}
    unexpected, total = details.get("unexpected_count"), details.get("element_count")
    if unexpected is None:
        return f"{expected}: observed {details.get('observed_value')!r}"
    text = f"{expected}: {unexpected} of {total} rows do not"
    examples = details.get("partial_unexpected_list") or []
    if examples:
        shown = ", ".join(_example(e) for e in examples[:EXAMPLES_PER_FAILURE])
        text += f" (e.g. {shown})"
    return text


def _example(value: Any) -> str:
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + ")"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return repr(value)


def validate(suite: str, df: DataFrame, project_dir: Path | None = None, **checks: Any) -> QualityResult:
    """Validate ``df`` with ``suite`` (nothing recorded, nothing raised): the gate's core.

    ``checks`` go to the suite: ``now``, ``earliest``, ``ahead`` for events; ``top_n`` (required),
    ``unavailable_items`` (an ``item_id`` column; None skips that check), ``room`` (user_id,
    room: the eligible items left to a user, for users who may have fewer than N) and
    ``min_rows`` (the rows due to every user, when the catalog is smaller than N) for
    recommendations; nothing for the catalog's lines.
    """
    if suite not in SUITE_DEFINITIONS:
        raise ValueError(f"unknown quality suite {suite!r}; known: {', '.join(SUITES)}")
    frame, parameters = SUITE_DEFINITIONS[suite].validated_frame(df, **checks)
    return _run_suite(suite, frame, parameters, project_dir)

"""The quality gate jobs call: validate a frame, append the verdict to ``quality_results``,
refresh the Data Docs HTML (local lakes only) and, per ``quality.on_failure``, stop the job with
:class:`QualityGateError` or only log a warning."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import CatalogRead, load_catalog
from recspark.core.config import Config
from recspark.core.console import DETAIL
from recspark.core.gates import Gate
from recspark.core.tables import Lake, TableSpec
from recspark.ops.quality.ge_context import quality_context, quality_dir
from recspark.ops.quality.result import WHOLE_TABLE, QualityGateError, QualityResult
from recspark.ops.quality.results_table import record_result
from recspark.ops.quality.suites import (
    CATALOG_SUITE,
    CHECKED_TABLES,
    EVENTS_SUITE,
    RECOMMENDATIONS_SUITE,
    SUITE_DEFINITIONS,
    SUITES,
)
from recspark.ops.quality.validation import validate

log = logging.getLogger(__name__)

# Lake roots already told that Data Docs are skipped (once per process each).
_DOCS_NOTICE_GIVEN: set[str] = set()


def run_gate(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    suite: str,
    df: DataFrame,
    *,
    job: str,
    table_version: int | None = None,
    table_name: str | None = None,
    scope: str = WHOLE_TABLE,
    **kwargs: Any,
) -> QualityResult:
    """Validate ``df`` with ``suite``, record the outcome, and stop the job if configured to.

    ``kwargs`` go to the suite's validator (``top_n``, ``unavailable_items``, ``room`` and
    ``min_rows`` for recommendations; ``top_n`` defaults to ``serve.top_n``). Raises QualityGateError when the
    suite fails and ``quality.on_failure[suite]`` is ``fail`` (the default), after the result
    row has been written. Beyond the session, config and lake, the suite and the frame, every
    parameter is keyword-only (what the result row records, and the validator's checks).
    """
    if suite not in SUITE_DEFINITIONS:
        raise ValueError(f"unknown quality suite {suite!r}; known: {', '.join(SUITES)}")
    table = table_name or suite
    settings = config.quality
    if not settings.enabled:
        log.info("quality: suite '%s' on %s skipped (quality.enabled is false)", suite, table)
        return QualityResult(suite, table, True, 0, 0, [], "skipped")
    action = settings.on_failure.get(suite, "fail")
    if suite == RECOMMENDATIONS_SUITE:
        kwargs.setdefault("top_n", config.serve.top_n)
    if suite == EVENTS_SUITE:
        kwargs.setdefault("earliest", config.ingest.earliest_event_time.replace(tzinfo=timezone.utc))
        kwargs.setdefault("ahead", timedelta(minutes=config.ingest.max_future_minutes))

    project = quality_dir(lake) if settings.data_docs else None
    if settings.data_docs and project is None and lake.root not in _DOCS_NOTICE_GIVEN:
        _DOCS_NOTICE_GIVEN.add(lake.root)
        log.info("quality: Data Docs skipped, lake root %s is not a local path", lake.root)
    result = replace(validate(suite, df, project, **kwargs), table_name=table, action=action, scope=scope)
    record_result(spark, lake, result, job, table_version)
    if project is not None:
        try:
            index = quality_context(project).build_docs(suite)
            log.info("quality: Data Docs at %s", index, extra=DETAIL)
        except Exception as exc:  # the HTML is a convenience; never fail a job over it
            log.warning("quality: Data Docs not built: %s", str(exc).splitlines()[0])

    version = f" version {table_version}" if table_version is not None else ""
    if result.success:
        log.info("quality: %s%s", result.summary(), version)
    elif action == "fail":
        log.error("quality: %s%s", result.summary(), version)
        raise QualityGateError(result, table_version)
    else:
        log.warning("quality: %s%s (on_failure=warn, job continues)", result.summary(), version)
    return result


def gate_table(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    spec: TableSpec,
    *,
    job: str,
    written_since: datetime | None = None,
    **checks: Any,
) -> QualityResult:
    """Validate a table at its current version with the suite of the same name: only the rows
    written at or after ``written_since`` (the rows a run wrote, found by the table's
    ``written_at`` column, so the cost follows the run), or the whole table when it is None."""
    version = lake.version(spark, spec)
    frame = lake.read(spark, spec, version)
    scope = WHOLE_TABLE
    if written_since is not None:
        if spec.written_at is None:
            raise ValueError(f"table {spec.name} has no written_at column: it can only be checked whole")
        frame = frame.where(F.col(spec.written_at) >= F.lit(written_since))
        scope = f"rows written since {written_since.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    return run_gate(
        spark, config, lake, spec.name, frame, job=job, table_version=version, scope=scope, **checks
    )


def gate_catalog(
    spark: SparkSession, config: Config, lake: Lake, catalog: CatalogRead, *, job: str
) -> QualityResult:
    """The catalog suite on every line of ``catalog``, recorded like any gate."""
    return run_gate(spark, config, lake, CATALOG_SUITE, catalog.lines, job=job, scope=catalog.scope)


def check_tables(
    spark: SparkSession, config: Config, lake: Lake, checks: dict[str, dict[str, Any]], job: str = "check"
) -> list[QualityResult]:
    """Every suite on its whole table, and the catalog suite on the catalog (the scheduled check
    behind the per-run gates, which see only what a run wrote: e.g. an ``event_id`` that repeats
    one written by an earlier run). Runs them all, records each, then raises the first failure
    configured to ``fail``. ``checks`` holds each suite's validator arguments (by suite name)."""
    results: list[QualityResult] = []
    first_failure: QualityGateError | None = None
    gates: list[Callable[[], QualityResult]] = []
    for spec in CHECKED_TABLES:
        if not lake.exists(spark, spec):
            log.info("check: table %s does not exist yet: nothing to check", spec.name)
            continue
        gates.append(
            functools.partial(gate_table, spark, config, lake, spec, job=job, **checks.get(spec.name, {}))
        )
    if config.catalog.path is not None:
        path = config.catalog.path
        gates.append(lambda: gate_catalog(spark, config, lake, load_catalog(spark, path), job=job))
    for gate in gates:
        try:
            results.append(gate())
        except QualityGateError as exc:
            results.append(exc.result)
            first_failure = first_failure or exc
    if first_failure is not None:
        raise first_failure
    return results


def gate_for(spark: SparkSession, config: Config, lake: Lake, job: str) -> Gate:
    """The gate a job hands to the stages: :func:`run_gate` on this lake, recorded under ``job``."""

    def gate(suite: str, frame: DataFrame, table_version: int | None = None, **checks: Any) -> None:
        run_gate(spark, config, lake, suite, frame, job=job, table_version=table_version, **checks)

    return gate

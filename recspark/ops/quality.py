"""Great Expectations quality gates on the Delta tables, recorded in ``quality_results``.

Each suite is defined once per process in a cached Great Expectations context; the Spark
DataFrame is handed over at run time (``batch_parameters``), never stored. Properties GE cannot
express directly on the table (rows per user and the rows due to each, scores ordered by rank,
unavailable items) are computed in Spark as extra columns of the validated frame, so one
validation run covers a suite. The ``catalog`` suite checks the catalog's lines as read
(:func:`recspark.core.catalog.load_catalog`): every one well-formed.

A gate (:func:`run_gate`) validates, appends one summary row to ``quality_results``, refreshes
the Data Docs HTML (local lakes only) and, per ``quality.on_failure``, either stops the job with
:class:`QualityGateError` or only logs a warning.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recspark.core.catalog import CatalogRead, load_catalog
from recspark.core.config import Config
from recspark.core.config.operations import QUALITY_SUITES
from recspark.core.contract import EVENT_TYPES
from recspark.core.gates import Gate
from recspark.core.interactions import COUNT_COLUMNS
from recspark.core.secrets import redact
from recspark.core.tables import (
    EVENTS,
    INTERACTIONS,
    QUALITY_RESULTS,
    RECOMMENDATION_SOURCES,
    RECOMMENDATIONS,
    Lake,
    TableSpec,
)

log = logging.getLogger(__name__)

SUITES = QUALITY_SUITES
EVENTS_SUITE, INTERACTIONS_SUITE, RECOMMENDATIONS_SUITE, CATALOG_SUITE = SUITES
# The tables the suites of the same name check (the catalog suite checks the catalog file).
CHECKED_TABLES = (EVENTS, INTERACTIONS, RECOMMENDATIONS)

EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)  # ingest.min_event_time default
# Clocks drift and producers buffer; more than this ahead of now is a broken timestamp.
MAX_EVENT_TIME_AHEAD = timedelta(days=1)

# Derived columns of the validated recommendations frame (see _recommendations_batch).
ROWS_FOR_USER = "rows_for_user"
ROWS_DUE = "rows_due"  # top_n, or the eligible items left to the user when fewer
SCORE_ORDERED = "score_not_above_previous_rank"
ITEM_UNAVAILABLE = "item_unavailable"
# The derived column of the validated catalog lines: the reason and item of a malformed line.
MALFORMED_LINE = "malformed_line"

# Validation results kept in the file context: the Data Docs index is rebuilt from them on
# every gate, so an unbounded history (a gate per streaming micro-batch) would slow it down.
DOCS_HISTORY = 200
WHOLE_TABLE = "whole table"
FAILURE_TEXT_LIMIT = 4000
EXAMPLES_PER_FAILURE = 3


@dataclass(frozen=True)
class QualityResult:
    """The outcome of one suite on one frame; ``action`` is what a failure does (fail | warn)."""

    suite: str
    table_name: str
    success: bool
    evaluated: int
    failed: int
    failures: list[str] = field(default_factory=list)
    action: str = "fail"
    rows: int | None = None  # rows validated (None: not validated at all)
    scope: str = WHOLE_TABLE  # which rows: the whole table, or the rows a run wrote

    def summary(self) -> str:
        """One line for logs and error messages."""
        if self.success:
            rows = "" if self.rows is None else f" on {self.rows} rows, {self.scope}"
            return (
                f"quality suite '{self.suite}' passed on table {self.table_name} "
                f"({self.evaluated} expectations{rows})"
            )
        return (
            f"quality suite '{self.suite}' failed on table {self.table_name}: "
            f"{self.failed} of {self.evaluated} expectations failed: " + "; ".join(self.failures)
        )


class QualityGateError(RuntimeError):
    """A suite configured to ``fail`` did not pass; the message is one line naming what failed."""

    def __init__(self, result: QualityResult, table_version: int | None = None) -> None:
        where = result.table_name + (f" version {table_version}" if table_version is not None else "")
        super().__init__(
            f"quality gate '{result.suite}' failed on table {where}: "
            f"{result.failed} of {result.evaluated} expectations failed: " + "; ".join(result.failures)
        )
        self.result = result


# --------------------------------------------------------------------------------------------
# Suites


def _gx() -> Any:
    # Imported lazily: great_expectations is heavy, and most commands never validate.
    import great_expectations as gx

    return gx


def _events_expectations() -> list[Any]:
    gx = _gx()
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    is_rating = Column("event_type") == "rating"
    expectations = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
        for c in ("event_id", "user_id", "item_id", "event_time")
    ]
    expectations += [
        E.ExpectColumnValuesToBeInSet(
            column="event_type",
            value_set=list(EVENT_TYPES),
            description="event_type is one of " + ", ".join(EVENT_TYPES),
        ),
        E.ExpectColumnValuesToBeUnique(column="event_id", description="event_id is unique"),
        E.ExpectColumnValuesToBeBetween(
            column="event_time",
            min_value={"$PARAMETER": "min_event_time"},
            max_value={"$PARAMETER": "max_event_time"},
            description="event_time is within ingest.min_event_time and ingest.max_future_minutes",
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="value", row_condition=is_rating, description="ratings have a value"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="value",
            min_value=1,
            max_value=5,
            row_condition=is_rating,
            description="rating values are between 1 and 5",
        ),
    ]
    return expectations


def _interactions_expectations() -> list[Any]:
    E = _gx().expectations
    expectations = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
        for c in ("user_id", "item_id")
    ]
    expectations.append(
        E.ExpectCompoundColumnsToBeUnique(
            column_list=["user_id", "item_id"], description="one row per (user_id, item_id)"
        )
    )
    expectations += [
        E.ExpectColumnValuesToBeBetween(column=c, min_value=0, description=f"{c} is not negative")
        for c in ("strength", *COUNT_COLUMNS.values())
    ]
    return expectations


def _recommendations_expectations() -> list[Any]:
    E = _gx().expectations
    expectations = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
        for c in ("user_id", "rank", "item_id", "score")
    ]
    expectations += [
        E.ExpectCompoundColumnsToBeUnique(
            column_list=["user_id", "rank"], description="one row per (user_id, rank)"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="rank",
            min_value=1,
            max_value={"$PARAMETER": "top_n"},
            description="rank is between 1 and top_n",
        ),
        E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=ROWS_FOR_USER,
            column_B=ROWS_DUE,
            or_equal=True,
            description="every user has top_n rows, or every eligible item left to them",
        ),
        E.ExpectColumnValuesToBeInSet(
            column=SCORE_ORDERED,
            value_set=[True],
            description="scores do not increase with rank",
        ),
        E.ExpectColumnValuesToBeInSet(
            column=ITEM_UNAVAILABLE,
            value_set=[False],
            description="no unavailable item is recommended",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="source",
            value_set=list(RECOMMENDATION_SOURCES),
            description="source is one of " + ", ".join(RECOMMENDATION_SOURCES),
        ),
    ]
    return expectations


def _catalog_expectations() -> list[Any]:
    E = _gx().expectations
    return [
        E.ExpectColumnValuesToBeNull(column=MALFORMED_LINE, description="every catalog line is well-formed")
    ]


_SUITE_EXPECTATIONS: dict[str, Callable[[], list[Any]]] = {
    EVENTS_SUITE: _events_expectations,
    INTERACTIONS_SUITE: _interactions_expectations,
    RECOMMENDATIONS_SUITE: _recommendations_expectations,
    CATALOG_SUITE: _catalog_expectations,
}


# --------------------------------------------------------------------------------------------
# Contexts: one per process (and per lake when Data Docs are written), cached


class _QualityContext:
    """A GE context with every suite registered once; validation runs are serialised."""

    DATASOURCE = "recspark"

    def __init__(self, project_dir: Path | None) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.project_dir = project_dir
        self.docs_dir = project_dir / "data_docs" if project_dir is not None else None
        if project_dir is None:
            self.context = gx.get_context(mode="ephemeral")
        else:
            project_dir.mkdir(parents=True, exist_ok=True)
            self.context = gx.get_context(mode="file", project_root_dir=str(project_dir))
            _configure_docs_site(self.context, project_dir / "data_docs")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.lock = threading.RLock()
        # The frame is persisted (or not) by us around each run: GE would cache it for good.
        source = self.context.data_sources.add_or_update_spark(self.DATASOURCE, persist=False)
        self.definitions = {
            name: self._register(source, name, build()) for name, build in _SUITE_EXPECTATIONS.items()
        }

    def _register(self, source: Any, name: str, expectations: list[Any]) -> Any:
        """Add (or, in a file context written by an earlier run, replace) one suite."""
        gx = _gx()
        try:
            asset = source.get_asset(name)
        except LookupError:
            asset = source.add_dataframe_asset(name)
        try:
            batch = asset.get_batch_definition(name)
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe(name)
        suite = self.context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
        return self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )

    def validate(self, suite: str, frame: DataFrame, parameters: dict[str, Any]) -> Any:
        """Count bad rows with the whole suite; sample them only for the expectations that failed.

        Sampling unexpected values costs a Spark job per expectation even when there are none,
        so the usual, passing, run does not sample at all.
        """
        definition = self.definitions[suite]
        with self.lock:
            outcome = definition.run(
                batch_parameters={"dataframe": frame},
                expectation_parameters=parameters,
                result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
            )
            if not outcome.success:
                _add_examples(definition, outcome, frame, parameters)
            return outcome

    def keep_recent_results(self, keep: int) -> list[Any]:
        """Drop all but the newest ``keep`` stored results (and their Data Docs pages)."""
        store = self.context.validation_results_store
        with self.lock:
            keys = sorted(store.list_keys(), key=lambda k: k.run_id.run_time)
            stale, recent = keys[: max(len(keys) - keep, 0)], keys[max(len(keys) - keep, 0) :]
            for key in stale:
                store.remove_key(key)
                if self.docs_dir is not None:
                    page = self.docs_dir.joinpath("validations", *key.to_tuple())
                    page.with_name(page.name + ".html").unlink(missing_ok=True)
        return recent

    def build_docs(self, suite: str) -> Path:
        """Render the suite, its newest result and the index; return the index page.

        Only these pages are rendered: a full rebuild would redo every kept result each time.
        """
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
        )

        assert self.docs_dir is not None
        recent = self.keep_recent_results(DOCS_HISTORY)
        newest = [k for k in recent if k.expectation_suite_identifier.name == suite][-1:]
        with self.lock:
            self.context.build_data_docs(
                site_names=[self.DATASOURCE],
                resource_identifiers=[ExpectationSuiteIdentifier(name=suite), *newest],
            )
        return self.docs_dir / "index.html"


def _configure_docs_site(context: Any, docs_dir: Path) -> None:
    """One local Data Docs site under ``docs_dir`` (any other site a user added is removed)."""
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
    }
    sites = context.list_data_docs_sites()
    for name in [n for n in sites if n != _QualityContext.DATASOURCE]:
        context.delete_data_docs_site(name)
    if _QualityContext.DATASOURCE in sites:
        context.update_data_docs_site(_QualityContext.DATASOURCE, site)
    else:
        context.add_data_docs_site(_QualityContext.DATASOURCE, site)


def _add_examples(definition: Any, outcome: Any, frame: DataFrame, parameters: dict[str, Any]) -> None:
    """Fill ``partial_unexpected_list`` of the failed results (in memory, not in the store)."""
    gx = _gx()
    failed = [
        r
        for r in outcome.results
        if not r.success
        and not (r.exception_info or {}).get("raised_exception")
        and (r.result or {}).get("unexpected_count")
    ]
    if not failed:
        return
    expectations = []
    for result in failed:
        expectation = result.expectation_config.to_domain_obj()
        expectation.id = None  # a copy, free to join the (unsaved) sampling suite
        expectations.append(expectation)
    sample_suite = gx.ExpectationSuite(name=f"{definition.suite.name}_samples", expectations=expectations)
    try:
        batch = definition.data.get_batch(batch_parameters={"dataframe": frame})
        samples = batch.validate(
            sample_suite,
            result_format={
                "result_format": "BASIC",
                "partial_unexpected_count": EXAMPLES_PER_FAILURE,
            },
            expectation_parameters=parameters,
        )
    except Exception as exc:  # examples are a convenience; the verdict stands without them
        log.warning("quality: could not sample failing rows: %s", str(exc).splitlines()[0])
        return
    for result, sample in zip(failed, samples.results, strict=False):
        examples = (sample.result or {}).get("partial_unexpected_list")
        if examples:
            result.result["partial_unexpected_list"] = examples


_CONTEXTS: dict[Path | None, _QualityContext] = {}
_CONTEXTS_LOCK = threading.Lock()
_DOCS_NOTICE_GIVEN: set[str] = set()


def _context(project_dir: Path | None = None) -> _QualityContext:
    with _CONTEXTS_LOCK:
        if project_dir not in _CONTEXTS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                _CONTEXTS[project_dir] = _QualityContext(project_dir)
        return _CONTEXTS[project_dir]


def quality_dir(lake: Lake) -> Path | None:
    """``<lake.root>/_quality`` when the lake is on the local file system, else None."""
    root = lake.root
    if root.startswith("file://"):
        root = root.removeprefix("file://")
    elif "://" in root or root.startswith("file:"):
        return None
    return Path(root) / "_quality"


# --------------------------------------------------------------------------------------------
# Validation


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
        context = _context(project_dir)
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


def _events_batch(
    df: DataFrame,
    now: datetime | None = None,
    earliest: datetime = EARLIEST_EVENT_TIME,
    ahead: timedelta = MAX_EVENT_TIME_AHEAD,
) -> tuple[DataFrame, dict[str, Any]]:
    """``earliest`` and ``ahead``: the bounds ingest enforces (a gate must not fail on events
    ingest accepted, e.g. a 22-year history)."""
    now = now or datetime.now(timezone.utc)
    frame = df.select("event_id", "user_id", "item_id", "event_time", "event_type", "value")
    return frame, {"min_event_time": earliest, "max_event_time": now + ahead}


def _interactions_batch(df: DataFrame) -> tuple[DataFrame, dict[str, Any]]:
    return df.select("user_id", "item_id", "strength", *COUNT_COLUMNS.values()), {}


def _recommendations_batch(
    df: DataFrame,
    top_n: int,
    unavailable_items: DataFrame | None = None,
    min_rows: int | None = None,
    room: DataFrame | None = None,
) -> tuple[DataFrame, dict[str, Any]]:
    """The serving table plus per-row flags for the properties that span rows. The rows due to
    a user are ``top_n``, or fewer: ``room`` (user_id, room) for a user it names, else
    ``min_rows`` when given."""
    per_user = Window.partitionBy("user_id")
    previous = F.lag("score").over(per_user.orderBy("rank"))
    frame = df.select("user_id", "rank", "item_id", "score", "source")
    due = F.lit(top_n if min_rows is None else min(min_rows, top_n))
    if room is not None:
        frame = frame.join(room.select("user_id", F.col("room").alias("_room")), "user_id", "left")
        due = F.least(due, F.coalesce(F.col("_room"), due))
    frame = frame.withColumns(
        {
            ROWS_FOR_USER: F.count(F.lit(1)).over(per_user),
            ROWS_DUE: due.cast("long"),
            SCORE_ORDERED: F.coalesce(F.col("score") <= previous, F.lit(True)),
        }
    ).drop("_room")
    if unavailable_items is None:
        frame = frame.withColumn(ITEM_UNAVAILABLE, F.lit(False))
    else:
        flagged = (
            unavailable_items.select("item_id")
            .where(F.col("item_id").isNotNull())
            .distinct()
            .withColumn(ITEM_UNAVAILABLE, F.lit(True))
        )
        frame = frame.join(F.broadcast(flagged), "item_id", "left").withColumn(
            ITEM_UNAVAILABLE, F.coalesce(F.col(ITEM_UNAVAILABLE), F.lit(False))
        )
    return frame, {"top_n": top_n}


def _catalog_batch(df: DataFrame) -> tuple[DataFrame, dict[str, Any]]:
    """The catalog's lines (:attr:`CatalogRead.lines`), a malformed one named by reason and item."""
    named = F.concat_ws(" ", F.col("reason"), F.concat(F.lit("(item "), F.col("item_id"), F.lit(")")))
    return df.select(F.when(F.col("reason").isNotNull(), named).alias(MALFORMED_LINE)), {}


_BATCHES: dict[str, Callable[..., tuple[DataFrame, dict[str, Any]]]] = {
    EVENTS_SUITE: _events_batch,
    INTERACTIONS_SUITE: _interactions_batch,
    RECOMMENDATIONS_SUITE: _recommendations_batch,
    CATALOG_SUITE: _catalog_batch,
}


def validate(suite: str, df: DataFrame, project_dir: Path | None = None, **checks: Any) -> QualityResult:
    """Validate ``df`` with ``suite`` (nothing recorded, nothing raised): the gate's core.

    ``checks`` go to the suite: ``now``, ``earliest``, ``ahead`` for events; ``top_n`` (required),
    ``unavailable_items`` (an ``item_id`` column; None skips that check), ``room`` (user_id,
    room: the eligible items left to a user, for users who may have fewer than N) and
    ``min_rows`` (the rows due to every user, when the catalog is smaller than N) for
    recommendations; nothing for the catalog's lines.
    """
    if suite not in _BATCHES:
        raise ValueError(f"unknown quality suite {suite!r}; known: {', '.join(SUITES)}")
    frame, parameters = _BATCHES[suite](df, **checks)
    return _run_suite(suite, frame, parameters, project_dir)


# --------------------------------------------------------------------------------------------
# The gate


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
    if suite not in _BATCHES:
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
    _record(spark, lake, result, job, table_version)
    if project is not None:
        try:
            index = _context(project).build_docs(suite)
            log.info("quality: Data Docs at %s", index)
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


def _record(
    spark: SparkSession, lake: Lake, result: QualityResult, job: str, table_version: int | None
) -> None:
    """Append the result's summary row to ``quality_results`` (a blind append never conflicts);
    the failures quote offending values and errors, so they are stored redacted."""
    failures = redact("; ".join(result.failures))[:FAILURE_TEXT_LIMIT] or None
    row = (
        datetime.now(timezone.utc),
        job,
        result.suite,
        result.table_name,
        table_version,
        result.success,
        result.evaluated,
        result.failed,
        failures,
        result.action,
        result.rows,
        result.scope,
    )
    lake.append_row(spark, QUALITY_RESULTS, row)


def latest_results(spark: SparkSession, lake: Lake, suites: Sequence[str] = SUITES) -> DataFrame:
    """The newest ``quality_results`` row per suite and table (for reports)."""
    newest = Window.partitionBy("suite", "table_name").orderBy(F.col("validated_at").desc())
    return (
        lake.read(spark, QUALITY_RESULTS)
        .where(F.col("suite").isin(list(suites)))
        .withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .drop("_n")
    )

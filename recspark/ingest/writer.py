"""Write one planned micro-batch into ``events``, ``events_quarantine``, ``interactions``,
``recommendation_outcomes`` and ``ingest_metrics``, exactly once across crashes and restarts.

Why it is exactly once: the source is replayable and its offsets are in the checkpoint, so a
restarted query replays an unfinished micro-batch with the same input. Every write of a batch is
idempotent under the query's id and the batch id (Delta's ``txnAppId``/``txnVersion``), so a
replayed batch skips the writes that already committed and redoes only the rest. Deduplication
is against the ``events`` table itself, minus the rows this very batch wrote in an earlier
attempt, so a replay still counts its events in ``interactions`` exactly once. Attribution reads
the stored events the same way (:mod:`recspark.ingest.outcomes`), and its MERGE into
``recommendation_outcomes`` carries the batch's transaction id too: a replay that finds it
committed skips it, one that does not computes the same changes again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import CatalogError, read_catalog
from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.streaming import append_idempotent, idempotent_session_writes, streaming_app_id
from recspark.core.tables import (
    EVENTS,
    FORGOTTEN_USERS,
    INGEST_METRICS,
    INTERACTIONS,
    QUARANTINE,
    RECOMMENDATION_OUTCOMES,
    RECOMMENDATIONS,
    Lake,
)
from recspark.ingest.fold import fold_increments
from recspark.ingest.outcomes import (
    ENDED_VARIANT,
    NAMED_IDS_MAX,
    OUTSIDE_WINDOW,
    AttributionWindow,
    attributable,
    changed_rows,
    ended_variant_credits,
    issue_changes,
    merge_changes,
    outcome_changes,
    relevant,
    stored_relevant,
)
from recspark.ingest.parse import TimeBounds, parse_events
from recspark.ingest.plan import CONTENT, plan_batch

log = logging.getLogger(__name__)

# How long ingest trusts its reading of the variants the serving table holds.
LIVE_VARIANTS_SECONDS = 600.0


class IngestProgress:
    """What ingestion carries from batch to batch: the stream's id and the newest event time
    seen so far, which after a restart is read back from ``ingest_metrics``."""

    def __init__(self, lake: Lake, checkpoint: str, allowed_lateness_hours: float) -> None:
        self.lake = lake
        self.checkpoint = checkpoint
        self.allowed_lateness = timedelta(hours=allowed_lateness_hours)
        self.app_id: str | None = None
        self.max_event_time: datetime | None = None

    def resume(self, spark: SparkSession) -> str:
        """The stream's app id; on the first batch after a (re)start, also the newest event
        time the metrics recorded."""
        if self.app_id is None:
            self.app_id = streaming_app_id(spark, self.checkpoint, "ingest")
            row = self.lake.read(spark, INGEST_METRICS).agg(F.max("max_event_time")).first()
            self.max_event_time = row[0] if row else None
        return self.app_id

    def watermark(self) -> datetime | None:
        """Events older than this are late: the newest event time of earlier batches minus the
        allowed lateness (Spark's definition of an event-time watermark)."""
        return None if self.max_event_time is None else self.max_event_time - self.allowed_lateness

    def newest_with(self, batch_newest: datetime | None) -> datetime | None:
        """The newest event time once a batch whose newest is ``batch_newest`` is stored."""
        known = [t for t in (self.max_event_time, batch_newest) if t is not None]
        return max(known, default=None)


class EventBatchWriter:
    """The ``foreachBatch`` function: one micro-batch into all ingestion tables.

    Each step (``write_events``, ``write_interactions``...) is a method, so a test can simulate a
    crash between two writes by overriding one, as Delta's own exactly-once tests do."""

    def __init__(self, config: Config, lake: Lake, checkpoint: str) -> None:
        self.config = config
        self.lake = lake
        self.bounds = TimeBounds(config.ingest.earliest_event_time, config.ingest.max_future_minutes)
        self.progress = IngestProgress(lake, checkpoint, config.ingest.allowed_lateness_hours)
        self._tombstones_ensured = False
        self._live_variants: tuple[float, set[str | None]] | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        phases: dict[str, float] = {}
        with _phase(phases, "state"):
            app_id = self.progress.resume(spark)
            forgotten = self.forgotten_users(spark)
        parsed = parse_events(batch, self.bounds).withColumn("ingested_at", F.current_timestamp()).persist()
        try:
            with _phase(phases, "parse"):
                dates = _event_dates(parsed)
            stored = stored_events(
                self.lake.read(spark, EVENTS),
                dates,
                self.config.ingest.allowed_lateness_hours,
                app_id,
                batch_id,
            )
            plan = plan_batch(parsed, stored, forgotten)
            plan.decided = decided = plan.decided.persist()
            try:
                with _phase(phases, "dedup"):
                    counts = plan.counts(self.progress.watermark())
                with _phase(phases, "quarantine"):
                    if counts["quarantined_rows"]:
                        self.append(plan.quarantine(), QUARANTINE.name, app_id, batch_id)
                events = plan.events()
                with _phase(phases, "events"):
                    if counts["events_written"]:
                        self.write_events(events, app_id, batch_id)
                with _phase(phases, "merge"):
                    # A batch of impressions alone leaves interactions (and the refresh) alone.
                    touched = (
                        self.write_interactions(events, app_id, batch_id) if counts["interest_events"] else 0
                    )
                with _phase(phases, "outcomes"):
                    outcome_rows, outcome_issues = (
                        self.write_outcomes(events, app_id, batch_id)
                        if counts["impressions_written"] or counts["attributed_events"]
                        else (0, {})
                    )
            finally:
                decided.unpersist()
        finally:
            parsed.unpersist()
        newest = self.progress.newest_with(counts["max_event_time"])
        figures = {
            **counts,
            "interactions_touched": touched,
            "outcome_rows": outcome_rows,
            "outcome_issues": outcome_issues,
            "max_event_time": newest,
            "ingest_app_id": app_id,
            "batch_id": batch_id,
            "started_at": datetime.fromtimestamp(started, tz=timezone.utc).replace(tzinfo=None),
            "duration_seconds": round(time.time() - started, 3),
            "phase_seconds": phases,
        }
        self.append(_metrics_row(spark, figures), INGEST_METRICS.name, app_id, batch_id)
        self.progress.max_event_time = newest
        _log_batch(figures)

    def forgotten_users(self, spark: SparkSession) -> DataFrame:
        """The forget-user tombstones. The table is ensured once per stream, not per batch
        (creating or upgrading it reads its log several times)."""
        if not self._tombstones_ensured:
            self.lake.ensure(spark, FORGOTTEN_USERS)
            self._tombstones_ensured = True
        return self.lake.read(spark, FORGOTTEN_USERS)

    def write_events(self, events: DataFrame, app_id: str, batch_id: int) -> None:
        self.append(month_files(events), EVENTS.name, app_id, batch_id)

    def write_interactions(self, events: DataFrame, app_id: str, batch_id: int) -> int:
        """Fold the batch's per-pair aggregates into ``interactions``; return the pairs written
        (``fold_increments`` says why a replay counts each event once). The aggregates are
        checkpointed, not cached: Delta materialises a MERGE source it cannot prove
        deterministic from its plan, which would parse and dedup the batch again."""
        spark = events.sparkSession
        increments = aggregate_events(events, self.config.interactions).localCheckpoint(eager=True)
        self.lake.require(spark, INTERACTIONS)
        path = self.lake.path(INTERACTIONS.name)
        return fold_increments(spark, path, increments, self.config.interactions, app_id, batch_id)

    def write_outcomes(self, events: DataFrame, app_id: str, batch_id: int) -> tuple[int, dict[str, int]]:
        """Credit the batch's new impressions and attributed events in ``recommendation_outcomes``
        (:mod:`recspark.ingest.outcomes`); return the outcome rows changed and the changes to the
        issue counts."""
        spark = events.sparkSession
        window = AttributionWindow(timedelta(hours=self.config.outcomes.attribution_window_hours))
        batch = relevant(events).localCheckpoint(eager=True)
        scope = attributable(window)
        span = batch.agg(
            F.count_if(~scope),
            F.min(F.when(scope, F.col("served_at"))),
            F.max(F.when(scope, F.col("served_at"))),
            F.count_distinct(F.when(scope, F.col("recommendation_id"))),
        ).first()
        assert span is not None  # a global aggregate has one row
        issues = {OUTSIDE_WINDOW: int(span[0])}
        if not span[3]:
            return 0, {k: v for k, v in issues.items() if v}
        new = batch.where(scope)
        touched = new.select("recommendation_id").distinct()
        ids = [r[0] for r in touched.collect()] if span[3] <= NAMED_IDS_MAX else None
        stored = self.lake.read(spark, EVENTS)
        before = stored_relevant(stored, touched, ids, (span[1], span[2]), window, app_id, batch_id)
        before = before.localCheckpoint(eager=True)
        purchases = F.col("event_type") == "purchase"
        priced = not (new.where(purchases).isEmpty() and before.where(purchases).isEmpty())
        prices = self.prices(spark) if priced else None
        computed = outcome_changes(before, new, prices, window).localCheckpoint(eager=True)
        issues |= issue_changes(computed)
        changes = changed_rows(computed)
        live = self.live_variants(spark)
        if live is not None:
            issues[ENDED_VARIANT] = ended_variant_credits(changes, live)
        path = self.lake.path(RECOMMENDATION_OUTCOMES.name)
        with idempotent_session_writes(spark, app_id, batch_id):
            merge_changes(DeltaTable.forPath(spark, path), changes)
        return changes.count(), {k: v for k, v in issues.items() if v}

    def live_variants(self, spark: SparkSession) -> set[str | None] | None:
        """The variants the serving table holds now (None before anything is published), read
        at most once per ``LIVE_VARIANTS_SECONDS``: a scan of one column of every list."""
        now = time.monotonic()
        if self._live_variants is None or now - self._live_variants[0] > LIVE_VARIANTS_SECONDS:
            if not self.lake.exists(spark, RECOMMENDATIONS):
                return None
            lists = self.lake.read(spark, RECOMMENDATIONS)
            variants = (
                {r[0] for r in lists.select("variant").distinct().collect()}
                if "variant" in lists.columns
                else {None}
            )
            self._live_variants = (now, variants)
        return self._live_variants[1]

    def prices(self, spark: SparkSession) -> DataFrame | None:
        """The catalog's price per item, or None without a readable catalog (a broken catalog
        must not stall ingest: its purchases count as unpriced, and the log says why)."""
        if self.config.catalog.path is None:
            return None
        try:
            return read_catalog(spark, self.config.catalog.path).select("item_id", "price").localCheckpoint()
        except CatalogError as exc:
            log.warning("ingest: no prices for attributed purchases: %s", exc)
            return None

    def append(self, frame: DataFrame, table: str, app_id: str, batch_id: int) -> None:
        append_once(frame, self.lake.path(table), app_id, batch_id, stamp=table != INGEST_METRICS.name)


@contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    began = time.time()
    try:
        yield
    finally:
        phases[name] = round(time.time() - began, 2)


def _event_dates(parsed: DataFrame) -> list[date]:
    """The dates of the batch's valid events (bounded times only: a year-0 date never reaches
    Python, which could not hold it)."""
    row = parsed.agg(F.collect_set(F.when(F.col("reason").isNull(), F.to_date("event_time")))).first()
    return sorted(row[0]) if row and row[0] else []


def _metrics_row(spark: SparkSession, figures: dict) -> DataFrame:
    """The batch's ``ingest_metrics`` row (any figure the table has no column for is left out)."""
    columns = INGEST_METRICS.schema.fieldNames()
    return spark.createDataFrame([tuple(figures.get(c) for c in columns)], INGEST_METRICS.schema)


def month_files(events: DataFrame) -> DataFrame:
    """``events`` laid out as one file per month, sorted by time (so each file's event_date range
    is narrow and dedup skips it): a backfill of years writes a file per month, not one per day
    and task."""
    return events.repartition("event_month").sortWithinPartitions("event_month", "event_time")


def stored_events(
    events: DataFrame, dates: list[date], lateness_hours: float, app_id: str, batch_id: int
) -> DataFrame:
    """Stored events the batch could repeat: those dated within the allowed lateness of any of
    the batch's event dates (a retry may carry a slightly different time, across midnight),
    minus this very batch's own earlier attempt. The cost follows the batch's dates, not the
    table."""
    days = max(1, math.ceil(lateness_hours / 24))
    window = sorted({d + timedelta(days=k) for d in dates for k in range(-days, days + 1)})
    if not window:
        return events.where(F.lit(False)).select("event_id", *CONTENT)
    months = sorted({d.replace(day=1) for d in window})
    # The dates as a small table, not a literal list: a backfill's thousands of dates would go to
    # the JVM as literals one by one (docs/benchmarks.md). Months (a few hundred) stay literal.
    window_dates = events.sparkSession.createDataFrame([(d,) for d in window], "event_date date")
    return (
        # Partition pruning (month), then file skipping (the dates' range); older lakes have no month.
        events.where(F.col("event_month").isin(months) | F.col("event_month").isNull())
        .where(F.col("event_date").between(window[0], window[-1]))
        .join(F.broadcast(window_dates), "event_date", "left_semi")
        .where(~((F.col("ingest_app_id") == app_id) & (F.col("ingest_batch_id") == batch_id)))
        .select("event_id", *CONTENT)
    )


def append_once(frame: DataFrame, path: str, app_id: str, batch_id: int, stamp: bool) -> None:
    """Append ``frame`` unless this (query, batch) already did (Delta ``txnAppId``/``txnVersion``);
    ``stamp`` adds the ``ingest_app_id`` and ``ingest_batch_id`` columns."""
    if stamp:
        frame = frame.select(
            *frame.columns,
            F.lit(app_id).alias("ingest_app_id"),
            F.lit(batch_id).cast("long").alias("ingest_batch_id"),
        )
    append_idempotent(frame, path, app_id, batch_id)


def _log_batch(figures: dict) -> None:
    log.info(
        "ingest batch %d: input=%d quarantined=%d duplicates=%d late=%d forgotten=%d written=%d "
        "interactions=%d impressions=%d attributed=%d outcome_rows=%d issues=%s in %.1fs %s",
        figures["batch_id"],
        figures["input_rows"],
        figures["quarantined_rows"],
        figures["duplicate_rows"],
        figures["late_rows"],
        figures["forgotten_rows"],
        figures["events_written"],
        figures["interactions_touched"],
        figures["impressions_written"],
        figures["attributed_events"],
        figures["outcome_rows"],
        figures["outcome_issues"],
        figures["duration_seconds"],
        figures["phase_seconds"],
    )

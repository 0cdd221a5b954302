"""Structured Streaming ingestion: raw event lines -> ``events``, ``events_quarantine``,
``interactions`` and ``ingest_metrics``, exactly once across crashes and restarts.

Why it is exactly once: the source is replayable and its offsets are in the checkpoint, so a
restarted query replays an unfinished micro-batch with the same input. Every write of a batch is
idempotent under the query's id and the batch id (Delta's ``txnAppId``/``txnVersion``), so a
replayed batch skips the writes that already committed and redoes only the rest. Deduplication
of ``event_id`` is against the ``events`` table itself, minus the rows this very batch wrote in
an earlier attempt, so a replay still counts its events in ``interactions`` exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from recspark.core.config import Config
from recspark.core.interactions import aggregate_events, merge_increments
from recspark.core.streaming import (
    await_query,
    idempotent_session_writes,
    start_query,
    streaming_app_id,
)
from recspark.core.tables import (
    EVENTS,
    INGEST_METRICS,
    INTERACTIONS,
    QUARANTINE,
    Lake,
)
from recspark.ingest.parse import parse_events, quarantined, valid_events

log = logging.getLogger(__name__)

QUERY_NAME = "ingest_events"


def read_raw_stream(spark: SparkSession, config: Config) -> DataFrame:
    """The event source as a stream of (``raw`` line, ``source`` location); no schema inference."""
    settings = config.ingest
    if settings.source == "files":
        reader = spark.readStream.format("text")
        if settings.max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
        return reader.load(settings.path).select(
            F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source")
        )
    kafka = settings.kafka
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka.bootstrap_servers)
        .option("subscribe", kafka.topic)
        .option("startingOffsets", kafka.starting_offsets)
    )
    if kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", kafka.max_offsets_per_trigger)
    return reader.load().select(
        F.col("value").cast("string").alias("raw"),
        F.concat_ws(":", "topic", "partition", "offset").alias("source"),
    )


@dataclass
class BatchReport:
    batch_id: int
    input_rows: int
    quarantined_rows: int
    duplicate_rows: int
    events_written: int
    interactions_touched: int
    late_rows: int
    max_event_time: datetime | None
    duration_seconds: float
    phase_seconds: dict[str, float]


class EventBatchWriter:
    """The ``foreachBatch`` function: one micro-batch into all ingestion tables."""

    def __init__(self, config: Config, lake: Lake, checkpoint: str) -> None:
        self.config = config
        self.lake = lake
        self.checkpoint = checkpoint
        self._app_id: str | None = None
        # Tests use this to simulate a crash between two writes of a batch.
        self.before_interactions: Callable[[int], None] | None = None
        self.reports: list[BatchReport] = []
        self._phases: dict[str, float] = {}
        self._max_event_time: datetime | None = None
        self._max_event_time_loaded = False

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        began = time.time()
        try:
            yield
        finally:
            self._phases[name] = round(time.time() - began, 2)

    def _watermark(self) -> datetime | None:
        """Events older than this are late: the newest event time of earlier batches minus the
        allowed lateness (Spark's definition of an event-time watermark)."""
        if self._max_event_time is None:
            return None
        return self._max_event_time - timedelta(hours=self.config.ingest.allowed_lateness_hours)

    def _load_max_event_time(self, spark: SparkSession) -> None:
        """After a restart, carry on from the newest event time the metrics recorded."""
        if not self._max_event_time_loaded:
            row = self.lake.read(spark, INGEST_METRICS).agg(F.max("max_event_time")).first()
            self._max_event_time = row[0] if row else None
            self._max_event_time_loaded = True

    def app_id(self, spark: SparkSession) -> str:
        if self._app_id is None:
            self._app_id = streaming_app_id(spark, self.checkpoint, "ingest")
        return self._app_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        app_id = self.app_id(spark)
        self._load_max_event_time(spark)
        self._phases = {}
        now = F.current_timestamp()
        parsed = parse_events(batch).withColumn("ingested_at", now).persist()
        try:
            report = self._write(spark, parsed, app_id, batch_id, started)
        finally:
            parsed.unpersist()
        self.reports.append(report)
        self._max_event_time = report.max_event_time
        log.info(
            "ingest batch %d: input=%d quarantined=%d duplicates=%d late=%d written=%d interactions=%d "
            "in %.1fs %s",
            batch_id,
            report.input_rows,
            report.quarantined_rows,
            report.duplicate_rows,
            report.late_rows,
            report.events_written,
            report.interactions_touched,
            report.duration_seconds,
            report.phase_seconds,
        )

    def _write(
        self, spark: SparkSession, parsed: DataFrame, app_id: str, batch_id: int, started: float
    ) -> BatchReport:
        stamp = [
            F.lit(app_id).alias("ingest_app_id"),
            F.lit(batch_id).cast("long").alias("ingest_batch_id"),
        ]
        with self._phase("parse"):
            summary = _summarise(parsed, self._watermark())
        input_rows = summary["input_rows"]
        quarantined_rows = summary["quarantined_rows"]

        with self._phase("quarantine"):
            if quarantined_rows:
                bad = quarantined(parsed).select(
                    "raw",
                    "reason",
                    "ingested_at",
                    "source",
                    F.get_json_object("raw", "$.user_id").alias("user_id"),
                    *stamp,
                )
                self._append(bad, QUARANTINE.name, app_id, batch_id)

        good = valid_events(parsed).dropDuplicates(["event_id"])
        new_events = (
            self._not_seen_before(spark, good, summary["event_dates"], app_id, batch_id)
            .select(
                "event_id",
                "event_time",
                "user_id",
                "item_id",
                "event_type",
                "value",
                "session_id",
                "ingested_at",
                F.to_date("event_time").alias("event_date"),
                *stamp,
            )
            .persist()
        )
        try:
            with self._phase("dedup"):
                events_written = new_events.count()
            valid_rows = input_rows - quarantined_rows
            with self._phase("events"):
                if events_written:
                    self._append(new_events, EVENTS.name, app_id, batch_id)
            if self.before_interactions is not None:
                self.before_interactions(batch_id)
            interactions_touched = 0
            with self._phase("merge"):
                if events_written:
                    increments = aggregate_events(new_events, self.config.interactions)
                    with idempotent_session_writes(spark, app_id, batch_id):
                        interactions_touched = merge_increments(
                            self.lake.delta(spark, INTERACTIONS), increments, self.config.interactions
                        )
        finally:
            new_events.unpersist()

        report = BatchReport(
            batch_id=batch_id,
            input_rows=input_rows,
            quarantined_rows=quarantined_rows,
            duplicate_rows=valid_rows - events_written,
            events_written=events_written,
            interactions_touched=interactions_touched,
            late_rows=summary["late_rows"],
            max_event_time=_later(self._max_event_time, summary["max_event_time"]),
            duration_seconds=round(time.time() - started, 3),
            phase_seconds=dict(self._phases),
        )
        with self._phase("metrics"):
            self._append(_metrics_row(spark, app_id, report, started), INGEST_METRICS.name, app_id, batch_id)
        return report

    def _not_seen_before(
        self, spark: SparkSession, good: DataFrame, dates: list[date], app_id: str, batch_id: int
    ) -> DataFrame:
        """Events whose id is not yet in ``events`` (ignoring this batch's own earlier attempt).

        A retried event carries its original time, so only the partitions of the batch's event
        dates are read: for on-time events those within the allowed lateness of the newest
        event, for a late event its own day.
        """
        if not dates:
            return good
        stored = (
            self.lake.read(spark, EVENTS)
            .where(F.col("event_date").isin(dates))
            .where(~((F.col("ingest_app_id") == app_id) & (F.col("ingest_batch_id") == batch_id)))
            .select("event_id")
        )
        return good.join(stored, "event_id", "left_anti")

    def _append(self, frame: DataFrame, table: str, app_id: str, batch_id: int) -> None:
        (
            frame.write.format("delta")
            .mode("append")
            .option("txnAppId", app_id)
            .option("txnVersion", batch_id)
            .save(self.lake.path(table))
        )


def _summarise(parsed: DataFrame, watermark: datetime | None) -> dict[str, Any]:
    """Counts, event dates and newest event time of a parsed batch, in one Spark job."""
    valid = F.col("reason").isNull()
    late = valid & (F.col("event_time") < F.lit(watermark)) if watermark else F.lit(False)
    row = parsed.agg(
        F.count(F.lit(1)).alias("input_rows"),
        F.count_if(~valid).alias("quarantined_rows"),
        F.count_if(late).alias("late_rows"),
        F.collect_set(F.when(valid, F.to_date("event_time"))).alias("event_dates"),
        F.max(F.when(valid, F.col("event_time"))).alias("max_event_time"),
    ).first()
    assert row is not None  # a global aggregate always has one row
    return row.asDict()


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)


def _metrics_row(spark: SparkSession, app_id: str, report: BatchReport, started: float) -> DataFrame:
    return spark.createDataFrame(
        [
            (
                app_id,
                report.batch_id,
                _utc(started),
                report.duration_seconds,
                report.input_rows,
                report.quarantined_rows,
                report.duplicate_rows,
                report.events_written,
                report.interactions_touched,
                report.late_rows,
                report.max_event_time,
                report.phase_seconds,
            )
        ],
        INGEST_METRICS.schema,
    )


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).replace(tzinfo=None)


def ensure_ingest_tables(spark: SparkSession, lake: Lake) -> None:
    for spec in (EVENTS, QUARANTINE, INTERACTIONS, INGEST_METRICS):
        lake.ensure(spark, spec)


def start_ingest(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    once: bool,
    writer: EventBatchWriter | None = None,
) -> StreamingQuery:
    """Start the ingestion query; ``once`` processes what is available now and then stops."""
    ensure_ingest_tables(spark, lake)
    checkpoint = lake.checkpoint(QUERY_NAME)
    batch_writer = writer or EventBatchWriter(config, lake, checkpoint)
    stream = (
        read_raw_stream(spark, config)
        .writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(batch_writer)
    )
    query = start_query(stream, once, config.ingest.trigger_seconds)
    log.info("ingest query %s started (checkpoint %s, once=%s)", query.id, checkpoint, once)
    return query


def run_ingest(spark: SparkSession, config: Config, lake: Lake, once: bool) -> None:
    """Run the ingestion query until it finishes (``once``) or is stopped."""
    await_query(start_ingest(spark, config, lake, once), "ingest")

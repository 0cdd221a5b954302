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

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from recspark.config import Config
from recspark.events import parse_events, quarantined, valid_events
from recspark.interactions import aggregate_events, merge_increments
from recspark.tables import (
    EVENTS,
    INGEST_METRICS,
    INTERACTIONS,
    QUARANTINE,
    Lake,
)

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


def streaming_app_id(spark: SparkSession, checkpoint: str, job: str) -> str:
    """A Delta ``txnAppId`` for a streaming query: its id from the checkpoint's metadata, so it
    is stable across restarts and new when the checkpoint is deleted (then Delta must not
    mistake the fresh query's batch 0 for a replay of the old one)."""
    metadata = spark.read.text(f"{checkpoint}/metadata").first()
    if metadata is None:
        raise RuntimeError(f"streaming checkpoint {checkpoint} has no metadata")
    return f"recspark-{job}-{json.loads(metadata[0])['id']}"


@contextmanager
def idempotent_session_writes(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Make the DML inside (MERGE) a no-op if this (app_id, version) already committed."""
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


@dataclass
class BatchReport:
    batch_id: int
    input_rows: int
    quarantined_rows: int
    duplicate_rows: int
    events_written: int
    interactions_touched: int
    duration_seconds: float


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

    def app_id(self, spark: SparkSession) -> str:
        if self._app_id is None:
            self._app_id = streaming_app_id(spark, self.checkpoint, "ingest")
        return self._app_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        app_id = self.app_id(spark)
        now = F.current_timestamp()
        parsed = parse_events(batch).withColumn("ingested_at", now).persist()
        try:
            report = self._write(spark, parsed, app_id, batch_id, started)
        finally:
            parsed.unpersist()
        self.reports.append(report)
        log.info(
            "ingest batch %d: input=%d quarantined=%d duplicates=%d written=%d interactions=%d in %.1fs",
            batch_id,
            report.input_rows,
            report.quarantined_rows,
            report.duplicate_rows,
            report.events_written,
            report.interactions_touched,
            report.duration_seconds,
        )

    def _write(
        self, spark: SparkSession, parsed: DataFrame, app_id: str, batch_id: int, started: float
    ) -> BatchReport:
        stamp = [
            F.lit(app_id).alias("ingest_app_id"),
            F.lit(batch_id).cast("long").alias("ingest_batch_id"),
        ]
        input_rows = parsed.count()

        bad = quarantined(parsed).select(
            "raw",
            "reason",
            "ingested_at",
            "source",
            F.get_json_object("raw", "$.user_id").alias("user_id"),
            *stamp,
        )
        quarantined_rows = bad.count()
        if quarantined_rows:
            self._append(bad, QUARANTINE.name, app_id, batch_id)

        good = valid_events(parsed).dropDuplicates(["event_id"])
        new_events = (
            self._not_seen_before(spark, good, app_id, batch_id)
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
            events_written = new_events.count()
            valid_rows = input_rows - quarantined_rows
            if events_written:
                self._append(new_events, EVENTS.name, app_id, batch_id)
            if self.before_interactions is not None:
                self.before_interactions(batch_id)
            increments = aggregate_events(new_events, self.config.interactions)
            interactions_touched = increments.count() if events_written else 0
            if interactions_touched:
                with idempotent_session_writes(spark, app_id, batch_id):
                    merge_increments(
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
            duration_seconds=round(time.time() - started, 3),
        )
        self._append(_metrics_row(spark, app_id, report, started), INGEST_METRICS.name, app_id, batch_id)
        return report

    def _not_seen_before(self, spark: SparkSession, good: DataFrame, app_id: str, batch_id: int) -> DataFrame:
        """Events whose id is not yet in ``events`` (ignoring this batch's own earlier attempt).

        A retried event carries its original time, so only the partitions of the batch's event
        dates are read, whatever the event's lateness.
        """
        dates = [r[0] for r in good.select(F.to_date("event_time")).distinct().collect()]
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
    if once:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=f"{config.ingest.trigger_seconds} seconds")
    query = stream.start()
    log.info("ingest query %s started (checkpoint %s, once=%s)", query.id, checkpoint, once)
    return query


def run_ingest(spark: SparkSession, config: Config, lake: Lake, once: bool) -> None:
    """Run the ingestion query until it finishes (``once``) or is stopped."""
    query = start_ingest(spark, config, lake, once)
    query.awaitTermination()
    if query.exception() is not None:
        raise RuntimeError(f"ingest query failed: {query.exception()}")

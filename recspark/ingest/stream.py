"""The ingestion query: raw event lines from files or Kafka, one micro-batch at a time, into
the writer of :mod:`recspark.ingest.writer` (exactly once across crashes and restarts).

Files: producers write elsewhere and rename into the landing folder (a file is read once, when it
appears; lines appended later never arrive). Files are read whatever their modification time
(``ingest.max_file_age_days``): Spark's default skips files a week older than the newest one, which
is what a backfill copied with ``cp -p`` looks like. A new checkpoint over a landing history reads
it in batches of ``ingest.max_files_per_trigger`` files.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from recspark.core.config import Config
from recspark.core.streaming import (
    await_query,
    start_query,
)
from recspark.core.tables import (
    EVENTS,
    INGEST_METRICS,
    QUARANTINE,
    RECOMMENDATION_OUTCOMES,
    Lake,
    interactions_table,
)
from recspark.ingest.writer import EventBatchWriter

log = logging.getLogger(__name__)

QUERY_NAME = "ingest_events"


def read_raw_stream(spark: SparkSession, config: Config) -> DataFrame:
    """The event source as a stream of (``raw`` line, ``source`` location); no schema inference."""
    settings = config.ingest
    if settings.source == "files":
        reader = spark.readStream.format("text").option("maxFileAge", f"{int(settings.max_file_age_days)}d")
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
        .option("failOnDataLoss", str(kafka.fail_on_data_loss).lower())
    )
    if kafka.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", kafka.max_offsets_per_trigger)
    return reader.load().select(
        F.col("value").cast("string").alias("raw"),
        F.concat_ws(":", "topic", "partition", "offset").alias("source"),
    )


def ensure_ingest_tables(spark: SparkSession, config: Config, lake: Lake) -> None:
    interactions = interactions_table(config.ingest.deletion_vectors)
    for spec in (EVENTS, QUARANTINE, interactions, INGEST_METRICS, RECOMMENDATION_OUTCOMES):
        lake.ensure(spark, spec)


def start_ingest(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    once: bool,
    writer: EventBatchWriter | None = None,
) -> StreamingQuery:
    """Start the ingestion query; ``once`` processes what is available now and then stops."""
    ensure_ingest_tables(spark, config, lake)
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

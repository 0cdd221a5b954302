"""Loading a trusted, already-typed history straight into the lake, without the stream.

For benchmarks and tests that need years of events in seconds: the frame is assumed valid and
unique (nothing is quarantined or deduplicated), and ``interactions`` is rebuilt from all events.
Real shops' files go through `recspark ingest`, which checks every line.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.tables import (
    EVENTS,
    EVENTS_SCHEMA,
    INTERACTIONS,
    Lake,
    interactions_table,
    with_event_partitions,
)


def load_history(spark: SparkSession, config: Config, lake: Lake, events: DataFrame, loader: str) -> int:
    """Append ``events`` (the contract's columns, ``event_time`` castable to a timestamp, a NaN
    ``value`` meaning none) to ``events`` and rebuild ``interactions``; returns the pair count.
    ``loader`` names the load in ``ingest_app_id``."""
    typed = events.select(
        "event_id",
        F.col("event_time").cast("timestamp").alias("event_time"),
        "user_id",
        "item_id",
        "event_type",
        F.when(F.isnan("value"), None).otherwise(F.col("value")).alias("value"),
        "session_id",
        F.current_timestamp().alias("ingested_at"),
        F.lit(loader).alias("ingest_app_id"),
        F.lit(0).cast("long").alias("ingest_batch_id"),
    )
    lake.ensure(spark, EVENTS)
    partitioned = with_event_partitions(typed)
    # The columns a history does not carry (impressions' fields) are stored null.
    stored = partitioned.select(
        *[
            F.col(f.name) if f.name in partitioned.columns else F.lit(None).cast(f.dataType).alias(f.name)
            for f in EVENTS_SCHEMA
        ]
    )
    stored.write.format("delta").mode("append").save(lake.path(EVENTS.name))
    lake.ensure(spark, interactions_table(config.ingest.deletion_vectors))
    aggregate_events(lake.read(spark, EVENTS), config.interactions).write.format("delta").mode(
        "overwrite"
    ).save(lake.path(INTERACTIONS.name))
    return lake.read(spark, INTERACTIONS).count()

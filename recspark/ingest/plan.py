"""One micro-batch, decided as DataFrames: which lines are quarantined, which events are new,
which are retries of stored events, which belong to users who asked to be forgotten.

A pure function of its inputs (the parsed batch, the stored events it could repeat, the
forgotten users, the watermark), so every rule is testable on inline frames; the writer
(:mod:`recspark.ingest.writer`) reads those inputs and writes what the plan decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.contract import ATTRIBUTED_EVENT_TYPES, IMPRESSION, INTEREST_EVENT_TYPES
from recspark.core.privacy import user_hash
from recspark.core.tables import with_event_partitions

# What makes two copies of an event_id the same event (a producer's retry) rather than two.
# (In the events table's column order.)
CONTENT = (
    "event_time",
    "user_id",
    "item_id",
    "event_type",
    "value",
    "session_id",
    "recommendation_id",
    "items",
    "list",
    "model_version",
    "variant",
    "sources",
)

NEW = "new"
DUPLICATE = "duplicate"
CONFLICT = "conflict"
FORGOTTEN = "forgotten"
BAD = "bad"

CONFLICT_REASON = "event_id already used by an event with different content"


def _same_content(left: str, right: str) -> Column:
    same = F.lit(True)
    for column in CONTENT:
        same = same & F.col(f"{left}.{column}").eqNullSafe(F.col(f"{right}.{column}"))
    return same


@dataclass
class BatchPlan:
    """``decided``: every input line once, with its ``fate`` (new, duplicate, conflict,
    forgotten, bad) and, for quarantined lines, a ``reason``. The writer persists it and takes
    the tables' rows and the batch's counts from it."""

    decided: DataFrame

    def events(self) -> DataFrame:
        """The new events (each event_id once), with their event date."""
        new = self.decided.where(F.col("fate") == NEW)
        return with_event_partitions(new.select("event_id", *CONTENT, "ingested_at"))

    def quarantine(self) -> DataFrame:
        """Broken lines and conflicting reuses of an event_id, with the raw text and why."""
        return self.decided.where(F.col("fate").isin(BAD, CONFLICT)).select(
            F.make_valid_utf8("raw").alias("raw"),  # readable by any Parquet reader
            "reason",
            "ingested_at",
            "source",
            F.coalesce("user_id", F.get_json_object("raw", "$.user_id")).alias("user_id"),
        )

    def counts(self, watermark: datetime | None) -> dict:
        """The batch's figures in one Spark job (what ingest_metrics records; ``interest_events``,
        the new events interactions fold, tells the writer whether to fold at all)."""
        fate = F.col("fate")
        valid = ~fate.isin(BAD, CONFLICT)
        late = (fate == NEW) & (F.col("event_time") < F.lit(watermark)) if watermark else F.lit(False)
        kind = F.col("event_type")
        new_interest = (fate == NEW) & kind.isin(*INTEREST_EVENT_TYPES)
        row = self.decided.agg(
            F.count(F.lit(1)).alias("input_rows"),
            F.count_if(~valid).alias("quarantined_rows"),
            F.count_if(fate == DUPLICATE).alias("duplicate_rows"),
            F.count_if(fate == FORGOTTEN).alias("forgotten_rows"),
            F.count_if(fate == NEW).alias("events_written"),
            F.count_if(new_interest).alias("interest_events"),
            F.count_if((fate == NEW) & (kind == IMPRESSION)).alias("impressions_written"),
            F.count_if(
                (fate == NEW) & F.col("recommendation_id").isNotNull() & kind.isin(*ATTRIBUTED_EVENT_TYPES)
            ).alias("attributed_events"),
            F.count_if(late).alias("late_rows"),
            F.max(F.when(fate == NEW, F.col("event_time"))).alias("max_event_time"),
        ).first()
        assert row is not None  # a global aggregate always has one row
        return row.asDict()


def plan_batch(parsed: DataFrame, stored: DataFrame, forgotten: DataFrame) -> BatchPlan:
    """Decide the fate of every line of ``parsed`` (the output of ``parse_events`` plus
    ``ingested_at`` and ``source``).

    ``stored``: the stored events the batch could repeat (event_id and the content columns).
    ``forgotten``: user_hash, forgotten_at of users who asked to be forgotten.

    - A line that breaks the contract is ``bad`` (its reason from parsing).
    - Copies of one event_id in the batch: the earliest (by time, then text) speaks for the id;
      a copy with the same content is a ``duplicate``, one with other content a ``conflict``.
    - An id already stored is a ``duplicate`` if the content matches, else a ``conflict``: the
      stored event stays, the new text goes to the quarantine with the reason.
    - An event of a forgotten user dated no later than the forget is ``forgotten``: dropped and
      counted, so replaying old files cannot bring the user back. (Their broken lines too.)
    """
    bad = parsed.where(F.col("reason").isNotNull())
    valid = parsed.where(F.col("reason").isNull())
    # One window over the batch's copies of each id gives both the rank and the canonical copy's
    # content (the first by time, then text): no second window or self-join (a backfill's 80k
    # lines went through three shuffles by event_id and a sort-merge join before).
    by_id = Window.partitionBy("event_id").orderBy("event_time", "raw")
    canonical = [
        F.first(column, ignorenulls=False).over(by_id).alias(f"_first_{column}") for column in CONTENT
    ]
    ranked = valid.select("*", F.row_number().over(by_id).alias("_n"), *canonical)
    same_as_first = F.lit(True)
    for column in CONTENT:
        same_as_first = same_as_first & F.col(f"b.{column}").eqNullSafe(F.col(f"b._first_{column}"))
    known = stored.select("event_id", *CONTENT).dropDuplicates(["event_id"]).alias("s")
    versus_stored = (
        ranked.alias("b")
        .join(known, F.col("b.event_id") == F.col("s.event_id"), "left")
        .select(
            *[F.col(f"b.{column}") for column in valid.columns],
            F.when(F.col("b._n") > 1, F.when(same_as_first, F.lit(DUPLICATE)).otherwise(F.lit(CONFLICT)))
            .when(F.col("s.event_id").isNull(), F.lit(NEW))
            .when(_same_content("b", "s"), F.lit(DUPLICATE))
            .otherwise(F.lit(CONFLICT))
            .alias("fate"),
        )
    )
    gone = forgotten.groupBy("user_hash").agg(F.max("forgotten_at").alias("_forgotten_at"))
    valid_lines = (
        versus_stored.withColumn("_hash", user_hash(F.col("user_id")))
        .join(F.broadcast(gone), F.col("_hash") == F.col("user_hash"), "left")
        .withColumn(
            "fate",
            F.when(
                (F.col("fate") == NEW) & (F.col("event_time") <= F.col("_forgotten_at")), F.lit(FORGOTTEN)
            ).otherwise(F.col("fate")),
        )
        .drop("_hash", "user_hash", "_forgotten_at")
    )
    bad_lines = (
        bad.withColumn("_hash", user_hash(F.coalesce("user_id", F.get_json_object("raw", "$.user_id"))))
        .join(F.broadcast(gone), F.col("_hash") == F.col("user_hash"), "left")
        .withColumn(
            "fate", F.when(F.col("_forgotten_at").isNotNull(), F.lit(FORGOTTEN)).otherwise(F.lit(BAD))
        )
        .drop("_hash", "user_hash", "_forgotten_at")
    )
    decided = valid_lines.withColumn(
        "reason", F.when(F.col("fate") == CONFLICT, F.lit(CONFLICT_REASON)).otherwise(F.col("reason"))
    ).unionByName(bad_lines)
    return BatchPlan(decided)

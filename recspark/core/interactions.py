"""Per user-item interaction aggregates: the implicit-feedback signal ALS trains on.

``signal`` is the weighted sum of a pair's events, each decayed to the pair's
``last_event_time`` (when a half-life is configured). Anchoring at the pair's own latest event
makes the aggregate order-independent, so folding batches in incrementally with MERGE gives the
same table as :func:`aggregate_events` over all history, late events included.
"""

from __future__ import annotations

from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.config import INTEREST_EVENT_TYPES, InteractionsConfig
from recspark.core.streaming import append_idempotent, commit_user_metadata, idempotent_session_writes

COUNT_COLUMNS = {event_type: f"{event_type}_count" for event_type in INTEREST_EVENT_TYPES}
SECONDS_PER_DAY = 86_400.0
PAIR_KEYS = ["user_id", "item_id"]
# The Delta transaction id of a batch's new pairs is the stream's own with this suffix.
NEW_PAIRS_APP_SUFFIX = "-new-pairs"
# How many of the newest commits are searched for a fold's own MERGE (others may land between).
FOLD_HISTORY_DEPTH = 20


def _decay(age_seconds: Column, config: InteractionsConfig) -> Column:
    """Weight of evidence ``age_seconds`` old: halves every ``half_life_days``."""
    if config.half_life_days is None:
        return F.lit(1.0)
    return F.pow(F.lit(0.5), age_seconds / F.lit(config.half_life_days * SECONDS_PER_DAY))


def event_weight(config: InteractionsConfig) -> Column:
    """What one event adds to its pair's signal, before decay."""
    weight = F.lit(0.0)
    for event_type, w in config.weights.items():
        if event_type == "rating":
            scaled = (F.col("value") - config.rating_center) / (5.0 - config.rating_center)
            contribution = F.lit(w) * scaled
        else:
            contribution = F.lit(w)
        weight = F.when(F.col("event_type") == event_type, contribution).otherwise(weight)
    return weight


def _seconds_between(later: Column, earlier: Column) -> Column:
    return later.cast("double") - earlier.cast("double")


def interest_events(events: DataFrame) -> DataFrame:
    """The events that say something about a user's interest in an item: every type but
    impressions (a list shown is not interest in its items, nor in the empty item_id it carries)."""
    return events.where(F.col("event_type").isin(*INTEREST_EVENT_TYPES))


def aggregate_events(events: DataFrame, config: InteractionsConfig) -> DataFrame:
    """One row per (user, item) from a set of events, in the ``interactions`` schema; events
    that are not interest (impressions) are left out."""
    with_last = (
        interest_events(events)
        .withColumn("_pair_last", F.max("event_time").over(Window.partitionBy("user_id", "item_id")))
        .withColumn(
            "_contribution",
            event_weight(config) * _decay(_seconds_between(F.col("_pair_last"), F.col("event_time")), config),
        )
    )
    counts = [
        F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).cast("long").alias(c)
        for t, c in COUNT_COLUMNS.items()
    ]
    aggregated = with_last.groupBy(*PAIR_KEYS).agg(
        *counts,
        F.max_by(
            F.when(F.col("event_type") == "rating", F.col("value")),
            F.when(F.col("event_type") == "rating", F.col("event_time")),
        ).alias("last_rating"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
        F.sum("_contribution").alias("signal"),
    )
    return aggregated.select(
        *PAIR_KEYS,
        *COUNT_COLUMNS.values(),
        "last_rating",
        "first_event_time",
        "last_event_time",
        "signal",
        F.greatest(F.col("signal"), F.lit(0.0)).alias("strength"),
        F.current_timestamp().alias("updated_at"),
    )


def holds_any_pair(interactions: DataFrame, increments: DataFrame) -> bool:
    """Whether ``interactions`` already holds any (user, item) pair of ``increments``. It stops at
    the first pair found, so a batch of returning users costs a short scan. The batch's keys are
    broadcast, as the MERGE broadcasts the batch: the table is scanned, never shuffled."""
    keys = F.broadcast(increments.select(*PAIR_KEYS))
    return not interactions.select(*PAIR_KEYS).join(keys, PAIR_KEYS, "left_semi").isEmpty()


def fold_increments(
    spark: SparkSession,
    path: str,
    increments: DataFrame,
    config: InteractionsConfig,
    app_id: str,
    version: int,
) -> int:
    """Fold per-pair aggregates of new events into the ``interactions`` table at ``path``, once
    per (``app_id``, ``version``); return the pairs updated or added.

    Two commits: a MERGE with a matched clause only updates the pairs the table holds, then the
    pairs it did not update (read from that commit's change feed) are appended. One MERGE with
    an insert clause as well joined the batch LEFT OUTER the table, a join Spark cannot
    broadcast, so every batch shuffled every row of the table (523 MiB at 4M pairs): its cost
    followed the table. A matched-only MERGE broadcasts the batch, and the table is scanned once.

    A batch whose pairs are all new (a first backfill, new users, a new item in a cart) is
    appended in one commit: nothing to update, so an empty MERGE would only add a scan and a
    commit to the batch.

    Why a replay counts each event once: the first commit carries (``app_id``, ``version``): the
    MERGE (which Delta commits even when it matches nothing), or the append of a batch of new
    pairs. A replay then holds some of its pairs, takes the MERGE path, and Delta skips the
    MERGE as committed; the new pairs are then the batch's pairs the table lacks (a scan, on
    replays only), which is none if their append (``app_id`` + ``NEW_PAIRS_APP_SUFFIX``, or the
    first commit) is there."""
    table = spark.read.format("delta").load(path)
    if not holds_any_pair(table, increments):
        append_idempotent(increments, path, app_id, version)
        return increments.count()
    marker = f"recspark fold {app_id} {version}"
    with idempotent_session_writes(spark, app_id, version), commit_user_metadata(spark, marker):
        updated = _update_known_pairs(DeltaTable.forPath(spark, path), increments, config)
    # A skipped MERGE committed nothing, so ``table`` still shows what the replay needs to scan.
    held = table.select(*PAIR_KEYS) if updated is None else _updated_pairs(spark, path, marker)
    new = increments.join(held, PAIR_KEYS, "left_anti").localCheckpoint(eager=True)
    new_pairs = new.count()
    if new_pairs:
        append_idempotent(new, path, app_id + NEW_PAIRS_APP_SUFFIX, version)
    return (updated or 0) + new_pairs


def _updated_pairs(spark: SparkSession, path: str, marker: str) -> DataFrame:
    """The pairs the commit stamped ``marker`` updated, from its change feed (a few small files)."""
    commit = (
        DeltaTable.forPath(spark, path)
        .history(FOLD_HISTORY_DEPTH)
        .where(F.col("userMetadata") == marker)
        .select("version")
        .first()
    )
    if commit is None:
        raise RuntimeError(f"the MERGE stamped {marker!r} is not among the newest commits of {path}")
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", commit[0])
        .option("endingVersion", commit[0])
        .load(path)
    )
    return changes.where(F.col("_change_type") == "update_postimage").select(*PAIR_KEYS)


def _update_known_pairs(target: DeltaTable, increments: DataFrame, config: InteractionsConfig) -> int | None:
    """Add the batch's aggregates to the pairs the table holds; the pairs updated, or None when
    Delta skipped the MERGE as already committed."""
    t, s = "t", "s"
    last = f"greatest({t}.last_event_time, {s}.last_event_time)"
    combined_signal = _combine_signal_sql(t, s, last, config)
    updates = {c: f"{t}.{c} + {s}.{c}" for c in COUNT_COLUMNS.values()}
    updates |= {
        "last_rating": (
            f"CASE WHEN {s}.last_rating IS NOT NULL AND ({t}.last_rating IS NULL "
            f"OR {s}.last_event_time >= {t}.last_event_time) THEN {s}.last_rating "
            f"ELSE {t}.last_rating END"
        ),
        "first_event_time": f"least({t}.first_event_time, {s}.first_event_time)",
        "last_event_time": last,
        "signal": combined_signal,
        "strength": f"greatest({combined_signal}, 0.0)",
        "updated_at": f"{s}.updated_at",
    }
    metrics = (
        target.alias(t)
        .merge(increments.alias(s), f"{t}.user_id = {s}.user_id AND {t}.item_id = {s}.item_id")
        .whenMatchedUpdate(set=updates)
        .execute()
        .first()
    )
    return int(metrics["num_affected_rows"]) if metrics is not None else None


def _combine_signal_sql(t: str, s: str, last: str, config: InteractionsConfig) -> str:
    if config.half_life_days is None:
        return f"({t}.signal + {s}.signal)"
    half_life = config.half_life_days * SECONDS_PER_DAY

    def decayed(side: str) -> str:
        age = f"(CAST({last} AS DOUBLE) - CAST({side}.last_event_time AS DOUBLE))"
        return f"{side}.signal * pow(0.5, {age} / {half_life})"

    return f"({decayed(t)} + {decayed(s)})"


def strength_as_of(
    interactions: DataFrame, as_of: datetime | Column, config: InteractionsConfig
) -> DataFrame:
    """Interactions with ``strength`` decayed from each pair's last event to ``as_of``."""
    when = as_of if isinstance(as_of, Column) else F.lit(as_of).cast("timestamp")
    age = F.greatest(_seconds_between(when, F.col("last_event_time")), F.lit(0.0))
    return interactions.withColumn("strength", F.greatest(F.col("signal") * _decay(age, config), F.lit(0.0)))

"""Per user-item interaction aggregates: the implicit-feedback signal ALS trains on.

``signal`` is the weighted sum of a pair's events, each decayed to the pair's
``last_event_time`` (when a half-life is configured). Anchoring at the pair's own latest event
makes the aggregate order-independent, so folding batches in incrementally with MERGE
(:mod:`recspark.ingest.fold`) gives the same table as :func:`aggregate_events` over all history,
late events included.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.config.ingest import InteractionsConfig
from recspark.core.contract import INTEREST_EVENT_TYPES

COUNT_COLUMNS = {event_type: f"{event_type}_count" for event_type in INTEREST_EVENT_TYPES}
SECONDS_PER_DAY = 86_400.0
PAIR_KEYS = ["user_id", "item_id"]


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


def strength_as_of(
    interactions: DataFrame, as_of: datetime | Column, config: InteractionsConfig
) -> DataFrame:
    """Interactions with ``strength`` decayed from each pair's last event to ``as_of``."""
    when = as_of if isinstance(as_of, Column) else F.lit(as_of).cast("timestamp")
    age = F.greatest(_seconds_between(when, F.col("last_event_time")), F.lit(0.0))
    return interactions.withColumn("strength", F.greatest(F.col("signal") * _decay(age, config), F.lit(0.0)))

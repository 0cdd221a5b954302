"""The status report's shoppers: what they did with the lists served on the newest days of
``recommendation_outcomes``, and the attribution issues counted by ingest."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.tables import INGEST_METRICS, RECOMMENDATION_OUTCOMES, Lake

# recspark status shows what shoppers did with the lists served on the newest days of outcomes.
OUTCOME_DAYS = 7


@dataclass(frozen=True)
class OutcomeState:
    """What shoppers did with one model version's (and variant's) lists over the days shown:
    ``ctr`` = clicks / impressions, ``conversion`` = purchases / impressions (per shown item)."""

    model_version: str | None
    variant: str | None
    first_day: str
    last_day: str
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float

    @property
    def ctr(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None

    @property
    def conversion(self) -> float | None:
        return self.purchases / self.impressions if self.impressions else None


def gather_outcomes(spark: SparkSession, lake: Lake) -> list[OutcomeState]:
    """Per model version and variant, the outcomes of the lists served on the newest
    ``OUTCOME_DAYS`` days of ``recommendation_outcomes`` (relative to its newest day, so a
    stalled log still shows its last days)."""
    if not lake.exists(spark, RECOMMENDATION_OUTCOMES):
        return []
    outcomes = lake.read(spark, RECOMMENDATION_OUTCOMES)
    newest = outcomes.agg(F.max("day")).first()
    if newest is None or newest[0] is None:
        return []
    recent = outcomes.where(F.col("day") > F.date_sub(F.lit(newest[0]), OUTCOME_DAYS))
    rows = (
        recent.groupBy("model_version", "variant")
        .agg(
            F.min("day").cast("string").alias("first_day"),
            F.max("day").cast("string").alias("last_day"),
            *[F.sum(c).cast("long").alias(c) for c in ("impressions", "clicks", "add_to_carts", "purchases")],
            F.sum("revenue").alias("revenue"),
        )
        .orderBy(F.col("model_version").desc_nulls_last(), "variant")
        .collect()
    )
    return [OutcomeState(**r.asDict()) for r in rows]


def gather_outcome_issues(spark: SparkSession, lake: Lake) -> dict[str, int]:
    """``ingest_metrics.outcome_issues`` summed over every batch, by reason; zero counts left out."""
    if not lake.exists(spark, INGEST_METRICS):
        return {}
    metrics = lake.read(spark, INGEST_METRICS)
    if "outcome_issues" not in metrics.columns:
        return {}
    rows = (
        metrics.select(F.explode("outcome_issues").alias("reason", "events"))
        .groupBy("reason")
        .agg(F.sum("events").alias("events"))
        .where(F.col("events") != 0)
        .orderBy("reason")
        .collect()
    )
    return {r["reason"]: int(r["events"]) for r in rows}

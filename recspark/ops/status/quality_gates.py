"""The status report's quality gates: the newest ``quality_results`` row per suite and table."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.tables import QUALITY_RESULTS, Lake
from recspark.ops.quality.results_table import latest_results


@dataclass(frozen=True)
class GateState:
    """The newest quality gate result of one suite on one table."""

    suite: str
    table: str
    table_version: int | None
    validated_at: float
    success: bool
    action: str
    failures: str | None
    rows_validated: int | None  # None: recorded before the column existed
    scope: str | None  # "whole table", or "rows written since ..." (a run's own rows)


def gather_gates(spark: SparkSession, lake: Lake) -> list[GateState]:
    """The newest result per suite and table, by suite then table (none before any gate ran)."""
    if not lake.exists(spark, QUALITY_RESULTS):
        return []
    results = latest_results(spark, lake)
    # Columns added later: a lake whose gates all ran before them has none yet.
    later = {"rows_validated": "long", "scope": "string"}
    results = results.withColumns(
        {c: F.lit(None).cast(t) for c, t in later.items() if c not in results.columns}
    )
    latest = (
        results.select(
            "suite",
            F.col("table_name").alias("table"),
            "table_version",
            F.col("validated_at").cast("double").alias("validated_at"),
            "success",
            "action",
            "failures",
            "rows_validated",
            "scope",
        )
        .orderBy("suite", "table")
        .collect()
    )
    return [GateState(**r.asDict()) for r in latest]

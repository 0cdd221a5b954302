"""The ``quality_results`` table: one row appended per gate, and the newest per suite and table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recspark.core.secrets import redact
from recspark.core.tables import QUALITY_RESULTS, Lake
from recspark.ops.quality.result import QualityResult
from recspark.ops.quality.suites import SUITES

FAILURE_TEXT_LIMIT = 4000


def record_result(
    spark: SparkSession, lake: Lake, result: QualityResult, job: str, table_version: int | None
) -> None:
    """Append the result's summary row to ``quality_results`` (a blind append never conflicts);
    the failures quote offending values and errors, so they are stored redacted."""
    failures = redact("; ".join(result.failures))[:FAILURE_TEXT_LIMIT] or None
    row = (
        datetime.now(timezone.utc),
        job,
        result.suite,
        result.table_name,
        table_version,
        result.success,
        result.evaluated,
        result.failed,
        failures,
        result.action,
        result.rows,
        result.scope,
    )
    lake.append_row(spark, QUALITY_RESULTS, row)


def latest_results(spark: SparkSession, lake: Lake, suites: Sequence[str] = SUITES) -> DataFrame:
    """The newest ``quality_results`` row per suite and table (for reports)."""
    newest = Window.partitionBy("suite", "table_name").orderBy(F.col("validated_at").desc())
    return (
        lake.read(spark, QUALITY_RESULTS)
        .where(F.col("suite").isin(list(suites)))
        .withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .drop("_n")
    )

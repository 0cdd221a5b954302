"""The status report's job runs: the newest rows of ``job_runs`` (written by
:mod:`recspark.ops.runs`)."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.tables import JOB_RUNS, Lake

REPORT_RUNS = 10


@dataclass(frozen=True)
class RunState:
    """One ``job_runs`` row (times as epoch seconds)."""

    run_id: str
    job: str
    status: str
    started_at: float
    ended_at: float | None
    rows_in: int | None
    rows_out: int | None
    model_version: str | None
    error: str | None
    catalog_malformed_lines: int | None  # None: no catalog read, or recorded before the column

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


def gather_runs(spark: SparkSession, lake: Lake) -> list[RunState]:
    """The newest :data:`REPORT_RUNS` job runs, newest first (none before ``job_runs`` exists)."""
    if not lake.exists(spark, JOB_RUNS):
        return []
    runs = lake.read(spark, JOB_RUNS)
    if "catalog_malformed_lines" not in runs.columns:  # a table of runs recorded before it existed
        runs = runs.withColumn("catalog_malformed_lines", F.lit(None).cast("long"))
    recent = (
        runs.orderBy(F.col("started_at").desc())
        .limit(REPORT_RUNS)
        .select(
            "run_id",
            "job",
            "status",
            F.col("started_at").cast("double").alias("started_at"),
            F.col("ended_at").cast("double").alias("ended_at"),
            "rows_in",
            "rows_out",
            "model_version",
            "error",
            "catalog_malformed_lines",
        )
        .collect()
    )
    return [RunState(**r.asDict()) for r in recent]

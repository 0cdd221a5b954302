"""The status report's tables: each lake table's rows, version and newest commit."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.tables import ALL_TABLES, Lake, TableSpec
from recspark.core.text import first_line


@dataclass(frozen=True)
class TableState:
    """One table's freshness; ``error`` is set when the table exists but cannot be read."""

    name: str
    exists: bool
    rows: int | None = None
    version: int | None = None
    last_commit: float | None = None  # epoch seconds, UTC
    error: str | None = None


def _table_state(spark: SparkSession, lake: Lake, spec: TableSpec) -> TableState:
    try:
        if not lake.exists(spark, spec):
            return TableState(spec.name, exists=False)
        last = (
            lake.delta(spark, spec)
            .history(1)
            .select("version", F.col("timestamp").cast("double").alias("at"))
            .first()
        )
        count = lake.read(spark, spec).count()
    except Exception as exc:  # one broken table must not hide the others
        return TableState(spec.name, exists=True, error=first_line(exc))
    assert last is not None
    return TableState(spec.name, True, int(count), int(last["version"]), float(last["at"]))


def gather_tables(spark: SparkSession, lake: Lake) -> list[TableState]:
    """Every table of the lake, in :data:`ALL_TABLES` order, written or not."""
    return [_table_state(spark, lake, spec) for spec in ALL_TABLES]

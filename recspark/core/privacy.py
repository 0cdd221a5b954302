"""What forgetting a user leaves for the other stages: a hashed tombstone (ingest drops the
user's replayed events) and the id map's high-water mark (model never reuses their index)."""

from __future__ import annotations

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from recspark.core.tables import Lake, TableSpec

# A table property of an id map: the highest index ever handed out, even if its row was deleted.
HIGH_WATER_PROPERTY = "recspark.indexHighWater"


def user_hash(user_id: Column) -> Column:
    """How forgotten users are kept: a SHA-256 of the id, never the id itself."""
    return F.sha2(user_id, 256)


def _index_column(spec: TableSpec) -> str:
    return spec.schema.fields[1].name


def index_high_water(spark: SparkSession, lake: Lake, spec: TableSpec) -> int:
    """The highest index the id map has ever handed out (-1 for an empty map)."""
    table = lake.delta(spark, spec)
    recorded = table.detail().collect()[0]["properties"].get(HIGH_WATER_PROPERTY)
    current = table.toDF().agg(F.max(_index_column(spec))).collect()[0][0]
    return max(-1 if current is None else int(current), -1 if recorded is None else int(recorded))


def raise_index_high_water(spark: SparkSession, lake: Lake, spec: TableSpec) -> None:
    """Record the map's highest index before rows are deleted from it."""
    mark = index_high_water(spark, lake, spec)
    spark.sql(
        f"ALTER TABLE delta.`{lake.path(spec.name)}` SET TBLPROPERTIES ('{HIGH_WATER_PROPERTY}' = '{mark}')"
    )

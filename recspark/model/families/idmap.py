"""Stable integer indices for the shops' opaque string ids (ALS needs integers).

The maps are Delta tables that only ever grow: a user keeps the index it was first given, and a
new user gets the next free one, so factors stay comparable across retrains.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.privacy import index_high_water
from recspark.core.tables import ITEM_IDS, USER_IDS, Lake, TableSpec


def extend_id_map(spark: SparkSession, lake: Lake, spec: TableSpec, ids: DataFrame) -> DataFrame:
    """Add indices for ids not yet mapped; return the whole map (id column, index column)."""
    id_col, idx_col = (field.name for field in spec.schema.fields)
    lake.ensure(spark, spec)
    current = lake.read(spark, spec)
    start = index_high_water(spark, lake, spec)  # never reuse a forgotten user's index
    new_ids = ids.select(id_col).distinct().join(current, id_col, "left_anti")
    numbered = new_ids.withColumn(
        idx_col, (F.row_number().over(Window.orderBy(id_col)) + F.lit(start)).cast("int")
    )
    numbered.write.format("delta").mode("append").save(lake.path(spec.name))
    return lake.read(spark, spec)


def extend_user_and_item_maps(
    spark: SparkSession, lake: Lake, interactions: DataFrame
) -> tuple[DataFrame, DataFrame]:
    return (
        extend_id_map(spark, lake, USER_IDS, interactions),
        extend_id_map(spark, lake, ITEM_IDS, interactions),
    )

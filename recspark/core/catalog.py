"""The shop's product catalog (contract §2): read with an explicit schema, whatever the format."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

CATALOG_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("title", T.StringType(), True),
        T.StructField("category", T.StringType(), True),
        T.StructField("price", T.DoubleType(), True),
        T.StructField("available", T.BooleanType(), True),
        T.StructField("updated_at", T.TimestampType(), True),
    ]
)


class CatalogError(ValueError):
    """The catalog file is missing or unusable."""


def read_catalog(spark: SparkSession, path: str) -> DataFrame:
    """The latest row per item; an item whose availability is unknown counts as available."""
    reader = spark.read.schema(CATALOG_SCHEMA)
    lowered = path.lower()
    try:
        if lowered.endswith(".parquet") or lowered.endswith("/"):
            frame = reader.parquet(path)
        elif lowered.endswith(".csv"):
            frame = reader.option("header", "true").csv(path)
        else:
            frame = reader.json(path)
        frame.limit(1).collect()
    except Exception as exc:
        raise CatalogError(f"cannot read catalog at {path}: {str(exc).splitlines()[0]}") from exc
    latest = Window.partitionBy("item_id").orderBy(F.col("updated_at").desc_nulls_last())
    return (
        frame.where(F.col("item_id").isNotNull())
        .withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .drop("_n")
        .withColumn("available", F.coalesce(F.col("available"), F.lit(True)))
    )

"""The shop's product catalog (contract §2): read with an explicit schema, whatever the format.

``available``, ``price`` and ``updated_at`` are read as text and converted strictly: a value
that is not clearly one of the accepted spellings stops the read with the rows that carry it,
instead of turning into null (and a null ``available`` into "available").
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recspark.core.config import FALSE_WORDS, TRUE_WORDS

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
# What CSV and JSON are read with: every field as text, converted by :func:`_typed` afterwards.
RAW_SCHEMA = T.StructType([T.StructField(f.name, T.StringType(), True) for f in CATALOG_SCHEMA.fields])

SHOWN_BAD_ROWS = 5


class CatalogError(ValueError):
    """The catalog file is missing or unusable."""


def _load(spark: SparkSession, path: str) -> DataFrame:
    """Every catalog column, text for CSV and JSON; Parquet keeps the types it was written with."""
    lowered = path.lower()
    try:
        if lowered.endswith(".parquet") or lowered.endswith("/"):
            frame = spark.read.parquet(path)
            present = set(frame.columns)
            frame = frame.select(
                *(
                    F.col(f.name) if f.name in present else F.lit(None).cast(T.StringType()).alias(f.name)
                    for f in CATALOG_SCHEMA.fields
                )
            )
        elif lowered.endswith(".csv"):
            frame = spark.read.schema(RAW_SCHEMA).option("header", "true").csv(path)
        else:
            frame = spark.read.schema(RAW_SCHEMA).json(path)
        frame.limit(1).collect()
    except Exception as exc:
        raise CatalogError(f"cannot read catalog at {path}: {str(exc).splitlines()[0]}") from exc
    return frame


def _text(name: str) -> Column:
    """The column as trimmed text; empty text is null (unknown)."""
    text = F.trim(F.col(name).cast(T.StringType()))
    return F.when(text != "", text)


def _boolean(frame: DataFrame, name: str) -> Column:
    if isinstance(frame.schema[name].dataType, T.BooleanType):
        return F.col(name)
    word = F.lower(_text(name))
    return F.when(word.isin(*TRUE_WORDS), True).when(word.isin(*FALSE_WORDS), False)


def _converted(frame: DataFrame, name: str, target: T.DataType) -> Column:
    if frame.schema[name].dataType == target:
        return F.col(name)
    if isinstance(target, T.BooleanType):
        return _boolean(frame, name)
    return _text(name).try_cast(target)


def _typed(frame: DataFrame, path: str) -> DataFrame:
    """``frame`` in :data:`CATALOG_SCHEMA`; CatalogError naming the first rows with a value that
    is present but not convertible."""
    strict = [f for f in CATALOG_SCHEMA.fields if f.name in ("price", "available", "updated_at")]
    typed = frame.select(
        F.col("item_id").cast(T.StringType()).alias("item_id"),
        F.col("title").cast(T.StringType()).alias("title"),
        F.col("category").cast(T.StringType()).alias("category"),
        *(_converted(frame, f.name, f.dataType).alias(f.name) for f in strict),
        *(_text(f.name).alias(f"_raw_{f.name}") for f in strict),
    )
    problems = [
        F.when(F.col(f"_raw_{f.name}").isNotNull() & F.col(f.name).isNull(), F.lit(f.name)) for f in strict
    ]
    checked = typed.withColumn("_bad", F.concat_ws(",", *problems))
    bad = (
        checked.where((F.col("_bad") != "") & F.col("item_id").isNotNull())
        .limit(SHOWN_BAD_ROWS + 1)
        .collect()
    )
    if bad:
        shown = "; ".join(
            f"item {row['item_id']}: {field}={row[f'_raw_{field}']!r}"
            for row in bad[:SHOWN_BAD_ROWS]
            for field in row["_bad"].split(",")
        )
        more = " (and more)" if len(bad) > SHOWN_BAD_ROWS else ""
        raise CatalogError(
            f"catalog at {path} has values that are not valid: {shown}{more}. available takes "
            f"true/false, 1/0, yes/no or y/n (empty: available); price a number; updated_at a timestamp"
        )
    return typed.select(*(f.name for f in CATALOG_SCHEMA.fields))


def read_catalog(spark: SparkSession, path: str) -> DataFrame:
    """The latest row per item; an item whose availability is unknown (missing or empty) counts
    as available; any other value that is not a clear yes or no raises CatalogError."""
    frame = _typed(_load(spark, path), path)
    latest = Window.partitionBy("item_id").orderBy(F.col("updated_at").desc_nulls_last())
    return (
        frame.where(F.col("item_id").isNotNull())
        .withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .drop("_n")
        .withColumn("available", F.coalesce(F.col("available"), F.lit(True)))
    )

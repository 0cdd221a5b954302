"""The catalog reader: availability, price and time are converted strictly, never guessed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from recspark.core.catalog import CatalogError, read_catalog


def availability(spark: SparkSession, path: Path) -> dict[str, bool]:
    return {r["item_id"]: r["available"] for r in read_catalog(spark, str(path)).collect()}


def test_json_text_and_boolean_availability(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"item_id": "a", "available": "false", "price": "9.50"}',
                '{"item_id": "b", "available": false, "price": 3}',
                '{"item_id": "c", "available": "No"}',
                '{"item_id": "d", "available": "TRUE"}',
                '{"item_id": "e", "available": ""}',
                '{"item_id": "f"}',
            ]
        )
        + "\n"
    )

    assert availability(spark, path) == {"a": False, "b": False, "c": False, "d": True, "e": True, "f": True}
    prices = {r["item_id"]: r["price"] for r in read_catalog(spark, str(path)).collect()}
    assert prices["a"] == 9.5 and prices["b"] == 3.0 and prices["f"] is None


def test_csv_zero_and_no_are_unavailable(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "item_id,title,category,price,available,updated_at\n"
        "a,A,c1,1.0,0,2026-10-01T00:00:00Z\n"
        "b,B,c1,2.0,no,2026-10-01T00:00:00Z\n"
        "c,C,c2,3.0,n,\n"
        "d,D,c2,4.0,1,\n"
        "e,E,c2,5.0,yes,\n"
        "f,F,c2,6.0,,\n"
    )

    assert availability(spark, path) == {"a": False, "b": False, "c": False, "d": True, "e": True, "f": True}


def test_csv_unclear_availability_names_the_item_and_value(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "item_id,title,category,price,available,updated_at\n"
        "a,A,c1,1.0,true,\n"
        "b,B,c1,2.0,maybe,\n"
        "c,C,c1,cheap,false,\n"
    )

    with pytest.raises(CatalogError) as raised:
        read_catalog(spark, str(path))

    message = str(raised.value)
    assert "item b: available='maybe'" in message
    assert "item c: price='cheap'" in message
    assert "item a" not in message


def test_parquet_boolean_column_reads_and_text_column_is_strict(spark: SparkSession, tmp_path: Path) -> None:
    typed = tmp_path / "typed.parquet"
    schema = T.StructType(
        [
            T.StructField("item_id", T.StringType()),
            T.StructField("price", T.DoubleType()),
            T.StructField("available", T.BooleanType()),
            T.StructField("updated_at", T.TimestampType()),
        ]
    )
    when = datetime(2026, 10, 1, 12, 0)
    spark.createDataFrame(
        [("a", 1.0, False, when), ("b", 2.0, True, when), ("c", None, None, None)], schema
    ).write.parquet(str(typed))
    text = tmp_path / "text.parquet"
    spark.createDataFrame([("a", "no"), ("b", "Y")], "item_id string, available string").write.parquet(
        str(text)
    )

    assert availability(spark, typed) == {"a": False, "b": True, "c": True}
    assert availability(spark, text) == {"a": False, "b": True}

"""Readers other than Spark (delta-rs through DataFusion, DuckDB's delta extension) see the
tables data engineers query exactly as Spark does once deletion vectors exist on them: the same
rows, the deleted ones absent. docs/reading-tables.md promises this."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import duckdb
import duckdb_extensions
import pandas as pd
import pyarrow as pa
import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable as SparkDeltaTable
from deltalake import DeltaTable, QueryBuilder
from pyspark.sql import DataFrame, SparkSession

from recspark.core.tables import (
    INTERACTIONS,
    RECOMMENDATIONS,
    SIMILAR_ITEMS,
    Lake,
    TableSpec,
    interactions_table,
    serving_table,
)

AT = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
LATER = AT + timedelta(hours=1)


def _recommendation_rows() -> list[tuple]:
    return [
        (f"u{u}", rank, f"i{u + rank}", 1.0 / rank, "als", "1", AT, None if rank == 3 else f"i{u}")
        for u in range(1, 5)
        for rank in range(1, 4)
    ]


def _similar_item_rows() -> list[tuple]:
    return [(f"i{i}", rank, f"i{i + rank}", 0.5 / rank, "1", AT) for i in range(1, 5) for rank in range(1, 4)]


def _interaction_rows() -> list[tuple]:
    return [
        (f"u{u}", f"i{i}", u + i, 1, 0, i % 2, 0, None if u % 2 else 4.0, AT, AT, 1.5 * u, 1.5 * u, AT)
        for u in range(1, 5)
        for i in range(1, 3)
    ]


def _refresh_u1_and_forget_u2(spark: SparkSession, path: str) -> None:
    """What refresh and forget-user do to the serving table: a user's list replaced by a MERGE,
    another user's rows deleted."""
    table = SparkDeltaTable.forPath(spark, path)
    table.delete("user_id = 'u2'")
    fresh = spark.createDataFrame(
        [("u1", rank, f"i{20 + rank}", 2.0 / rank, "als", "2", LATER, "i1") for rank in range(1, 4)],
        RECOMMENDATIONS.schema,
    )
    (
        table.alias("t")
        .merge(fresh.alias("s"), "t.user_id = s.user_id AND t.rank = s.rank")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def _delete(condition: str) -> Callable[[SparkSession, str], None]:
    def delete(spark: SparkSession, path: str) -> None:
        SparkDeltaTable.forPath(spark, path).delete(condition)

    return delete


# table -> (rows written, the change that adds deletion vectors, rows it must have removed)
CASES: dict[str, tuple[TableSpec, Callable[[], list[tuple]], Callable[[SparkSession, str], None], str]] = {
    "recommendations": (
        RECOMMENDATIONS,
        _recommendation_rows,
        _refresh_u1_and_forget_u2,
        "user_id = 'u2' OR (user_id = 'u1' AND model_version = '1')",
    ),
    "similar_items": (SIMILAR_ITEMS, _similar_item_rows, _delete("item_id = 'i2'"), "item_id = 'i2'"),
    "interactions": (INTERACTIONS, _interaction_rows, _delete("user_id = 'u3'"), "user_id = 'u3'"),
}
TABLES = list(CASES)


def _with_deletion_vectors(spark: SparkSession, lake: Lake, spec: TableSpec) -> str:
    """The table as recspark creates it, with deletion vectors on: ``recommendations`` and
    ``interactions`` have them from their TableSpec; ``similar_items`` gets them here, as a
    shop's Delta defaults (``spark.databricks.delta.properties.defaults.enableDeletionVectors``)
    would give them."""
    lake.ensure(spark, spec)
    path = lake.path(spec.name)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    return path


def _deletion_vectors_added(spark: SparkSession, path: str) -> int:
    metrics = SparkDeltaTable.forPath(spark, path).history().select("operationMetrics").collect()
    return sum(int((m["operationMetrics"] or {}).get("numDeletionVectorsAdded", 0)) for m in metrics)


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """The three tables, each written by Spark in one file, then changed so that deletion
    vectors (not rewritten files) hide the removed rows."""
    lake = Lake.at(str(tmp_path_factory.mktemp("readers") / "lake"))
    for spec, rows, change, _ in CASES.values():
        path = _with_deletion_vectors(spark, lake, spec)
        spark.createDataFrame(rows(), spec.schema).coalesce(1).write.format("delta").mode("append").save(path)
        change(spark, path)
    return lake


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB with the delta extension from its PyPI package (duckdb-extension-delta): the
    machine cannot download extensions from DuckDB's own server."""
    con = duckdb.connect()
    con.sql(f"SET extension_directory = '{tmp_path_factory.mktemp('duckdb_extensions')}'")
    duckdb_extensions.import_extension("delta", con=con)
    con.load_extension("delta")
    yield con
    con.close()


def _spark_rows(spark: SparkSession, lake: Lake, table: str) -> DataFrame:
    return spark.read.format("delta").load(lake.path(table))


def _as_spark(spark: SparkSession, frame: pd.DataFrame, like: DataFrame) -> DataFrame:
    return spark.createDataFrame(frame[like.columns], like.schema)


def _assert_read_like_spark(spark: SparkSession, lake: Lake, table: str, frame: pd.DataFrame) -> None:
    expected = _spark_rows(spark, lake, table)
    _, rows, _, removed = CASES[table]
    assert expected.count() < len(rows())  # the change removed rows ...
    assert expected.where(removed).count() == 0  # ... those it should have
    actual = _as_spark(spark, frame, expected)
    assert actual.where(removed).count() == 0
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("table", TABLES)
def test_the_tables_have_deletion_vectors(spark: SparkSession, lake: Lake, table: str) -> None:
    assert _deletion_vectors_added(spark, lake.path(table)) > 0


@pytest.mark.parametrize("table", TABLES)
def test_delta_rs_reads_the_table_as_spark_does(spark: SparkSession, lake: Lake, table: str) -> None:
    reader = QueryBuilder().register("t", DeltaTable(lake.path(table))).execute("SELECT * FROM t")
    frame = pa.table(reader.read_all()).to_pandas()

    _assert_read_like_spark(spark, lake, table, frame)


@pytest.mark.parametrize("table", TABLES)
def test_duckdb_reads_the_table_as_spark_does(
    spark: SparkSession, lake: Lake, duck: duckdb.DuckDBPyConnection, table: str
) -> None:
    frame = duck.sql(f"SELECT * FROM delta_scan('{lake.path(table)}')").to_arrow_table().to_pandas()

    _assert_read_like_spark(spark, lake, table, frame)


def test_delta_rs_to_pandas_refuses_deletion_vectors(lake: Lake) -> None:
    """A known limit (docs/reading-tables.md): the plain reader refuses the table (QueryBuilder reads it)."""
    with pytest.raises(Exception, match="deletionVectors"):
        DeltaTable(lake.path(RECOMMENDATIONS.name)).to_pandas()


# Per table with deletion vectors by default: the spec as its setting configures it, and a later
# change that would add vectors if they were still on.
CONFIGURED: dict[str, tuple[Callable[[bool], TableSpec], Callable[[SparkSession, str], None]]] = {
    "recommendations": (serving_table, _delete("rank = 1")),  # serve.deletion_vectors
    "interactions": (interactions_table, _delete("item_id = 'i1'")),  # ingest.deletion_vectors
}


@pytest.mark.parametrize("table", list(CONFIGURED))
def test_deletion_vectors_off_makes_the_table_plain_for_every_reader(
    spark: SparkSession, tmp_path, table: str
) -> None:
    """``serve.deletion_vectors: false`` / ``ingest.deletion_vectors: false`` on a table that
    already has them: the feature is dropped (rows marked deleted are purged), later changes
    rewrite files instead, and delta-rs' plain reader, which refuses deletion vectors, reads it
    as Spark does."""
    spec, rows, change, removed = CASES[table]
    configured, later_change = CONFIGURED[table]
    lake = Lake.at(str(tmp_path / "lake"))
    path = lake.path(spec.name)
    lake.ensure(spark, configured(True))
    spark.createDataFrame(rows(), spec.schema).coalesce(1).write.format("delta").mode("append").save(path)
    change(spark, path)
    assert _deletion_vectors_added(spark, path) > 0
    with pytest.raises(Exception, match="deletionVectors"):
        DeltaTable(path).to_pandas()

    lake.ensure(spark, configured(False))
    before = _deletion_vectors_added(spark, path)
    later_change(spark, path)  # no new vectors
    assert _deletion_vectors_added(spark, path) == before
    features = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["tableFeatures"]
    assert "deletionVectors" not in features

    expected = spark.read.format("delta").load(path)
    assert expected.count() > 0
    assert expected.where(removed).count() == 0
    actual = _as_spark(spark, DeltaTable(path).to_pandas(), expected)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)

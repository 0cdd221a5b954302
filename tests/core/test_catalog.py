"""The catalog reader: availability, price and time are converted strictly, never guessed; a line
that cannot be read whole holds its item back with a reason, and only what the catalog vouches for
is served."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from recspark.core.catalog import CatalogError, load_catalog, read_catalog
from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS, Lake
from recspark.ops.quality.gate import gate_for
from recspark.serve.publish import recommend
from tests.conftest import config_under


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


def malformed(spark: SparkSession, path: Path) -> set[tuple[str | None, str]]:
    return {(r["item_id"], r["reason"]) for r in load_catalog(spark, str(path)).malformed.collect()}


def test_csv_values_that_are_not_clear_hold_their_item_back_with_the_reason(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "item_id,title,category,price,available,updated_at\n"
        "a,A,c1,1.0,true,\n"
        "b,B,c1,2.0,maybe,\n"
        "c,C,c1,cheap,false,\n"
        "d,D,c1,4.0,yes,last tuesday\n"
        'e,"E, the large one",c1,5.0,yes,\n'  # a quoted comma is no field boundary
    )

    read = load_catalog(spark, str(path))
    details = {(r["item_id"], r["reason"], r["detail"]) for r in read.malformed.collect()}
    assert details == {
        ("b", "available is not true/false", "'maybe'"),
        ("c", "price is not a number", "'cheap'"),
        ("d", "updated_at is not a timestamp", "'last tuesday'"),
    }
    assert availability(spark, path) == {"a": True, "b": False, "c": False, "d": False, "e": True}


def test_every_structural_problem_of_a_json_line_is_named(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"item_id": "a", "available": "false", "price": "9.50"}',
                '{"item_id": "b", "available": tru',
                '{"item_id": "c"}{"item_id": "d"}',  # two records glued together
                '["e"]',
                "",
                '{"item_id": ""}',
                '{"title": "no id"}',
                '{"item_id": {"x": 1}}',
                '{"item_id": "g", "category": ["x", "y"]}',
                '{"item_id": 17, "available": 0}',
            ]
        )
        + "\n"
    )

    assert malformed(spark, path) == {
        ("b", "malformed JSON"),
        ("c", "malformed JSON"),
        (None, "malformed JSON"),
        (None, "empty item_id"),
        (None, "missing item_id"),
        (None, "item_id is not a string"),
        ("g", "category is not a single value"),
    }
    assert availability(spark, path) == {"a": False, "b": False, "c": False, "g": False, "17": False}
    assert load_catalog(spark, str(path)).lines.count() == 9  # the blank line is no line


def test_csv_rows_of_the_wrong_width_and_columns_in_any_order(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "available,item_id,note,category\n"  # the header names the columns, in the shop's order
        "false,a,,k\n"
        "true,b\n"
        "true,c,,k,extra\n"
        ",d,,k\n"
        "true,,,k\n"
    )

    assert malformed(spark, path) == {
        ("b", "wrong number of fields"),
        ("c", "wrong number of fields"),
        (None, "missing item_id"),
    }
    assert availability(spark, path) == {"a": False, "b": False, "c": False, "d": True}


def test_a_catalog_without_item_ids_is_unusable(spark: SparkSession, tmp_path: Path) -> None:
    csv = tmp_path / "catalog.csv"
    csv.write_text("id,available\na,true\n")
    with pytest.raises(CatalogError, match="no item_id column"):
        read_catalog(spark, str(csv))
    parquet = tmp_path / "catalog.parquet"
    spark.createDataFrame([("a", True)], "id string, available boolean").write.parquet(str(parquet))
    with pytest.raises(CatalogError, match="no item_id column"):
        read_catalog(spark, str(parquet))
    with pytest.raises(CatalogError, match="cannot read catalog"):
        read_catalog(spark, str(tmp_path / "missing.jsonl"))


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


# --------------------------------------------------------------------------------------------
# Malformed lines, items missing from the catalog: what a shop is served


def write_interactions(spark: SparkSession, lake: Lake, pairs: list[tuple[str, str, int]]) -> None:
    """(user, item, purchases) as rows of the interactions table: one view each, and bought
    when purchases > 0 (which excludes the item from the user's list)."""
    now = datetime(2026, 11, 20)
    rows = [
        (user, item, 1, 0, 0, bought, 0, None, now, now, 1.0 + 5 * bought, 1.0 + 5 * bought, now)
        for user, item, bought in pairs
    ]
    lake.ensure(spark, INTERACTIONS)
    spark.createDataFrame(rows, INTERACTIONS.schema).write.format("delta").mode("append").save(
        lake.path(INTERACTIONS.name)
    )


def served_lists(
    spark: SparkSession, tmp_path: Path, catalog: str, catalog_text: str, *overrides: str
) -> dict[str, list[str]]:
    """`recommend` (fallback lists, the recommendations gate set to fail) on a shop whose users
    each viewed items a to f, with this catalog; each user's items in rank order."""
    path = tmp_path / catalog
    path.write_text(catalog_text)
    config = config_under(
        tmp_path,
        "serve.top_n=5",
        "serve.trending_days=0",
        "quality.data_docs=false",
        f"catalog.path={path}",
        *overrides,
    )
    lake = Lake.at(config.lake.root)
    # Popularity: a 6 users, b 5, c 4, d 3, e 2, f 1.
    write_interactions(spark, lake, [(f"u{n}", item, 0) for n in range(6) for item in "abcdef"[: 6 - n]])
    recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"))
    lists: dict[str, list[str]] = {}
    for row in lake.read(spark, RECOMMENDATIONS).orderBy("user_id", "rank").collect():
        lists.setdefault(row["user_id"], []).append(row["item_id"])
    return lists


JSON_CATALOG = "".join(
    line + "\n"
    for line in [
        '{"item_id": "a", "category": "k", "available": true}',
        '{"item_id": "b", "category": "k", "available": false}',
        '{"item_id": "b", "category": "k", "available": tr',  # broken; b is out of stock anyway
        '{"item_id": "c", "category": "k", "available": false',  # c's only line, broken
        '{"item_id": "e", "category": "k", "available": "yes"}',
        '{"item_id": "f", "category": "k"}',  # says nothing about stock: listed, so available
    ]
)  # d is not in the catalog


@pytest.mark.slow
def test_an_item_whose_only_catalog_line_is_broken_is_never_served(
    spark: SparkSession, tmp_path: Path
) -> None:
    lists = served_lists(spark, tmp_path, "catalog.jsonl", JSON_CATALOG)

    # Only a, e and f are vouched for by a well-formed line: fewer than N, so three rows each.
    assert set(lists) == {f"u{n}" for n in range(6)}
    assert all(items == ["a", "e", "f"] for items in lists.values())


@pytest.mark.slow
def test_items_missing_from_the_catalog_are_served_only_when_the_setting_says_so(
    spark: SparkSession, tmp_path: Path
) -> None:
    lists = served_lists(spark, tmp_path, "catalog.jsonl", JSON_CATALOG, "catalog.unlisted_items=include")

    # d has no category: it follows the items popular in the users' category.
    assert len(lists) == 6 and all(items == ["a", "e", "f", "d"] for items in lists.values())


@pytest.mark.slow
def test_a_short_csv_row_holds_its_item_back(spark: SparkSession, tmp_path: Path) -> None:
    text = (
        "item_id,title,category,price,available,updated_at\n"
        "a,A,k,1.0,true,\n"
        "b,B,k,2.0\n"  # short: its availability was cut off
        "c,C,k,3.0,true,,extra\n"  # one field too many
        "e,E,k,5.0,,\n"  # explicitly empty: listed and not out of stock
        "f,F,k,6.0,1,2026-10-01T00:00:00Z\n"
    )
    lists = served_lists(spark, tmp_path, "catalog.csv", text)

    assert all(items == ["a", "e", "f"] for items in lists.values()) and len(lists) == 6

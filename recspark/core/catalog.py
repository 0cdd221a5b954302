"""The shop's product catalog (contract §2): read with an explicit schema, whatever the format,
and every line checked.

A line that cannot be read whole is *malformed*: JSON that is not one object, a CSV row with
more or fewer fields than the header, a missing or empty ``item_id``, an object or array where a
single value belongs, or a value present but not convertible (``available`` not a clear yes or
no, a ``price`` that is no number, an ``updated_at`` that is no time). It never fails the read:
it is kept with its reason (:attr:`CatalogRead.lines`), and it holds its item back
(``available`` false) whenever the item id can be recovered from it (the CSV field, or
``"item_id": "..."`` in the broken JSON text), since the broken line may be the one that marks
the item out of stock. Only a catalog that cannot be read at all (no file, no ``item_id``
column, not one well-formed line) raises :class:`CatalogError`.

An item's state is its latest well-formed line (by ``updated_at``; at equal times, out of stock
wins). A well-formed line that says nothing about stock (``available`` empty, null or absent, or
no such column) lists the item as available: only ``available = false`` excludes (contract §2).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recspark.core.console import DETAIL
from recspark.core.contract import FALSE_WORDS, TRUE_WORDS
from recspark.core.json_lines import one_json_value

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
FIELDS = tuple(f.name for f in CATALOG_SCHEMA.fields)
# One row per line of the catalog (blank lines are no lines): the item it names (null when no id
# could be read from it), why it is malformed (null: well-formed) and the offending text.
LINES_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), True),
        T.StructField("reason", T.StringType(), True),
        T.StructField("detail", T.StringType(), True),
    ]
)

DETAIL_LIMIT = 120
# The reasons a line is malformed (the ``reason`` column), in the order they are checked.
MALFORMED_JSON = "malformed JSON"
WRONG_WIDTH = "wrong number of fields"
MISSING_ID = "missing item_id"
EMPTY_ID = "empty item_id"
ID_NOT_TEXT = "item_id is not a string"
NOT_AVAILABILITY = "available is not true/false"
NOT_A_PRICE = "price is not a number"
NOT_A_TIME = "updated_at is not a timestamp"
# A quoted CSV field (quotes escaped with a backslash, as Spark's reader takes them, or doubled).
_QUOTED = r'"(?:[^"\\]|\\.|"")*"'
# In broken JSON text, the item id it names (the first one).
_ID_IN_TEXT = r'"item_id"\s*:\s*"((?:[^"\\]|\\.)*)"'
# JSON values that can be an item id: strings and whole numbers (as their text).
_ID_KINDS = ("STRING", "TINYINT", "SMALLINT", "INT", "BIGINT")


class CatalogError(ValueError):
    """The catalog file is missing or unusable."""


@dataclass(frozen=True)
class CatalogRead:
    """One read of the catalog at ``path``: every line with its verdict, and the items."""

    path: str
    lines: DataFrame  # LINES_SCHEMA: one row per line
    items: DataFrame  # CATALOG_SCHEMA: one row per item; held back by a malformed line: unavailable

    @property
    def malformed(self) -> DataFrame:
        return self.lines.where(F.col("reason").isNotNull())

    @property
    def scope(self) -> str:
        """What a quality gate on :attr:`lines` validated (its ``scope``)."""
        return f"every line of {self.path}"


def load_catalog(spark: SparkSession, path: str) -> CatalogRead:
    """Read and check every line of the catalog (JSON lines, CSV or Parquet, by extension)."""
    checked = _checked(_fields(spark, path))
    try:
        well_formed = checked.where(F.col("reason").isNull()).limit(1).count()
    except Exception as exc:
        raise CatalogError(f"cannot read catalog at {path}: {str(exc).splitlines()[0]}") from exc
    if not well_formed:
        raise CatalogError(
            f"catalog at {path} has not one well-formed line (empty, or not the format its "
            "extension says); set catalog.path to null for a shop without a catalog"
        )
    return CatalogRead(path, checked.select(*LINES_SCHEMA.fieldNames()), _items(checked))


def read_catalog(spark: SparkSession, path: str) -> DataFrame:
    """The catalog's items (:attr:`CatalogRead.items`)."""
    return load_catalog(spark, path).items


def _fields(spark: SparkSession, path: str) -> DataFrame:
    """Per line: ``_raw`` (its text, where there is one), ``_problem`` (a structural reason, or
    null) and each catalog field as ``_text_<field>`` (text; null when absent) or, for typed
    Parquet columns, already typed under its own name."""
    lowered = path.lower()
    try:
        if lowered.endswith(".parquet") or lowered.endswith("/"):
            return _parquet_fields(spark, path)
        if lowered.endswith(".csv"):
            return _csv_fields(spark, path)
        return _json_fields(spark, path)
    except CatalogError:
        raise
    except Exception as exc:
        raise CatalogError(f"cannot read catalog at {path}: {str(exc).splitlines()[0]}") from exc


def _no_item_id(path: str, columns: list[str]) -> CatalogError:
    return CatalogError(
        f"catalog at {path} has no item_id column (its columns: {', '.join(columns) or 'none'})"
    )


def _parquet_fields(spark: SparkSession, path: str) -> DataFrame:
    frame = spark.read.parquet(path)
    present = {c.lower(): c for c in frame.columns}
    if "item_id" not in present:
        raise _no_item_id(path, frame.columns)
    columns = []
    for field in CATALOG_SCHEMA.fields:
        source = present.get(field.name)
        if source is not None and frame.schema[source].dataType == field.dataType:
            columns.append(F.col(source).alias(field.name))  # typed as the contract says
        else:
            value = F.col(source).cast(T.StringType()) if source is not None else F.lit(None).cast("string")
            columns.append(value.alias(f"_text_{field.name}"))
    raw = F.to_json(F.struct(*(F.col(c) for c in frame.columns)))
    return frame.select(raw.alias("_raw"), F.lit(None).cast("string").alias("_problem"), *columns)


def _csv_fields(spark: SparkSession, path: str) -> DataFrame:
    """Columns by the header's names (any order, any case, extra columns ignored); a row with
    more or fewer fields than the header is malformed. One record per line, as Spark's CSV
    reader reads by default; the fields are counted from the line's text (commas outside
    quotes), since Spark's reader parses only the columns a query needs and cannot tell."""
    lines = spark.read.text(path)
    first = lines.first()
    header = "" if first is None else first["value"]
    names = [name.strip().lower() for name in next(csv.reader([header.lstrip("\ufeff")]), [])]
    if "item_id" not in names:
        raise _no_item_id(path, names)
    rows = lines.select(F.col("value").alias("_raw")).where(
        (F.trim("_raw") != "") & (F.col("_raw") != F.lit(header))
    )
    unquoted = F.regexp_replace(F.col("_raw"), _QUOTED, "")
    wrong_width = F.size(F.split(unquoted, ",")) != len(names)
    fields = F.from_csv(F.col("_raw"), ", ".join(f"_c{i} STRING" for i in range(len(names))))
    position = {name: i for i, name in reversed(list(enumerate(names)))}

    def text(name: str) -> Column:
        return fields.getField(f"_c{position[name]}") if name in position else F.lit(None).cast("string")

    # The item a malformed row names: the field at item_id's place, counted from the left.
    named = F.try_element_at(F.split(F.col("_raw"), ","), F.lit(position["item_id"] + 1))
    return rows.select(
        "_raw",
        F.when(wrong_width, F.lit(WRONG_WIDTH)).alias("_problem"),
        F.when(wrong_width, F.regexp_replace(named, '^\\s*"|"\\s*$', ""))
        .otherwise(text("item_id"))
        .alias("_text_item_id"),
        *(text(name).alias(f"_text_{name}") for name in FIELDS if name != "item_id"),
    )


def _json_fields(spark: SparkSession, path: str) -> DataFrame:
    """Each line parsed as one JSON value (no schema inference); strings, numbers and booleans
    are read as their text, so ``"available": false`` and ``"available": "no"`` agree."""
    lines = spark.read.text(path).select(F.col("value").alias("_raw")).where(F.trim("_raw") != "")
    parsed = lines.select("_raw", one_json_value(F.col("_raw")).alias("_v"))
    v = F.col("_v")

    def kind(name: str) -> Column:
        """The JSON type of a field (STRING, BIGINT, OBJECT<...>, ...); null when absent or null."""
        found = F.schema_of_variant(F.try_variant_get(v, f"$.{name}", "variant"))
        return F.when(found != "VOID", found)

    def text(name: str) -> Column:
        return F.try_variant_get(v, f"$.{name}", "string")

    checks = [(v.isNull() | ~F.schema_of_variant(v).startswith("OBJECT"), F.lit(MALFORMED_JSON))]
    checks.append((kind("item_id").isNotNull() & ~kind("item_id").isin(*_ID_KINDS), F.lit(ID_NOT_TEXT)))
    for name in FIELDS[1:]:
        checks.append((kind(name).rlike("^(OBJECT|ARRAY)"), F.lit(f"{name} is not a single value")))
    problem = F.lit(None).cast("string")
    for condition, reason in reversed(checks):
        problem = F.when(F.coalesce(condition, F.lit(False)), reason).otherwise(problem)
    item_id = F.when(kind("item_id").isin(*_ID_KINDS), text("item_id"))
    # Text that is no JSON object may still name its item: recovered, so the item is held back.
    named = F.regexp_extract(F.col("_raw"), _ID_IN_TEXT, 1)
    not_an_object = v.isNull() | ~F.schema_of_variant(v).startswith("OBJECT")
    return parsed.select(
        "_raw",
        problem.alias("_problem"),
        F.coalesce(item_id, F.when(not_an_object & (named != ""), named)).alias("_text_item_id"),
        *(text(name).alias(f"_text_{name}") for name in FIELDS[1:]),
    )


def _present(name: str) -> Column:
    """A field's text, trimmed; null when absent or empty (a value not given)."""
    text = F.trim(F.col(f"_text_{name}"))
    return F.when(text != "", text)


def _typed(frame: DataFrame, field: T.StructField) -> tuple[Column, Column | None]:
    """The field's value in the contract's type, and whether a value is present but does not
    convert (None for text fields, which always do)."""
    if field.name in frame.columns:  # a Parquet column already of the contract's type
        return F.col(field.name), None
    if isinstance(field.dataType, T.StringType):
        return F.col(f"_text_{field.name}"), None
    given = _present(field.name)
    if isinstance(field.dataType, T.BooleanType):
        word = F.lower(given)
        value = F.when(word.isin(*TRUE_WORDS), True).when(word.isin(*FALSE_WORDS), False)
    else:
        value = given.try_cast(field.dataType)
    return value, given.isNotNull() & value.isNull()


_VALUE_REASONS = {"available": NOT_AVAILABILITY, "price": NOT_A_PRICE, "updated_at": NOT_A_TIME}


def _checked(fields: DataFrame) -> DataFrame:
    """Every line once: the catalog fields typed (null on a malformed line), ``reason`` (the
    first problem found, null when well-formed) and ``detail`` (the offending value, or the
    line's text)."""
    item_text = F.col("_text_item_id") if "_text_item_id" in fields.columns else F.col("item_id")
    typed = {f.name: _typed(fields, f) for f in CATALOG_SCHEMA.fields if f.name != "item_id"}
    line = F.col("_raw")
    problems: list[tuple[Column, Column, Column]] = [
        (F.col("_problem").isNotNull(), F.col("_problem"), line),
        (item_text.isNull(), F.lit(MISSING_ID), line),
        (F.trim(item_text) == "", F.lit(EMPTY_ID), line),
    ]
    for name, (_, bad) in typed.items():
        if bad is not None:
            given = F.concat(F.lit("'"), _present(name), F.lit("'"))
            problems.append((bad, F.lit(_VALUE_REASONS[name]), given))
    reason: Column = F.lit(None).cast("string")
    detail: Column = F.lit(None).cast("string")
    for condition, why, what in reversed(problems):
        reason = F.when(F.coalesce(condition, F.lit(False)), why).otherwise(reason)
        detail = F.when(F.coalesce(condition, F.lit(False)), what).otherwise(detail)
    checked = fields.select(
        F.when(F.trim(item_text) != "", item_text).alias("item_id"),
        *(value.alias(name) for name, (value, _) in typed.items()),
        reason.alias("reason"),
        F.substring(detail, 1, DETAIL_LIMIT).alias("detail"),
    )
    well_formed = F.col("reason").isNull()
    return checked.select(
        "item_id",
        *(F.when(well_formed, F.col(name)).alias(name) for name in FIELDS[1:]),
        "reason",
        "detail",
    )


def _items(checked: DataFrame) -> DataFrame:
    """One row per item: its latest well-formed line (at equal times, unavailable first), marked
    unavailable when a malformed line names it too."""
    latest = Window.partitionBy("item_id").orderBy(
        F.col("updated_at").desc_nulls_last(), F.coalesce(F.col("available"), F.lit(True)).asc()
    )
    newest = (
        checked.where(F.col("reason").isNull())
        .withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .drop("_n", "reason", "detail")
    )
    held_back = (
        checked.where(F.col("reason").isNotNull() & F.col("item_id").isNotNull())
        .select("item_id")
        .distinct()
        .withColumn("_held_back", F.lit(True))
    )
    return newest.join(held_back, "item_id", "full").select(
        "item_id",
        "title",
        "category",
        "price",
        F.when(F.col("_held_back"), F.lit(False))
        .otherwise(F.coalesce(F.col("available"), F.lit(True)))
        .alias("available"),
        "updated_at",
    )


@dataclass(frozen=True)
class CatalogSummary:
    """What one read of the catalog found, for logs, job runs and ``recspark status``."""

    lines: int
    malformed_lines: int
    held_back_items: int  # items named by a malformed line: not recommended until it is fixed
    reasons: list[tuple[str, int, list[str]]]  # reason, lines, a few examples (item: detail)

    def describe(self) -> str:
        """One line: '3 of 1,234 lines malformed: 2 items held back (malformed JSON 2, ...)'."""
        if not self.malformed_lines:
            return f"all {self.lines:,} lines well-formed"
        counts = ", ".join(f"{reason} {lines:,}" for reason, lines, _ in self.reasons)
        return (
            f"{self.malformed_lines:,} of {self.lines:,} lines malformed: "
            f"{self.held_back_items:,} items held back ({counts})"
        )


EXAMPLES_PER_REASON = 3


def summarize(read: CatalogRead) -> CatalogSummary:
    """Count the lines by reason (one pass; a second for the items held back, only when some
    line is malformed)."""
    example = F.concat(
        F.coalesce(F.concat(F.lit("item "), "item_id"), F.lit("no item id")), F.lit(": "), "detail"
    )
    by_reason = (
        read.lines.groupBy("reason")
        .agg(
            F.count(F.lit(1)).alias("lines"),
            F.slice(F.collect_list(example), 1, EXAMPLES_PER_REASON).alias("examples"),
        )
        .collect()
    )
    lines = sum(r["lines"] for r in by_reason)
    reasons = sorted(
        ((r["reason"], r["lines"], list(r["examples"])) for r in by_reason if r["reason"] is not None),
        key=lambda r: (-r[1], r[0]),
    )
    malformed = sum(count for _, count, _ in reasons)
    held_back = (
        read.malformed.where(F.col("item_id").isNotNull()).select("item_id").distinct().count()
        if malformed
        else 0
    )
    return CatalogSummary(lines, malformed, held_back, reasons)


def report_catalog(read: CatalogRead, logger: logging.Logger, job: str) -> CatalogSummary:
    """Summarise ``read`` and log it under ``job``: a warning naming the reasons, with examples,
    when some line is malformed."""
    summary = summarize(read)
    if summary.malformed_lines:
        examples = "; ".join(example for _, _, shown in summary.reasons for example in shown[:1])
        logger.warning("%s: catalog %s: %s; e.g. %s", job, read.path, summary.describe(), examples)
    else:
        logger.info("%s: catalog %s: %s", job, read.path, summary.describe(), extra=DETAIL)
    return summary

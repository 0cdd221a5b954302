"""The shops' event format (contract §1): parse raw JSON lines into valid events or quarantine rows.

Each line is parsed as a JSON value (Spark's VARIANT, no schema inference) and every field's JSON
type is checked against the contract before it is read, so a number where an id belongs, an
object in a string field, a quoted number as ``value`` or an absurd time becomes a precise reason
instead of a silent conversion, a null or an exception later in the batch. Everything here is a
Spark expression: no line's content reaches Python, so no line can make a batch raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recspark.core.contract import EVENT_TYPES, IMPRESSION, MAX_ID_LENGTH, REQUIRED_FIELDS, SERVED_LISTS
from recspark.core.json_lines import one_json_value
from recspark.core.recommendation_ids import (
    RECOMMENDATION_ID_PATTERN,
    SERVED_AT_TOLERANCE,
    served_at_column,
)

# An impression shows at most this many items; a source label is at most this long.
MAX_IMPRESSION_ITEMS = 200
MAX_SOURCE_LENGTH = 64
ISO_8601_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$"
ID_FIELDS = ("event_id", "user_id", "item_id")
# Optional text fields: recommendation_id on any event; list, model_version, variant on
# impressions (ignored on other events, as any field the contract does not give them).
OPTIONAL_STRING_FIELDS = ("session_id", "recommendation_id", "list", "model_version", "variant")
STRING_FIELDS = (*REQUIRED_FIELDS, *OPTIONAL_STRING_FIELDS)
IMPRESSION_ONLY_FIELDS = ("items", "list", "model_version", "variant", "sources")
ARRAY_FIELDS = ("items", "sources")
LABEL_FIELDS = ("model_version", "variant")
# JSON numbers as VARIANT types (schema_of_variant names them so).
_NUMBER = r"^(TINYINT|SMALLINT|INT|BIGINT|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\))$"
_CONTROL = r"[\x00-\x1f\x7f]"


@dataclass(frozen=True)
class TimeBounds:
    """Event times outside [earliest, now + ahead] are broken clocks, not shop activity."""

    earliest: datetime  # ingest.min_event_time
    ahead_minutes: float  # ingest.max_future_minutes, measured from the ingest clock


def _field(v: Column, name: str) -> Column:
    return F.try_variant_get(v, f"$.{name}", "variant")


def _kind(v: Column, name: str) -> Column:
    """The JSON type of a field: STRING, BIGINT, OBJECT<...>, VOID (JSON null), null when absent."""
    return F.schema_of_variant(_field(v, name))


def _text(v: Column, name: str) -> Column:
    """A string field's value, or the JSON text of whatever else is there (for messages)."""
    return F.coalesce(F.try_variant_get(v, f"$.{name}", "string"), F.to_json(_field(v, name)))


def _invalid_id(value: Column) -> Column:
    """An id (or an element of ``items``) that is null, blank, over-long or holds control characters."""
    return value.isNull() | (F.trim(value) == "") | (F.length(value) > MAX_ID_LENGTH) | value.rlike(_CONTROL)


def _is_string_array(kind: Column) -> Column:
    """A JSON array of strings (or an empty one): schema_of_variant says ARRAY<STRING> or ARRAY<VOID>."""
    return kind.isin("ARRAY<STRING>", "ARRAY<VOID>")


def _impression_reasons(present: dict[str, Column], kind: dict[str, Column], text: dict[str, Column]):
    """The rules only an impression must keep: its list, items and sources (checked after the
    rules every event keeps)."""
    items = F.col("items")
    sources = F.col("sources")
    count = F.size(items)
    return [
        (~present["recommendation_id"], F.lit("impression without recommendation_id")),
        (~present["items"], F.lit("impression without items")),
        # One served list, one impression: a retry is then a duplicate event, as for any event.
        (
            text["event_id"] != text["recommendation_id"],
            F.lit("impression event_id is not its recommendation_id"),
        ),
        (
            ~_is_string_array(kind["items"]),
            F.concat(F.lit("items is not an array of strings: "), F.substring(text["items"], 1, 100)),
        ),
        (count == 0, F.lit("impression with an empty items list")),
        (count > MAX_IMPRESSION_ITEMS, F.lit(f"items longer than {MAX_IMPRESSION_ITEMS}")),
        (F.exists(items, _invalid_id), F.lit("items holds an empty, over-long or null item id")),
        (F.size(F.array_distinct(items)) < count, F.lit("items repeats an item")),
        (
            present["list"] & ~text["list"].isin(*SERVED_LISTS),
            F.concat(
                F.lit("impression for an unknown list '"),
                F.substring(text["list"], 1, 100),
                F.lit(f"' (known: {', '.join(SERVED_LISTS)})"),
            ),
        ),
        *[
            (
                present[name] & ((F.length(text[name]) > MAX_ID_LENGTH) | text[name].rlike(_CONTROL)),
                F.lit(f"{name} longer than {MAX_ID_LENGTH} characters or with control characters"),
            )
            for name in LABEL_FIELDS
        ],
        (
            present["sources"] & ~_is_string_array(kind["sources"]),
            F.concat(F.lit("sources is not an array of strings: "), F.substring(text["sources"], 1, 100)),
        ),
        (
            present["sources"] & (F.size(sources) != count),
            F.concat(
                F.lit("sources has "),
                F.size(sources).cast("string"),
                F.lit(" entries for "),
                count.cast("string"),
                F.lit(" items"),
            ),
        ),
        (
            present["sources"]
            & F.exists(sources, lambda x: _invalid_id(x) | (F.length(x) > MAX_SOURCE_LENGTH)),
            F.lit(f"sources holds an empty, null or over-long (> {MAX_SOURCE_LENGTH}) source"),
        ),
        (
            F.abs(F.col("event_time").cast("double") - F.col("_served_at").cast("double"))
            > SERVED_AT_TOLERANCE.total_seconds(),
            F.concat(
                F.lit("impression event_time '"),
                text["event_time"],
                F.lit(
                    f"' is more than {SERVED_AT_TOLERANCE.total_seconds() / 60:g} minutes from "
                    "its recommendation_id's time"
                ),
            ),
        ),
    ]


def _reason(bounds: TimeBounds) -> Column:
    """The first contract rule a line breaks, or null when the event is valid (over the columns
    :func:`_fields` extracted once per line)."""
    v = F.col("_v")
    names = (*STRING_FIELDS, *ARRAY_FIELDS, "value")
    kind = {name: F.col(f"_kind_{name}") for name in names}
    present = {name: kind[name].isNotNull() & (kind[name] != "VOID") for name in kind}
    text = {name: F.col(f"_text_{name}") for name in names}
    impression = text["event_type"] == IMPRESSION
    # An impression shows a list: it may name no item (an item's similar items name it).
    required = {f: present[f] | impression if f == "item_id" else present[f] for f in REQUIRED_FIELDS}
    missing = F.array_compact(F.array(*[F.when(~required[f], F.lit(f)) for f in REQUIRED_FIELDS]))
    value = F.col("value")
    event_time = F.col("event_time")
    checks: list[tuple[Column, Column]] = [
        (
            v.isNull() | ~F.schema_of_variant(v).startswith("OBJECT"),
            F.lit("malformed JSON: not a JSON object"),
        ),
        (F.size(missing) > 0, F.concat(F.lit("missing required field: "), F.array_join(missing, ", "))),
    ]
    for name in STRING_FIELDS:
        checks.append(
            (
                present[name]
                & (kind[name] != "STRING")
                & (impression | ~F.lit(name in IMPRESSION_ONLY_FIELDS)),
                F.concat(F.lit(f"{name} is not a string: "), F.substring(text[name], 1, 100)),
            )
        )
    checks.append(
        (
            present["value"] & ~kind["value"].rlike(_NUMBER),
            F.concat(F.lit("value is not a number: '"), F.substring(text["value"], 1, 100), F.lit("'")),
        )
    )
    for name in ID_FIELDS:
        blank = F.trim(text[name]) == ""
        checks += [
            (blank & ~impression if name == "item_id" else blank, F.lit(f"empty {name}")),
            (F.length(text[name]) > MAX_ID_LENGTH, F.lit(f"{name} longer than {MAX_ID_LENGTH} characters")),
            (text[name].rlike(_CONTROL), F.lit(f"{name} contains control characters")),
        ]
    checks += [
        (~F.is_valid_utf8(F.col("raw")), F.lit("not valid UTF-8")),
        (
            ~text["event_type"].isin(*EVENT_TYPES),
            F.concat(F.lit("unknown event_type '"), F.substring(text["event_type"], 1, 100), F.lit("'")),
        ),
        (
            ~text["event_time"].rlike(ISO_8601_WITH_OFFSET) | event_time.isNull(),
            F.concat(F.lit("unparsable event_time '"), F.substring(text["event_time"], 1, 100), F.lit("'")),
        ),
        (
            event_time < F.lit(bounds.earliest),
            F.concat(
                F.lit("event_time '"),
                text["event_time"],
                F.lit(f"' is before ingest.min_event_time {bounds.earliest.isoformat()}"),
            ),
        ),
        (
            event_time.cast("double") > F.current_timestamp().cast("double") + bounds.ahead_minutes * 60.0,
            F.concat(
                F.lit("event_time '"),
                text["event_time"],
                F.lit(
                    f"' is more than ingest.max_future_minutes={bounds.ahead_minutes:g} ahead of the clock"
                ),
            ),
        ),
        (
            present["value"] & (F.isnan(value) | (F.abs(value) == float("inf"))),
            F.concat(F.lit("value is not a number: '"), F.substring(text["value"], 1, 100), F.lit("'")),
        ),
        ((text["event_type"] == "rating") & ~present["value"], F.lit("rating without a value")),
        (
            (text["event_type"] == "rating") & ~value.between(1, 5),
            F.concat(F.lit("rating value "), F.substring(text["value"], 1, 100), F.lit(" outside 1-5")),
        ),
        (
            present["recommendation_id"] & ~text["recommendation_id"].rlike(RECOMMENDATION_ID_PATTERN),
            F.concat(
                F.lit("malformed recommendation_id '"),
                F.substring(text["recommendation_id"], 1, 100),
                F.lit("' (a lowercase UUID version 7)"),
            ),
        ),
        *[
            (impression & condition, message)
            for condition, message in _impression_reasons(present, kind, text)
        ],
    ]
    reason = F.lit(None).cast("string")
    for condition, message in reversed(checks):
        reason = F.when(F.coalesce(condition, F.lit(False)), message).otherwise(reason)
    return reason


def parse_events(raw: DataFrame, bounds: TimeBounds) -> DataFrame:
    """Parse a DataFrame of ``raw`` lines (plus any context columns) into typed fields and a reason.

    Blank lines carry nothing and are dropped; every other line comes out exactly once, either
    with ``reason`` null and typed event columns, or with the reason it is quarantined (and, when
    it could be read, the ``user_id`` it names, so forget-user can find it).
    """
    with_json = raw.where(F.trim(F.col("raw")) != "").withColumn("_v", one_json_value(F.col("raw")))
    # Each field is extracted once into a column of its own, then checked: Spark keeps the two
    # projections apart rather than repeat the extraction in every rule that reads it.
    v = F.col("_v")
    names = (*STRING_FIELDS, *ARRAY_FIELDS, "value")
    fields = with_json.select(
        *raw.columns,
        v,
        *[_kind(v, name).alias(f"_kind_{name}") for name in names],
        *[_text(v, name).alias(f"_text_{name}") for name in names],
        *[
            F.try_variant_get(v, f"$.{name}", "string").alias(name)
            for name in STRING_FIELDS
            if name != "event_time"
        ],
        *[F.try_variant_get(v, f"$.{name}", "array<string>").alias(name) for name in ARRAY_FIELDS],
        F.try_to_timestamp(F.try_variant_get(v, "$.event_time", "string")).alias("event_time"),
        F.try_variant_get(v, "$.value", "double").alias("value"),
    ).withColumn(
        "_served_at",
        F.when(
            F.col("recommendation_id").rlike(RECOMMENDATION_ID_PATTERN),
            served_at_column(F.col("recommendation_id")),
        ),
    )
    impression = F.col("event_type") == IMPRESSION
    return fields.select(
        *raw.columns,
        _reason(bounds).alias("reason"),
        "event_id",
        "event_time",
        "user_id",
        F.when(impression, F.coalesce("item_id", F.lit(""))).otherwise(F.col("item_id")).alias("item_id"),
        "event_type",
        "value",
        "session_id",
        "recommendation_id",
        *[F.when(impression, F.col(name)).alias(name) for name in IMPRESSION_ONLY_FIELDS],
    )


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNull()).drop("reason")


def quarantined(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull())

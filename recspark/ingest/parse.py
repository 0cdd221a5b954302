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

from recspark.core.config import EVENT_TYPES, REQUIRED_FIELDS
from recspark.core.json_lines import one_json_value

MAX_ID_LENGTH = 256
ISO_8601_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$"
ID_FIELDS = ("event_id", "user_id", "item_id")
STRING_FIELDS = (*REQUIRED_FIELDS, "session_id")
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


def _reason(bounds: TimeBounds) -> Column:
    """The first contract rule a line breaks, or null when the event is valid (over the columns
    :func:`_fields` extracted once per line)."""
    v = F.col("_v")
    kind = {name: F.col(f"_kind_{name}") for name in (*STRING_FIELDS, "value")}
    present = {name: kind[name].isNotNull() & (kind[name] != "VOID") for name in kind}
    text = {name: F.col(f"_text_{name}") for name in (*STRING_FIELDS, "value")}
    missing = F.array_compact(F.array(*[F.when(~present[f], F.lit(f)) for f in REQUIRED_FIELDS]))
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
                present[name] & (kind[name] != "STRING"),
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
        checks += [
            (F.trim(text[name]) == "", F.lit(f"empty {name}")),
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
    fields = with_json.select(
        *raw.columns,
        v,
        *[_kind(v, name).alias(f"_kind_{name}") for name in (*STRING_FIELDS, "value")],
        *[_text(v, name).alias(f"_text_{name}") for name in (*STRING_FIELDS, "value")],
        *[
            F.try_variant_get(v, f"$.{name}", "string").alias(name)
            for name in STRING_FIELDS
            if name != "event_time"
        ],
        F.try_to_timestamp(F.try_variant_get(v, "$.event_time", "string")).alias("event_time"),
        F.try_variant_get(v, "$.value", "double").alias("value"),
    )
    return fields.select(
        *raw.columns,
        _reason(bounds).alias("reason"),
        "event_id",
        "event_time",
        "user_id",
        "item_id",
        "event_type",
        "value",
        "session_id",
    )


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNull()).drop("reason")


def quarantined(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull())

"""The shops' event format (contract §1): parse raw JSON lines into valid events or quarantine rows.

Each line is parsed with an explicit schema (no inference); every rule the contract states gets a
precise reason, so a data engineer can tell from ``events_quarantine`` what a producer did wrong.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import EVENT_TYPES, REQUIRED_FIELDS

MAX_ID_LENGTH = 256
ISO_8601_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$"
_CORRUPT = "_corrupt_record"

# Every field is read as a string so that a wrong type becomes a reason, not a silent null.
RAW_EVENT_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType()) for name in (*REQUIRED_FIELDS, "value", "session_id")]
    + [T.StructField(_CORRUPT, T.StringType())]
)


def _reason(parsed: Column) -> Column:
    """The first contract rule a parsed line breaks, or null when the event is valid."""
    missing = F.array_compact(F.array(*[F.when(parsed[f].isNull(), F.lit(f)) for f in REQUIRED_FIELDS]))
    value = parsed["value"].try_cast("double")
    checks: list[tuple[Column, Column]] = [
        (
            parsed.isNull() | parsed[_CORRUPT].isNotNull(),
            F.lit("malformed JSON: not a JSON object"),
        ),
        (
            F.size(missing) > 0,
            F.concat(F.lit("missing required field: "), F.array_join(missing, ", ")),
        ),
    ]
    for id_field in ("event_id", "user_id", "item_id"):
        checks.append((F.trim(parsed[id_field]) == "", F.lit(f"empty {id_field}")))
        checks.append(
            (
                F.length(parsed[id_field]) > MAX_ID_LENGTH,
                F.lit(f"{id_field} longer than {MAX_ID_LENGTH} characters"),
            )
        )
    checks += [
        (
            ~parsed["event_type"].isin(*EVENT_TYPES),
            F.concat(F.lit("unknown event_type '"), parsed["event_type"], F.lit("'")),
        ),
        (
            ~parsed["event_time"].rlike(ISO_8601_WITH_OFFSET)
            | F.try_to_timestamp(parsed["event_time"]).isNull(),
            F.concat(F.lit("unparsable event_time '"), parsed["event_time"], F.lit("'")),
        ),
        (
            parsed["value"].isNotNull() & value.isNull(),
            F.concat(F.lit("value is not a number: '"), parsed["value"], F.lit("'")),
        ),
        (
            (parsed["event_type"] == "rating") & value.isNull(),
            F.lit("rating without a value"),
        ),
        (
            (parsed["event_type"] == "rating") & ~value.between(1, 5),
            F.concat(F.lit("rating value "), parsed["value"], F.lit(" outside 1-5")),
        ),
    ]
    reason = F.lit(None).cast("string")
    for condition, message in reversed(checks):
        reason = F.when(condition, message).otherwise(reason)
    return reason


def parse_events(raw: DataFrame) -> DataFrame:
    """Parse a DataFrame of ``raw`` lines (plus any context columns) into typed fields and a reason.

    Blank lines carry nothing and are dropped; every other line comes out exactly once, either
    with ``reason`` null and typed event columns, or with the reason it is quarantined.
    """
    parsed = F.from_json(
        F.col("raw"),
        RAW_EVENT_SCHEMA,
        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT},
    )
    with_parsed = raw.where(F.trim(F.col("raw")) != "").withColumn("_parsed", parsed)
    p = F.col("_parsed")
    return with_parsed.select(
        *[c for c in raw.columns],
        _reason(p).alias("reason"),
        p["event_id"].alias("event_id"),
        F.try_to_timestamp(p["event_time"]).alias("event_time"),
        p["user_id"].alias("user_id"),
        p["item_id"].alias("item_id"),
        p["event_type"].alias("event_type"),
        p["value"].try_cast("double").alias("value"),
        p["session_id"].alias("session_id"),
    )


def valid_events(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNull()).drop("reason")


def quarantined(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull())

"""The ingestion rules as pure functions on inline frames: parsing, the batch plan, the id map,
and the interactions aggregate (no stream, no checkpoint)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config.ingest import InteractionsConfig
from recspark.core.interactions import aggregate_events
from recspark.core.privacy import user_hash
from recspark.core.tables import EVENTS_SCHEMA, FORGOTTEN_USERS_SCHEMA, USER_IDS, Lake
from recspark.ingest.parse import TimeBounds, parse_events
from recspark.ingest.plan import (
    BAD,
    CONFLICT,
    CONFLICT_REASON,
    CONTENT,
    DUPLICATE,
    FORGOTTEN,
    NEW,
    plan_batch,
)
from recspark.model.families.idmap import extend_id_map
from recspark.ops.forget import forget_user

BOUNDS = TimeBounds(datetime(2000, 1, 1), ahead_minutes=60)


def line(event_id: str, time: str, user: str, item: str = "i1", kind: str = "view", **extra: object) -> str:
    record = {"event_id": event_id, "event_time": time, "user_id": user, "item_id": item, "event_type": kind}
    return json.dumps({**record, **extra})


def parsed(spark: SparkSession, lines: list[str]) -> DataFrame:
    raw = spark.createDataFrame([(text, "inline") for text in lines], "raw string, source string")
    return parse_events(raw, BOUNDS).withColumn("ingested_at", F.current_timestamp())


def test_parse_names_the_first_broken_rule_and_types_the_valid_event(spark: SparkSession) -> None:
    rows = parsed(
        spark,
        [
            line("a", "2026-11-01T10:00:00+01:00", "u1", kind="purchase", value=2),
            line("b", "1999-12-31T23:59:59Z", "u1"),
            line("c", "2026-11-01T10:00:00Z", "u1", value="2"),
            line("d", "2026-11-01T10:00:00Z", "u1") + line("e", "2026-11-01T10:00:00Z", "u1"),
            "   ",
        ],
    ).collect()
    by_id = {r.raw[:18]: r for r in rows}
    assert len(rows) == 4  # the blank line carries nothing
    valid = by_id['{"event_id": "a", ']
    assert valid.reason is None and valid.value == 2.0
    assert valid.event_time == datetime(2026, 11, 1, 9, 0)  # UTC (the session's time zone)
    assert "is before ingest.min_event_time" in by_id['{"event_id": "b", '].reason
    assert by_id['{"event_id": "c", '].reason == "value is not a number: '2'"
    assert by_id['{"event_id": "d", '].reason == "malformed JSON: not a JSON object"


def test_the_plan_gives_every_line_one_fate(spark: SparkSession) -> None:
    batch = parsed(
        spark,
        [
            line("new", "2026-11-01T10:00:00Z", "u1"),
            line("retry", "2026-11-01T10:00:00Z", "u1"),  # stored already, same content
            line("clash", "2026-11-01T10:00:00Z", "u1", item="i2"),  # stored already, other content
            line("twice", "2026-11-01T11:00:00Z", "u2"),
            line("twice", "2026-11-01T11:00:00Z", "u2"),  # a copy within the batch
            line("gone", "2026-10-01T10:00:00Z", "forgotten-user"),  # before the forget
            line("back", "2026-11-20T10:00:00Z", "forgotten-user"),  # after it: a new start
            line("bad", "yesterday", "u1"),
        ],
    )
    stored_rows = [("retry", "u1", "i1"), ("clash", "u1", "i1")]
    stored_schema = T.StructType([EVENTS_SCHEMA[c] for c in ("event_id", *CONTENT)])
    unset = (None,) * (len(CONTENT) - 4)  # value, session_id and the impression fields
    stored = spark.createDataFrame(
        [(e, datetime(2026, 11, 1, 10, 0), u, i, "view", *unset) for e, u, i in stored_rows], stored_schema
    )
    forgotten = spark.createDataFrame(
        [("placeholder", datetime(2026, 11, 10, tzinfo=timezone.utc))], FORGOTTEN_USERS_SCHEMA
    ).withColumn("user_hash", user_hash(F.lit("forgotten-user")))

    plan = plan_batch(batch, stored, forgotten)

    fates = plan.decided.select("event_id", "fate").orderBy("event_id", "fate")
    expected = spark.createDataFrame(
        [
            ("back", NEW),
            ("bad", BAD),
            ("clash", CONFLICT),
            ("gone", FORGOTTEN),
            ("new", NEW),
            ("retry", DUPLICATE),
            ("twice", DUPLICATE),
            ("twice", NEW),
        ],
        "event_id string, fate string",
    ).orderBy("event_id", "fate")
    assert_df_equality(fates, expected, ignore_nullable=True)
    assert {r.reason for r in plan.quarantine().collect()} == {
        CONFLICT_REASON,
        "unparsable event_time 'yesterday'",
    }
    counts = plan.counts(watermark=datetime(2026, 11, 15))
    assert (counts["events_written"], counts["duplicate_rows"], counts["forgotten_rows"]) == (3, 2, 1)
    assert counts["late_rows"] == 2 and counts["max_event_time"] == datetime(2026, 11, 20, 10, 0)
    assert {r.event_month.isoformat() for r in plan.events().collect()} == {"2026-11-01"}


def test_the_id_map_is_stable_and_never_reuses_an_index(spark: SparkSession, tmp_path: Path) -> None:
    lake = Lake.at(str(tmp_path / "lake"))
    ids = spark.createDataFrame([("b",), ("a",), ("c",), ("a",)], "user_id string")
    first = {r.user_id: r.user_idx for r in extend_id_map(spark, lake, USER_IDS, ids).collect()}
    assert first == {"a": 0, "b": 1, "c": 2}
    forget_user(spark, lake, "c")  # the holder of the highest index
    more = spark.createDataFrame([("d",), ("a",)], "user_id string")
    second = {r.user_id: r.user_idx for r in extend_id_map(spark, lake, USER_IDS, more).collect()}
    assert second == {"a": 0, "b": 1, "d": 3}


@pytest.mark.parametrize("half_life_days", [None, 10.0])
def test_interactions_are_the_same_whatever_the_batches(
    spark: SparkSession, half_life_days: float | None
) -> None:
    settings = InteractionsConfig(half_life_days=half_life_days)
    events = spark.createDataFrame(
        [
            ("u1", "i1", "view", None, datetime(2026, 11, 1, 10)),
            ("u1", "i1", "purchase", 1.0, datetime(2026, 11, 3, 10)),
            ("u1", "i1", "rating", 4.0, datetime(2026, 11, 2, 10)),
            ("u2", "i1", "remove_from_cart", None, datetime(2026, 11, 1, 10)),
        ],
        "user_id string, item_id string, event_type string, value double, event_time timestamp",
    )
    whole = aggregate_events(events, settings).orderBy("user_id").collect()
    u1, u2 = whole
    assert (u1.view_count, u1.purchase_count, u1.rating_count, u1.last_rating) == (1, 1, 1, 4.0)
    assert u1.last_event_time == datetime(2026, 11, 3, 10) and u1.first_event_time == datetime(
        2026, 11, 1, 10
    )
    assert u2.signal < 0 and u2.strength == 0.0
    if half_life_days is None:
        weights = settings.weights
        assert u1.signal == pytest.approx(weights["view"] + weights["purchase"] + weights["rating"] * 4 / 5)

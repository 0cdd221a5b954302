"""Ingestion never loses or double-counts an event: real streams, real checkpoints, real Delta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.tables import EVENTS, INGEST_METRICS, INTERACTIONS, QUARANTINE, Lake
from recspark.ingest.stream import QUERY_NAME, EventBatchWriter, start_ingest
from tests.conftest import config_under


def event(event_id: str, time: str, user: str, item: str, kind: str, value: float | None = None) -> str:
    record: dict[str, object] = {
        "event_id": event_id,
        "event_time": time,
        "user_id": user,
        "item_id": item,
        "event_type": kind,
    }
    if value is not None:
        record["value"] = value
    return json.dumps(record)


def drop_file(config: Config, name: str, lines: list[str]) -> None:
    folder = Path(config.ingest.path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")


def ingest(spark: SparkSession, config: Config, writer: EventBatchWriter | None = None) -> None:
    lake = Lake.at(config.lake.root)
    query = start_ingest(spark, config, lake, once=True, writer=writer)
    query.awaitTermination()


def table(spark: SparkSession, config: Config, spec) -> DataFrame:
    return Lake.at(config.lake.root).read(spark, spec)


def stable_events(spark: SparkSession, config: Config) -> DataFrame:
    return table(spark, config, EVENTS).drop("ingested_at", "ingest_app_id", "ingest_batch_id")


def stable_interactions(spark: SparkSession, config: Config) -> DataFrame:
    return table(spark, config, INTERACTIONS).drop("updated_at")


FILE_1 = [
    event("e1", "2026-11-01T10:00:00Z", "u1", "i1", "view"),
    event("e2", "2026-11-01T10:05:00Z", "u1", "i1", "add_to_cart"),
    event("e3", "2026-11-01T10:06:00Z", "u1", "i1", "purchase", 1),
    event("e3", "2026-11-01T10:06:00Z", "u1", "i1", "purchase", 1),  # retried in the same file
    event("e4", "2026-11-02T09:00:00+01:00", "u2", "i2", "rating", 4),
]
FILE_2 = [
    event("e2", "2026-11-01T10:05:00Z", "u1", "i1", "add_to_cart"),  # retried in a later file
    event("e5", "2026-11-03T12:00:00Z", "u2", "i1", "view"),
    event("e6", "2026-11-03T12:01:00Z", "u2", "i1", "remove_from_cart"),
]
FILE_3 = [
    event("e7", "2026-10-20T08:00:00Z", "u1", "i2", "view"),  # two weeks late
    event("e4", "2026-11-02T09:00:00+01:00", "u2", "i2", "rating", 4),  # retried after restart
    event("e8", "2026-11-04T08:00:00Z", "u3", "i3", "purchase", 2),
]


def many_batch_config(root: Path) -> Config:
    return config_under(root, "ingest.max_files_per_trigger=1", "interactions.half_life_days=10")


def test_quarantine_names_every_broken_record(spark: SparkSession, config: Config) -> None:
    good = event("ok1", "2026-11-01T10:00:00Z", "u1", "i1", "view")
    broken = {
        '{"event_id": "b1", "event_time": ': "malformed JSON: not a JSON object",
        "[1, 2, 3]": "malformed JSON: not a JSON object",
        json.dumps(
            {
                "event_id": "b2",
                "event_time": "2026-11-01T10:00:00Z",
                "item_id": "i1",
                "event_type": "view",
            }
        ): "missing required field: user_id",
        json.dumps(
            {"event_id": "b3", "user_id": "u1", "item_id": "i1", "event_type": "view"}
        ): "missing required field: event_time",
        event("b4", "2026-11-01T10:00:00Z", "u1", "i1", "click"): "unknown event_type 'click'",
        event("b5", "yesterday", "u1", "i1", "view"): "unparsable event_time 'yesterday'",
        event("b6", "2026-11-01 10:00", "u1", "i1", "view"): "unparsable event_time '2026-11-01 10:00'",
        event("b7", "2026-11-01T10:00:00Z", "u1", "i1", "rating", 7): "rating value 7 outside 1-5",
        event("b8", "2026-11-01T10:00:00Z", "u1", "i1", "rating", 0.5): "rating value 0.5 outside 1-5",
        event("b9", "2026-11-01T10:00:00Z", "u1", "i1", "rating"): "rating without a value",
        event("b10", "2026-11-01T10:00:00Z", "", "i1", "view"): "empty user_id",
        event("b11", "2026-11-01T10:00:00Z", "u1", "x" * 300, "view"): "item_id longer than 256 characters",
        json.dumps(
            {
                "event_id": "b12",
                "event_time": "2026-11-01T10:00:00Z",
                "user_id": "u1",
                "item_id": "i1",
                "event_type": "purchase",
                "value": "lots",
            }
        ): "value is not a number: 'lots'",
    }
    extra_fields = json.dumps(
        {
            "event_id": "ok2",
            "event_time": "2026-11-01T10:00:00Z",
            "user_id": "u1",
            "item_id": "i2",
            "event_type": "view",
            "campaign": {"id": 7},
            "new_field": [1, 2],
        }
    )
    drop_file(config, "mixed.jsonl", [good, *broken, "", extra_fields])
    ingest(spark, config)

    quarantine = table(spark, config, QUARANTINE)
    got = {r["raw"]: r["reason"] for r in quarantine.collect()}
    assert got == broken
    assert {r["event_id"] for r in table(spark, config, EVENTS).collect()} == {"ok1", "ok2"}
    assert quarantine.where("source LIKE '%mixed.jsonl'").count() == len(broken)
    assert quarantine.where("user_id = 'u1'").count() >= 8  # forget-user can find them


@pytest.fixture(scope="module")
def restarted(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """Three files, one micro-batch each, with a restart of the query before the third."""
    config = many_batch_config(tmp_path_factory.mktemp("restarted"))
    drop_file(config, "f1.jsonl", FILE_1)
    drop_file(config, "f2.jsonl", FILE_2)
    ingest(spark, config)
    drop_file(config, "f3.jsonl", FILE_3)
    ingest(spark, config)  # a restart on the same checkpoint
    return config


def test_duplicates_are_stored_and_counted_once_across_batches_and_restarts(
    spark: SparkSession, restarted: Config
) -> None:
    config = restarted
    events = table(spark, config, EVENTS)
    assert events.count() == 8
    assert events.select("event_id").distinct().count() == 8
    pairs = {(r["user_id"], r["item_id"]): r for r in table(spark, config, INTERACTIONS).collect()}
    u1i1 = pairs[("u1", "i1")]
    assert (u1i1["view_count"], u1i1["add_to_cart_count"], u1i1["purchase_count"]) == (1, 1, 1)
    assert pairs[("u2", "i2")]["rating_count"] == 1
    assert pairs[("u1", "i2")]["view_count"] == 1  # the late event still counts
    metrics = table(spark, config, INGEST_METRICS).orderBy("batch_id").collect()
    assert [m["duplicate_rows"] for m in metrics] == [1, 1, 1]
    assert [m["events_written"] for m in metrics] == [4, 2, 2]
    assert [m["interactions_touched"] for m in metrics] == [2, 1, 2]


def test_events_beyond_the_watermark_are_flagged_late_yet_stored_and_counted(
    spark: SparkSession, restarted: Config
) -> None:
    """The watermark (newest event time of earlier batches minus the allowed lateness, 72 h by
    default) survives the restart before the third batch, whose two-week-late view is flagged."""
    metrics = table(spark, restarted, INGEST_METRICS).orderBy("batch_id").collect()
    assert [m["late_rows"] for m in metrics] == [0, 0, 1]
    assert [m["max_event_time"].isoformat() for m in metrics] == [
        "2026-11-02T08:00:00",
        "2026-11-03T12:01:00",
        "2026-11-04T08:00:00",
    ]
    assert set(metrics[-1]["phase_seconds"]) >= {"parse", "dedup", "events", "merge"}
    late = table(spark, restarted, EVENTS).where("event_id = 'e7'").collect()
    assert len(late) == 1 and late[0]["event_date"].isoformat() == "2026-10-20"


def test_crash_between_writes_then_restart_equals_uninterrupted_run(
    spark: SparkSession, tmp_path: Path
) -> None:
    reference = many_batch_config(tmp_path / "reference")
    crashed = many_batch_config(tmp_path / "crashed")
    for config in (reference, crashed):
        for name, lines in (("f1.jsonl", FILE_1), ("f2.jsonl", FILE_2), ("f3.jsonl", FILE_3)):
            drop_file(config, name, lines)
    ingest(spark, reference)

    lake = Lake.at(crashed.lake.root)
    writer = EventBatchWriter(crashed, lake, lake.checkpoint(QUERY_NAME))

    def crash_in_second_batch(batch_id: int) -> None:
        if batch_id == 1:
            raise RuntimeError("simulated crash after the events write")

    writer.before_interactions = crash_in_second_batch
    with pytest.raises(StreamingQueryException, match="simulated crash"):
        ingest(spark, crashed, writer)
    # The events of the crashed batch are in, their interactions are not.
    assert table(spark, crashed, EVENTS).count() == 6
    ingest(spark, crashed)  # restart from the checkpoint with a healthy writer

    assert_df_equality(
        stable_events(spark, crashed),
        stable_events(spark, reference),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert_approx_df_equality(
        stable_interactions(spark, crashed),
        stable_interactions(spark, reference),
        1e-9,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert table(spark, crashed, INGEST_METRICS).select("batch_id").distinct().count() == 3


def test_incremental_interactions_equal_a_rebuild_from_events(spark: SparkSession, restarted: Config) -> None:
    config = restarted
    assert table(spark, config, INGEST_METRICS).count() == 3  # three separate MERGEs

    rebuilt = aggregate_events(table(spark, config, EVENTS), config.interactions).drop("updated_at")
    assert_approx_df_equality(
        stable_interactions(spark, config).orderBy("user_id", "item_id"),
        rebuilt.select(*stable_interactions(spark, config).columns).orderBy("user_id", "item_id"),
        1e-9,
        ignore_nullable=True,
    )
    u2i1 = rebuilt.where("user_id = 'u2' AND item_id = 'i1'").first()
    # A view then a removal a minute later; the view decays by a minute's worth of a 10-day half-life.
    assert u2i1["signal"] == pytest.approx(1.0 * 0.5 ** (60 / (10 * 86_400)) - 2.0, rel=1e-12)
    assert u2i1["strength"] == 0.0


def test_interactions_table_has_change_data_feed(spark: SparkSession, restarted: Config) -> None:
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .load(Lake.at(restarted.lake.root).path(INTERACTIONS.name))
    )
    inserted = {
        (r["user_id"], r["item_id"]) for r in changes.where(F.col("_change_type") == "insert").collect()
    }
    assert inserted == {("u1", "i1"), ("u2", "i2"), ("u2", "i1"), ("u1", "i2"), ("u3", "i3")}

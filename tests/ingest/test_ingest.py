"""Ingestion never loses or double-counts an event: real streams, real checkpoints, real Delta."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import recspark.ingest.fold as fold_module
from recspark.cli import main
from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.streaming import append_idempotent
from recspark.core.tables import EVENTS, INGEST_METRICS, INTERACTIONS, QUALITY_RESULTS, QUARANTINE, Lake
from recspark.ingest.fold import NEW_PAIRS_APP_SUFFIX, fold_increments
from recspark.ingest.plan import CONFLICT_REASON
from recspark.ingest.stream import QUERY_NAME, start_ingest
from recspark.ingest.writer import EventBatchWriter
from tests.conftest import TEST_SETTINGS, config_under


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
    """Land a file after every file already there. The file source takes files in order of
    their modification time in milliseconds, and files written within the same millisecond in
    directory order, so each file's mtime is set a second past the newest one's."""
    folder = Path(config.ingest.path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    newest = max((p.stat().st_mtime for p in folder.iterdir() if p != path), default=None)
    path.write_text("\n".join(lines) + "\n")
    if newest is not None and path.stat().st_mtime < newest + 1:
        os.utime(path, (newest + 1, newest + 1))


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


FILE_4 = [event("e9", "2026-11-04T07:00:00Z", "u1", "i1", "view")]  # a pair batch 0 wrote


def interactions_writes(spark: SparkSession, config: Config) -> list[str]:
    """The operations that wrote ``interactions``, oldest first."""
    history = Lake.at(config.lake.root).delta(spark, INTERACTIONS).history().orderBy("version")
    return [r["operation"] for r in history.collect() if r["operation"] in ("WRITE", "MERGE")]


@pytest.mark.slow
def test_crashes_around_the_interactions_write_then_restarts_equal_an_uninterrupted_run(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Batches of new pairs only are appended, a batch with a known pair is MERGEd; a crash
    before or after either write, then a restart, counts every event once."""
    reference = many_batch_config(tmp_path / "reference")
    crashed = many_batch_config(tmp_path / "crashed")
    files = (("f1.jsonl", FILE_1), ("f2.jsonl", FILE_2), ("f3.jsonl", FILE_3), ("f4.jsonl", FILE_4))
    for config in (reference, crashed):
        for name, lines in files:
            drop_file(config, name, lines)
    ingest(spark, reference)
    assert interactions_writes(spark, reference) == ["WRITE", "WRITE", "WRITE", "MERGE"]

    lake = Lake.at(crashed.lake.root)

    class CrashAround(EventBatchWriter):
        """Dies just before or just after the interactions write of one batch."""

        def __init__(self, batch: int, when: str) -> None:
            super().__init__(crashed, lake, lake.checkpoint(QUERY_NAME))
            self.batch, self.when = batch, when

        def write_interactions(self, events: DataFrame, app_id: str, batch_id: int) -> int:
            if (batch_id, self.when) == (self.batch, "before"):
                raise RuntimeError("simulated crash before the interactions write")
            written = super().write_interactions(events, app_id, batch_id)
            if (batch_id, self.when) == (self.batch, "after"):
                raise RuntimeError("simulated crash after the interactions write")
            return written

    # Batch 0 appends its pairs and dies before its metrics; batch 1 dies after its events;
    # batch 3 MERGEs into a pair of batch 0 and dies before its metrics.
    for batch, when, events_stored in ((0, "after", 4), (1, "before", 6), (3, "after", 9)):
        with pytest.raises(StreamingQueryException, match=f"simulated crash {when}"):
            ingest(spark, crashed, CrashAround(batch, when))
        assert table(spark, crashed, EVENTS).count() == events_stored
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
    u1i1 = table(spark, crashed, INTERACTIONS).where("user_id = 'u1' AND item_id = 'i1'").first()
    assert u1i1["view_count"] == 2  # batch 0's view and batch 3's, each once
    assert table(spark, crashed, INGEST_METRICS).select("batch_id").distinct().count() == 4


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


def test_an_ingest_merge_marks_updated_pairs_deleted_instead_of_rewriting_their_files(
    spark: SparkSession, tmp_path: Path
) -> None:
    """With deletion vectors a batch's MERGE writes its own pairs and a vector per file it
    touches, instead of rewriting those files: the bytes it writes follow the batch, not the
    table (#15; docs/history/benchmarks-2026-12.md, "The ingest MERGE at three table sizes")."""
    config = many_batch_config(tmp_path)
    drop_file(
        config, "f1.jsonl", [event(f"a{u}", "2026-11-01T10:00:00Z", f"u{u}", "i1", "view") for u in range(6)]
    )
    drop_file(config, "f2.jsonl", [event("b1", "2026-11-02T10:00:00Z", "u1", "i1", "purchase", 1)])
    ingest(spark, config)

    history = Lake.at(config.lake.root).delta(spark, INTERACTIONS).history()
    merges = [r["operationMetrics"] for r in history.where("operation = 'MERGE'").collect()]
    assert len(merges) == 1, "the second batch updates a known pair"
    assert int(merges[0]["numTargetRowsUpdated"]) == 1
    assert int(merges[0]["numTargetFilesRemoved"]) == 0
    assert int(merges[0]["numTargetDeletionVectorsAdded"]) == 1
    pairs = {r["user_id"]: r["purchase_count"] for r in table(spark, config, INTERACTIONS).collect()}
    assert pairs == {"u0": 0, "u1": 1, "u2": 0, "u3": 0, "u4": 0, "u5": 0}


def shuffled_rows(spark: SparkSession, after_stage: int) -> tuple[int, int]:
    """(rows written to shuffles by stages after ``after_stage``, the newest stage id), from
    Spark's own status store (it is there with the UI off)."""
    sc = spark.sparkContext
    no_quantiles = sc._gateway.new_array(sc._jvm.double, 0)
    any_task = sc._jvm.java.util.ArrayList()
    stages = sc._jsc.sc().statusStore().stageList(None, False, False, no_quantiles, any_task)
    written, newest = 0, after_stage
    for index in range(stages.size()):
        stage = stages.apply(index)
        if stage.stageId() > after_stage:
            written += stage.shuffleWriteRecords()
            newest = max(newest, stage.stageId())
    return written, newest


def test_a_batch_folds_into_interactions_without_shuffling_the_table(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A batch that updates a few known pairs and adds a few new ones shuffles rows that follow
    the batch. One MERGE with an insert clause joined the batch LEFT OUTER the whole table, a
    join Spark cannot broadcast, so every batch shuffled every pair the table held (#15)."""
    config = many_batch_config(tmp_path)
    day = "2026-10-01T10:00:00Z"
    history = [event(f"h{u}-{i}", day, f"u{u}", f"i{i}", "view") for u in range(100) for i in range(30)]
    drop_file(config, "f1.jsonl", history)
    ingest(spark, config)
    drop_file(
        config,
        "f2.jsonl",
        [
            event("n1", "2026-11-02T10:00:00Z", "u1", "i1", "purchase", 1),
            event("n2", "2026-11-02T10:00:00Z", "u2", "i2", "view"),
            event("n3", "2026-11-02T10:00:00Z", "u1", "i99", "view"),
            event("n4", "2026-11-02T10:00:00Z", "new", "i1", "view"),
        ],
    )
    _, before = shuffled_rows(spark, -1)
    # As for a table of many megabytes: Spark broadcasts the batch, not the table.
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "1024")
    try:
        ingest(spark, config)
    finally:
        spark.conf.unset("spark.sql.autoBroadcastJoinThreshold")
    shuffled, _ = shuffled_rows(spark, before)

    assert shuffled < 300, f"the batch of 4 events shuffled {shuffled} rows; the table holds 3,000 pairs"
    pairs = table(spark, config, INTERACTIONS)
    assert pairs.count() == 3_002
    assert pairs.where("user_id = 'u1' AND item_id = 'i1'").first()["purchase_count"] == 1


def test_a_crash_between_the_update_of_known_pairs_and_the_append_of_new_ones_counts_each_event_once(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's known pairs and its new pairs are two commits; a replay after the first, or
    after both, leaves what one uninterrupted fold leaves."""
    config = many_batch_config(tmp_path)
    lake = Lake.at(config.lake.root)
    lake.ensure(spark, INTERACTIONS)
    path = lake.path(INTERACTIONS.name)
    first = [
        ("u1", "i1", "view", None, "2026-11-01 10:00:00"),
        ("u2", "i2", "rating", 4.0, "2026-11-01 11:00:00"),
    ]
    second = [  # u1-i1 is known, u3-i3 new
        ("u1", "i1", "purchase", 1.0, "2026-11-02 10:00:00"),
        ("u3", "i3", "view", None, "2026-11-02 10:00:00"),
    ]

    def events_of(rows: list[tuple]) -> DataFrame:
        schema = "user_id string, item_id string, event_type string, value double, event_time string"
        return spark.createDataFrame(rows, schema).withColumn("event_time", F.to_timestamp("event_time"))

    def fold(rows: list[tuple], version: int) -> int:
        increments = aggregate_events(events_of(rows), config.interactions).localCheckpoint(eager=True)
        return fold_increments(spark, path, increments, config.interactions, "query", version)

    assert fold(first, 0) == 2
    real_append = append_idempotent

    def crash_before_new_pairs(frame: DataFrame, to: str, app_id: str, version: int) -> None:
        if app_id.endswith(NEW_PAIRS_APP_SUFFIX):
            raise RuntimeError("simulated crash before the new pairs' commit")
        real_append(frame, to, app_id, version)

    monkeypatch.setattr(fold_module, "append_idempotent", crash_before_new_pairs)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fold(second, 1)
    assert lake.read(spark, INTERACTIONS).count() == 2  # u1-i1 updated, u3-i3 not there yet
    monkeypatch.setattr(fold_module, "append_idempotent", real_append)
    assert fold(second, 1) == 1  # the MERGE is skipped as committed; the new pair lands
    assert fold(second, 1) == 0  # a replay after both commits changes nothing

    once = aggregate_events(events_of(first + second), config.interactions).drop("updated_at")
    assert_approx_df_equality(
        lake.read(spark, INTERACTIONS).drop("updated_at").orderBy("user_id", "item_id"),
        once.orderBy("user_id", "item_id"),
        1e-9,
        ignore_nullable=True,
    )


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


def _cli_settings(config: Config) -> list[str]:
    settings = [
        *TEST_SETTINGS,
        f"lake.root={config.lake.root}",
        f"ingest.path={config.ingest.path}",
        f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
    ]
    return [arg for setting in settings for arg in ("--set", setting)]


def _hostile_corpus() -> tuple[list[bytes], list[bytes], set[str]]:
    """(good lines, bad lines, good event ids): what producers, bugs and attackers really send."""
    good_ids = {f"g{k}" for k in range(6)} | {"dup-same", "conflict", "unicode", "wide"}
    good = [event(f"g{k}", f"2026-11-0{k + 1}T10:00:00Z", f"u{k}", f"i{k}", "view") for k in range(6)]
    good += [
        event("dup-same", "2026-11-01T11:00:00Z", "u1", "i1", "purchase", 2),
        event("dup-same", "2026-11-01T11:00:00Z", "u1", "i1", "purchase", 2),  # retry: stored once
        event("conflict", "2026-11-01T12:00:00Z", "u1", "i1", "view"),
        event("unicode", "2026-11-01T12:00:00+05:30", "Zoë 👍", "ſtraße", "view"),
        json.dumps(
            {**json.loads(event("wide", "2026-11-01T12:00:00Z", "u2", "i2", "view")), "blob": "z" * 500_000}
        ),
    ]

    def record(**fields: object) -> str:
        base: dict[str, object] = {
            "event_id": "b",
            "event_time": "2026-11-01T10:00:00Z",
            "user_id": "u1",
            "item_id": "i1",
            "event_type": "view",
        }
        return json.dumps({**base, **fields})

    bad = [
        # encodings and bytes
        b'{"event_id":"x1","event_time":"2026-11-01T10:00:00Z","user_id":"u\xff\xfe",'
        b'"item_id":"i1","event_type":"view"}',
        b'{"event_id":"x2\x00","event_time":"2026-11-01T10:00:00Z","user_id":"u1","item_id":"i1",'
        b'"event_type":"view"}',
        record(event_id="x3", user_id="u\u0000x").encode(),
        record(event_id="x4\t").encode(),
        b"\x00\x00\x00\x00",
        # not an object, broken JSON
        b"[1, 2, 3]",
        b'"just a string"',
        b"42",
        b"null",
        b"[" * 5000 + b"]" * 5000,
        record(event_id="x5").encode() + b" trailing",
        b'{"event_id": "x6", "event_time": ',
        b'{"event_id": "x7", "value": NaN, "event_time": "2026-11-01T10:00:00Z"}',
        # wrong JSON types
        record(event_id="x8", user_id={"id": 1}).encode(),
        record(event_id="x9", item_id=["i1"]).encode(),
        record(event_id="x10", user_id=123).encode(),
        record(event_id=11).encode(),
        record(event_id="x12", event_type="purchase", value="5").encode(),
        record(event_id="x13", event_time=1730000000).encode(),
        record(event_id="x14", event_type=True).encode(),
        record(event_id="x15", session_id={"s": 1}).encode(),
        # absurd numbers and sizes
        b'{"event_id":"x16","event_time":"2026-11-01T10:00:00Z","user_id":"u1","item_id":"i1",'
        b'"event_type":"purchase","value":1e400}',
        record(event_id="x17", event_type="rating", value=5.5).encode(),
        record(event_id="x18", event_type="rating", value=-1e308).encode(),
        record(event_id="x19", item_id="x" * 1_000_000).encode(),
        record(event_id="x20", user_id="   ").encode(),
        # absurd times, in several forms
        record(event_id="t1", event_time="0001-01-01T00:00:00+01:00").encode(),
        record(event_id="t2", event_time="9999-12-31T23:59:59-05:00").encode(),
        record(event_id="t3", event_time="9999-01-01T00:00:00Z").encode(),
        record(event_id="t4", event_time="2099-01-01T00:00:00Z").encode(),
        record(event_id="t5", event_time="1969-12-31T23:59:59Z").encode(),
        record(event_id="t6", event_time="+275760-09-13T00:00:00Z").encode(),
        record(event_id="t7", event_time="2026-13-45T10:00:00Z").encode(),
        record(event_id="t8", event_time="2026-11-01T10:00:00").encode(),
        record(event_id="t9", event_time="").encode(),
        record(event_id="t10", event_time="2026-02-30T10:00:00Z").encode(),
        record(event_id="t11", event_time="2026-11-01T25:00:00Z").encode(),
        record(event_id="t12", event_time="2026-11-01T10:00:00+25:00").encode(),
        # unknown and missing things
        record(event_id="x21", event_type="VIEW").encode(),
        record(event_id="x22", user_id=None).encode(),
        b'{"event_id":"x23","event_time":"2026-11-01T10:00:00Z","item_id":"i1","event_type":"view"}',
        record(event_id="x24", event_type="rating").encode(),
        # the same id again with other content
        record(event_id="conflict", event_time="2026-11-01T12:00:00Z", item_id="i9").encode(),
        record(
            event_id="g0", event_time="2026-11-01T10:00:00Z", user_id="u0", item_id="i0", value=3
        ).encode(),
    ]
    return [line.encode() for line in good], bad, good_ids


@pytest.mark.slow
def test_hostile_corpus_is_quarantined_line_by_line_and_the_stream_goes_on(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = config_under(tmp_path)
    good, bad, good_ids = _hostile_corpus()
    assert len(good) + len(bad) >= 50
    folder = Path(config.ingest.path)
    folder.mkdir(parents=True)
    lines = [*good[:5], *bad, *good[5:], b"", b"   "]
    (folder / "hostile.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    assert main(["ingest", "--once", *_cli_settings(config)]) == 0

    events = table(spark, config, EVENTS)
    assert sorted(r.event_id for r in events.collect()) == sorted(good_ids)
    quarantine = table(spark, config, QUARANTINE)
    assert quarantine.count() == len(bad)
    assert quarantine.where(F.col("reason").isNull() | (F.col("reason") == "")).count() == 0
    reasons = [r.reason for r in quarantine.collect()]
    assert any("is before ingest.min_event_time" in r for r in reasons)
    assert any("ahead of the clock" in r for r in reasons)
    assert sum("already used by an event with different content" in r for r in reasons) == 2
    assert table(spark, config, INTERACTIONS).where("user_id = 'Zoë 👍'").count() == 1
    metrics = table(spark, config, INGEST_METRICS).first()
    assert metrics["quarantined_rows"] == len(bad) and metrics["events_written"] == len(good_ids)
    assert metrics["max_event_time"].year == 2026  # no absurd time became "now"

    drop_file(config, "next.jsonl", [event("n1", "2026-11-07T10:00:00Z", "u1", "i1", "view")])
    assert main(["ingest", "--once", *_cli_settings(config)]) == 0
    assert table(spark, config, EVENTS).where("event_id = 'n1'").count() == 1
    assert table(spark, config, INGEST_METRICS).count() == 2


@pytest.mark.slow
def test_ingest_gates_check_the_rows_the_run_wrote_and_check_covers_the_whole_tables(
    spark: SparkSession, tmp_path: Path
) -> None:
    """The per-run gates cost what the run wrote (a 22-year history re-validated for 25 new
    events took 50 s); a defect only the whole table shows is `recspark check`'s to find."""
    config = config_under(tmp_path)
    lake = Lake.at(config.lake.root)
    settings = [*_cli_settings(config), "--set", "quality.on_failure.events=fail"]
    drop_file(config, "first.jsonl", FILE_1)
    assert main(["ingest", "--once", *settings]) == 0
    # An earlier writer (not ingest) left a second row with e1's id: only the whole table shows it.
    table(spark, config, EVENTS).where("event_id = 'e1'").write.format("delta").mode("append").save(
        lake.path(EVENTS.name)
    )
    drop_file(config, "second.jsonl", [event("n1", "2026-11-07T10:00:00Z", "u3", "i9", "view")])

    assert main(["ingest", "--once", *settings]) == 0

    gates = lake.read(spark, QUALITY_RESULTS).orderBy("validated_at").collect()
    assert [(r["job"], r["table_name"], r["rows_validated"], r["success"]) for r in gates] == [
        ("ingest", "events", 4, True),
        ("ingest", "interactions", 2, True),
        ("ingest", "events", 1, True),
        ("ingest", "interactions", 1, True),
    ]
    assert all(r["scope"].startswith("rows written since ") for r in gates)

    assert main(["check", *settings]) == 2
    checked = lake.read(spark, QUALITY_RESULTS).where("job = 'check'").collect()
    verdicts = {r["table_name"]: (r["rows_validated"], r["success"], r["scope"]) for r in checked}
    assert verdicts == {"events": (6, False, "whole table"), "interactions": (3, True, "whole table")}
    assert "event_id is unique" in next(r["failures"] for r in checked if r["table_name"] == "events")


def test_files_with_old_modification_times_are_read(spark: SparkSession, tmp_path: Path) -> None:
    """A backfill copied with ``cp -p`` keeps its old mtimes; Spark's default (7 days older than
    the newest file seen) would skip it without a word."""
    config = config_under(tmp_path)
    drop_file(config, "today.jsonl", [event("a1", "2026-11-20T10:00:00Z", "u1", "i1", "view")])
    ingest(spark, config)
    drop_file(config, "archive.jsonl", [event("a2", "2024-01-02T10:00:00Z", "u1", "i2", "view")])
    two_years_ago = time.time() - 2 * 365 * 86_400
    os.utime(Path(config.ingest.path) / "archive.jsonl", (two_years_ago, two_years_ago))
    ingest(spark, config)
    assert {r.event_id for r in table(spark, config, EVENTS).collect()} == {"a1", "a2"}


def test_a_fractional_max_file_age_keeps_its_fraction(spark: SparkSession, tmp_path: Path) -> None:
    """``ingest.max_file_age_days: 0.5`` reached Spark as ``maxFileAge`` "0d": every file older
    than the newest one seen was skipped without a word. Half a day reads a file an hour older
    than the newest, and still skips one a week older."""
    config = config_under(tmp_path, "ingest.max_file_age_days=0.5")
    drop_file(config, "today.jsonl", [event("h1", "2026-11-20T10:00:00Z", "u1", "i1", "view")])
    ingest(spark, config)
    newest = (Path(config.ingest.path) / "today.jsonl").stat().st_mtime
    for name, event_id, age in (("hour_old.jsonl", "h2", 3600), ("week_old.jsonl", "h3", 7 * 86_400)):
        drop_file(config, name, [event(event_id, "2026-11-20T09:00:00Z", "u1", "i2", "view")])
        os.utime(Path(config.ingest.path) / name, (newest - age, newest - age))
    ingest(spark, config)
    assert {r.event_id for r in table(spark, config, EVENTS).collect()} == {"h1", "h2"}


def test_a_retry_whose_time_crosses_midnight_is_not_counted_twice(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = many_batch_config(tmp_path)
    drop_file(config, "f1.jsonl", [event("r1", "2026-11-01T23:59:59Z", "u1", "i1", "purchase", 1)])
    drop_file(config, "f2.jsonl", [event("r1", "2026-11-02T00:00:01Z", "u1", "i1", "purchase", 1)])
    ingest(spark, config)
    assert table(spark, config, EVENTS).count() == 1
    assert table(spark, config, INTERACTIONS).first()["purchase_count"] == 1
    assert table(spark, config, QUARANTINE).first()["reason"] == CONFLICT_REASON


class CompilationCountingWriter(EventBatchWriter):
    """The writer, noting how many classes Spark's code generator compiled during each batch."""

    def __init__(self, config: Config, lake: Lake, checkpoint: str) -> None:
        super().__init__(config, lake, checkpoint)
        self.compiled: list[int] = []

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        metrics = batch.sparkSession._jvm.org.apache.spark.metrics.source.CodegenMetrics
        before = metrics.METRIC_COMPILATION_TIME().getCount()
        super().__call__(batch, batch_id)
        self.compiled.append(metrics.METRIC_COMPILATION_TIME().getCount() - before)


@pytest.mark.slow
def test_a_stream_reuses_the_code_spark_generated_for_its_earlier_batches(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Spark's default cache of 100 generated classes is smaller than one batch needs, so every
    batch compiled about 230 classes again (2-2.5 s on 2 cores). Now a batch shaped like an
    earlier one compiles only what its own values change (its dates, batch id and clock)."""
    config = many_batch_config(tmp_path)
    for k in range(3):
        day = f"2026-11-0{k + 1}"
        drop_file(
            config,
            f"f{k}.jsonl",
            [
                event(f"c{k}a", f"{day}T10:00:00Z", "u1", "i1", "view"),
                event(f"c{k}b", f"{day}T11:00:00Z", "u2", "i1", "purchase", 1),
                event(f"c{k}c", f"{day}T12:00:00Z", f"new{k}", "i2", "rating", 4),
            ],
        )
    lake = Lake.at(config.lake.root)
    writer = CompilationCountingWriter(config, lake, lake.checkpoint(QUERY_NAME))
    ingest(spark, config, writer)
    assert len(writer.compiled) == 3
    assert writer.compiled[2] < 50, writer.compiled

"""Operator tasks: forget a user everywhere, rebuild interactions, maintain tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.cli import main
from recspark.core.tables import (
    EVENTS,
    INGEST_METRICS,
    INTERACTIONS,
    JOB_RUNS,
    QUALITY_RESULTS,
    QUARANTINE,
    RECOMMENDATIONS,
    RECOMMENDATIONS_SCHEMA,
    USER_IDS,
    Lake,
)
from recspark.model.families.idmap import extend_id_map
from recspark.ops.forget import REPLACEMENT, forget_user
from recspark.ops.maintenance import maintain, rebuild_interactions
from tests.conftest import config_under
from tests.ingest.test_ingest import FILE_1, FILE_2, FILE_3, drop_file, event, ingest


@pytest.mark.slow
def test_forget_user_rebuild_and_maintain(spark: SparkSession, tmp_path: Path) -> None:
    config = config_under(tmp_path, "interactions.half_life_days=10")  # one micro-batch
    drop_file(config, "f1.jsonl", [*FILE_1, '{"event_id": "q1", "user_id": "u1", "event_type": "view"}'])
    drop_file(config, "f2.jsonl", FILE_2)
    drop_file(config, "f3.jsonl", FILE_3)
    ingest(spark, config)
    lake = Lake.at(config.lake.root)
    incremental = lake.read(spark, INTERACTIONS).drop("updated_at").orderBy("user_id", "item_id").collect()

    assert rebuild_interactions(spark, config, lake) == len(incremental)
    assert_approx_df_equality(
        lake.read(spark, INTERACTIONS).drop("updated_at").orderBy("user_id", "item_id"),
        spark.createDataFrame(incremental, lake.read(spark, INTERACTIONS).drop("updated_at").schema),
        1e-9,
        ignore_nullable=True,
    )

    deleted = forget_user(spark, lake, "u1")
    assert deleted["events"] == 4 and deleted["events_quarantine"] == 1 and deleted["interactions"] == 2
    for spec in (EVENTS, QUARANTINE, INTERACTIONS):
        assert lake.read(spark, spec).where("user_id = 'u1'").count() == 0
    assert lake.read(spark, EVENTS).where("user_id != 'u1'").count() == 4  # the rest is intact

    ingested = ["events", "events_quarantine", "interactions"]
    done = maintain(spark, lake, retention_hours=168, tables=ingested)
    assert list(done) == ingested  # the tables named, no other
    assert lake.delta(spark, EVENTS).history(3).where("operation = 'VACUUM END'").count() == 1
    assert lake.delta(spark, INGEST_METRICS).history().where("operation = 'VACUUM END'").count() == 0

    conf = ["--set", f"lake.root={config.lake.root}"]
    assert main(["forget-user", "u2", *conf]) == 0
    assert lake.read(spark, EVENTS).where("user_id = 'u2'").count() == 0


def test_maintain_refuses_a_table_name_it_does_not_know_before_touching_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake_root = tmp_path / "lake"
    assert main(["maintain", "--tables", "events,event", "--set", f"lake.root={lake_root}"]) == 2
    error = capsys.readouterr().err
    assert "recspark maintain: error: --tables: no table named event; the tables: events," in error
    # Nothing maintained or created (in its own process no session starts at all; here the
    # tests' session exists, and the failed run is recorded).
    assert {p.name for p in lake_root.glob("*")} <= {"job_runs"}


def test_maintain_lists_a_small_table_in_a_few_tasks(spark: SparkSession, tmp_path: Path) -> None:
    """VACUUM lists the table's files in ``parallelPartitionDiscovery.parallelism`` tasks, which
    the session builder ties to the shuffle partitions (Spark's default, 10,000, cost half a
    minute per table on two cores)."""
    lake = Lake.at(str(tmp_path / "lake"))
    for _ in range(3):
        spark.range(10).write.format("delta").mode("append").save(lake.path(INGEST_METRICS.name))
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("maintain-under-test", "maintain of a small table")
    try:
        maintain(spark, lake, retention_hours=168, tables=[INGEST_METRICS.name])
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    stages = {
        stage
        for job in tracker.getJobIdsForGroup("maintain-under-test")
        for stage in tracker.getJobInfo(job).stageIds
    }
    tasks = sum(info.numTasks for info in map(tracker.getStageInfo, stages) if info is not None)
    assert 0 < tasks <= 1_000, tasks  # about 100 (two tasks a stage); 100,000 before


@pytest.mark.slow
def test_forgotten_user_leaves_the_serving_files_once_maintain_purges_deletion_vectors(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = Lake.at(str(tmp_path / "lake"))
    now = datetime(2026, 11, 25, 12, 0)
    rows = [(u, r, f"i{r}", 1.0 / r, "als", "1", now, None) for u in ("u1", "u2", "u3") for r in (1, 2)]
    # A serving table written before deletion vectors were switched on: ensure upgrades it.
    spark.createDataFrame(rows, RECOMMENDATIONS_SCHEMA).coalesce(1).write.format("delta").save(
        lake.path(RECOMMENDATIONS.name)
    )
    lake.ensure(spark, RECOMMENDATIONS)
    properties = lake.delta(spark, RECOMMENDATIONS).detail().first()["properties"]
    assert properties.get("delta.enableDeletionVectors") == "true"

    assert forget_user(spark, lake, "u2")["recommendations"] == 2
    delete = lake.delta(spark, RECOMMENDATIONS).history(1).first()["operationMetrics"]
    assert int(delete["numDeletionVectorsAdded"]) == 1  # marked deleted, file not rewritten

    def users_in_live_files() -> set[str]:
        files = lake.read(spark, RECOMMENDATIONS).inputFiles()
        return {row.user_id for row in spark.read.parquet(*files).select("user_id").distinct().collect()}

    assert "u2" in users_in_live_files()  # still on disk, hidden by the deletion vector
    done = maintain(spark, lake, retention_hours=168)
    assert "deletion vectors purged" in done["recommendations"]
    assert users_in_live_files() == {"u1", "u3"}
    assert lake.read(spark, RECOMMENDATIONS).count() == 4


@pytest.mark.slow
def test_forget_user_leaves_nothing_behind_and_replays_cannot_bring_them_back(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = config_under(tmp_path, "interactions.half_life_days=10")
    broken_u3 = '{"event_id": "q2", "user_id": "u3", "item_id": "i1", "event_type": "vi'  # id unparsable
    names_u3_as_item = '{"event_id": "q3", "user_id": "u1", "item_id": "u3", "event_type": "vi'  # not theirs
    drop_file(config, "f1.jsonl", [*FILE_1, *FILE_2, *FILE_3, broken_u3, names_u3_as_item])
    ingest(spark, config)
    lake = Lake.at(config.lake.root)
    users = lake.read(spark, EVENTS).select("user_id")
    assert extend_id_map(spark, lake, USER_IDS, users).where("user_id = 'u3'").first()["user_idx"] == 2
    now = datetime(2026, 11, 30, 12, 0)
    lake.append_row(
        spark, JOB_RUNS, ("r1", "train", now, now, "failed", None, None, None, "no data for u3", None)
    )
    lake.append_row(
        spark, JOB_RUNS, ("r2", "train", now, now, "failed", None, None, None, "no data for u33", None)
    )
    lake.append_row(
        spark,
        QUALITY_RESULTS,
        (now, "ingest", "events", "events", 1, False, 3, 1, "user_id u3 unexpected", "warn", 5, "whole"),
    )
    docs = tmp_path / "lake" / "_quality" / "data_docs" / "page.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<td>u3</td><td>u33</td>")

    done = forget_user(spark, lake, "u3")

    assert done["events"] == 1 and done["events_quarantine"] == 1 and done["user_ids"] == 1
    assert [r.raw for r in lake.read(spark, QUARANTINE).collect()] == [names_u3_as_item]
    assert {r.error for r in lake.read(spark, JOB_RUNS).collect()} == {
        f"no data for {REPLACEMENT}",
        "no data for u33",
    }
    assert lake.read(spark, QUALITY_RESULTS).first()["failures"] == f"user_id {REPLACEMENT} unexpected"
    assert docs.read_text() == f"<td>{REPLACEMENT}</td><td>u33</td>"
    # The forgotten user's index is never handed to a newcomer.
    newcomer = spark.createDataFrame([("u9",)], "user_id string")
    assert extend_id_map(spark, lake, USER_IDS, newcomer).where("user_id = 'u9'").first()["user_idx"] == 3

    # Replaying the old file (copied under a new name) does not bring the user back; a new
    # event after the forget is theirs again, as a new user.
    later = (datetime.now(timezone.utc) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    drop_file(config, "replay.jsonl", [*FILE_3, event("n1", later, "u3", "i1", "view")])
    ingest(spark, config)
    assert {r.event_id for r in lake.read(spark, EVENTS).where("user_id = 'u3'").collect()} == {"n1"}
    metrics = lake.read(spark, INGEST_METRICS).orderBy(F.col("batch_id").desc()).first()
    assert metrics["forgotten_rows"] == 1 and metrics["duplicate_rows"] == 2

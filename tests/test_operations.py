"""Operator tasks: forget a user everywhere, rebuild interactions, maintain tables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import SparkSession

from recspark.cli import main
from recspark.core.tables import (
    EVENTS,
    INTERACTIONS,
    QUARANTINE,
    RECOMMENDATIONS,
    RECOMMENDATIONS_SCHEMA,
    Lake,
)
from recspark.ops.maintenance import forget_user, maintain, rebuild_interactions
from tests.conftest import config_under
from tests.test_ingest import FILE_1, FILE_2, FILE_3, drop_file, ingest


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

    done = maintain(spark, lake, retention_hours=168)
    assert {"events", "interactions", "events_quarantine"} <= set(done)
    assert lake.delta(spark, EVENTS).history(3).where("operation = 'VACUUM END'").count() == 1

    conf = ["--set", f"lake.root={config.lake.root}"]
    assert main(["forget-user", "u2", *conf]) == 0
    assert lake.read(spark, EVENTS).where("user_id = 'u2'").count() == 0


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

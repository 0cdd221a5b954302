"""End to end on a tiny generated shop: generate -> ingest -> train -> recommend, and the registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from delta.tables import DeltaTable
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.cli import main
from recspark.core.catalog import read_catalog
from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.registry import CHAMPION, champion_version, configure_mlflow
from recspark.core.tables import EVENTS, INTERACTIONS, QUARANTINE, RECOMMENDATIONS, Lake
from recspark.model.families.data import TrainingError
from recspark.model.training.train import TrainResult, train
from tests.conftest import SHOP_TOP_N, copy_shop

TOP_N = SHOP_TOP_N


def test_tables_follow_the_contract(spark: SparkSession, shop: Config, trained: TrainResult) -> None:
    lake = Lake.at(shop.lake.root)
    required = {
        EVENTS: {
            "event_id",
            "event_time",
            "user_id",
            "item_id",
            "event_type",
            "value",
            "session_id",
            "ingested_at",
        },
        QUARANTINE: {"raw", "reason", "ingested_at"},
        INTERACTIONS: {
            "user_id",
            "item_id",
            "view_count",
            "purchase_count",
            "last_event_time",
            "strength",
        },
        RECOMMENDATIONS: {
            "user_id",
            "rank",
            "item_id",
            "score",
            "source",
            "model_version",
            "generated_at",
        },
    }
    for spec, columns in required.items():
        assert columns <= set(lake.read(spark, spec).columns), spec.name
    events = lake.read(spark, EVENTS)
    assert events.count() == events.select("event_id").distinct().count()
    assert lake.read(spark, QUARANTINE).count() > 0  # the generator sends broken lines
    # Time travel works on the serving table.
    assert (
        spark.read.format("delta").option("versionAsOf", 0).load(lake.path(RECOMMENDATIONS.name)).count() == 0
    )


def test_every_user_gets_exactly_n_eligible_rows(
    spark: SparkSession, shop: Config, trained: TrainResult
) -> None:
    lake = Lake.at(shop.lake.root)
    recs = lake.read(spark, RECOMMENDATIONS)
    interactions = lake.read(spark, INTERACTIONS)
    users = interactions.select("user_id").distinct().count()
    per_user = recs.groupBy("user_id").agg(F.count("*").alias("rows"), F.collect_set("rank").alias("ranks"))
    assert per_user.count() == users
    assert per_user.where(F.col("rows") != TOP_N).count() == 0
    assert per_user.where(F.size("ranks") != TOP_N).count() == 0
    purchased = interactions.where("purchase_count > 0").select("user_id", "item_id")
    assert recs.join(purchased, ["user_id", "item_id"]).count() == 0
    unavailable = read_catalog(spark, shop.catalog.path).where("NOT available").select("item_id")
    assert unavailable.count() > 0
    assert recs.join(unavailable, "item_id").count() == 0
    assert {r[0] for r in recs.select("model_version").distinct().collect()} == {trained.model_version}
    sources = {r[0] for r in recs.select("source").distinct().collect()}
    assert "als" in sources and sources <= {"als", "category_popular", "trending", "popular"}


def test_als_beats_the_popularity_baseline(trained: TrainResult) -> None:
    metrics = trained.metrics
    assert metrics["ndcg_at_k"] > metrics["popular_ndcg_at_k"]
    assert metrics["recall_at_k"] > metrics["popular_recall_at_k"]
    assert trained.promoted and trained.status == "promoted" and trained.family == "als"
    # The decision rests on the same users: the paired comparison with the baseline is logged.
    assert metrics["vs_popular_ndcg_at_k_probability"] >= 0.5
    assert metrics["ndcg_at_k_ci_low"] <= metrics["ndcg_at_k"] <= metrics["ndcg_at_k_ci_high"]


def newest_version_before(spark: SparkSession, path: str, epoch_ms: int) -> int:
    """The table version a reader starting at ``epoch_ms`` saw, from the Delta log itself."""
    return (
        DeltaTable.forPath(spark, path)
        .history()
        .where(F.col("timestamp") <= F.timestamp_millis(F.lit(epoch_ms)))
        .agg(F.max("version"))
        .first()[0]
    )


def test_mlflow_run_records_the_data_version(spark: SparkSession, shop: Config, trained: TrainResult) -> None:
    configure_mlflow(shop.mlflow)
    run = mlflow.get_run(trained.run_id)
    lake = Lake.at(shop.lake.root)
    # Other tests add events to the shared shop later: compare with what the log held when the
    # run started, not with the table's current version.
    for table in (INTERACTIONS, EVENTS):
        read = newest_version_before(spark, lake.path(table.name), run.info.start_time)
        assert int(run.data.params[f"data_version_{table.name}"]) == read
    assert run.data.tags["interactions_table"] == lake.path(INTERACTIONS.name)
    assert run.data.metrics["ndcg_at_k"] == pytest.approx(trained.metrics["ndcg_at_k"])
    champion = champion_version(shop.mlflow)
    assert champion is not None and str(champion.version) == trained.model_version


@pytest.mark.slow
def test_worse_model_is_not_promoted_and_operator_can_override(
    spark: SparkSession, shop: Config, trained: TrainResult, tmp_path: Path
) -> None:
    config = copy_shop(shop, tmp_path)
    lake = Lake.at(config.lake.root)
    weak = config.with_overrides(["train.rank=1", "train.max_iter=1", "train.reg_param=500"])
    result = train(spark, weak, lake, gate=no_gate)
    assert not result.promoted and result.status == "challenger"
    assert str(champion_version(config.mlflow).version) == trained.model_version
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(config.mlflow.model_name, "challenger").version) == (
        result.model_version
    )

    conf_args = [
        "--set",
        f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
        "--set",
        f"lake.root={config.lake.root}",
    ]
    assert main(["promote", result.model_version, *conf_args]) == 0
    assert str(champion_version(config.mlflow).version) == result.model_version
    assert main(["rollback", *conf_args]) == 0
    assert str(champion_version(config.mlflow).version) == trained.model_version
    assert str(client.get_model_version_by_alias(config.mlflow.model_name, CHAMPION).version) == (
        trained.model_version
    )


def test_training_refuses_tiny_data_without_touching_the_champion(
    spark: SparkSession, shop: Config, trained: TrainResult
) -> None:
    lake = Lake.at(shop.lake.root)
    strict = shop.with_overrides(["train.min_train_interactions=10000000"])
    with pytest.raises(
        TrainingError, match=r"positive user-item interactions .*train\.min_train_interactions"
    ):
        train(spark, strict, lake, gate=no_gate)
    no_test = shop.with_overrides(["train.test_days=400"])
    with pytest.raises(TrainingError, match=r"no training period .*lower train\.test_days"):
        train(spark, no_test, lake, gate=no_gate)
    assert str(champion_version(shop.mlflow).version) == trained.model_version


def test_similar_items_are_the_cosine_nearest_available_items(
    spark: SparkSession, shop: Config, trained: TrainResult
) -> None:
    import numpy as np

    from recspark.core.tables import SIMILAR_ITEMS
    from recspark.serve.publish import load_champion

    lake = Lake.at(shop.lake.root)
    similar = lake.read(spark, SIMILAR_ITEMS)
    assert similar.where("item_id = similar_item_id").count() == 0
    champion = load_champion(spark, shop, lake)
    items = champion.model.item_factors
    unavailable = {r[0] for r in read_catalog(spark, shop.catalog.path).where("NOT available").collect()}
    vectors = {r["item_id"]: np.array(r["features"], dtype=np.float64) for r in items.collect()}
    item = sorted(vectors)[0]
    cosine = {
        other: float(vectors[item] @ v / (np.linalg.norm(vectors[item]) * np.linalg.norm(v)))
        for other, v in vectors.items()
        if other != item and other not in unavailable
    }
    expected = sorted(cosine, key=cosine.get, reverse=True)[: shop.serve.similar_items]
    got = similar.where(F.col("item_id") == item).orderBy("rank").collect()
    assert [r["similar_item_id"] for r in got] == expected
    assert [r["score"] for r in got] == pytest.approx([cosine[i] for i in expected], rel=1e-4)

"""What real logs need: training at the defaults on a sparse, old log, and promotion on evidence."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.registry import champion_version, configure_mlflow
from recspark.core.tables import EVENTS, Lake
from recspark.datasets.history import load_history
from recspark.datasets.shop.events import generate_events
from recspark.datasets.shop.spec import ShopSpec
from recspark.model.training.train import TrainResult, train
from tests.conftest import config_under, copy_shop, nothing_cached


def write_log(spark: SparkSession, config: Config, lake: Lake, spec: ShopSpec) -> None:
    """A generated log straight into ``events`` and ``interactions`` (ingestion is tested elsewhere)."""
    catalog, events = generate_events(spec)
    Path(config.catalog.path).parent.mkdir(parents=True, exist_ok=True)
    catalog.assign(updated_at=catalog["updated_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_json(
        config.catalog.path, orient="records", lines=True
    )
    load_history(spark, config, lake, spark.createDataFrame(events), "test")


@pytest.mark.slow
def test_a_sparse_old_log_trains_at_the_defaults(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A few hundred users over four years: the last month holds a handful of them.
    start = datetime(2021, 1, 1, tzinfo=timezone.utc)
    spec = ShopSpec(users=300, items=120, categories=6, events=6000, days=1500, seed=5, start=start)
    config = config_under(tmp_path)  # the defaults, but for the test session's speed settings
    lake = Lake.at(config.lake.root)
    write_log(spark, config, lake, spec)
    last_month = lake.read(spark, EVENTS).where(F.col("event_time") >= F.lit(datetime(2025, 1, 9)))
    assert last_month.select("user_id").distinct().count() < config.train.min_test_users

    with caplog.at_level(logging.INFO):
        result = train(spark, config, lake, gate=no_gate)
    assert result.status in ("promoted", "challenger", "insufficient_evidence")
    assert result.metrics["test_users"] >= config.mlflow.min_test_users
    assert result.tuned_from_run is not None  # no plan existed: train tuned first
    configure_mlflow(config.mlflow)
    tags = mlflow.get_run(result.run_id).data.tags
    assert tags["test_split"] == "per_user" and "each user's newest events" in tags["test_period"]
    assert tags["model_family"] == result.family
    assert any("holding out each user's newest events instead" in r.getMessage() for r in caplog.records)
    assert nothing_cached(spark)  # train and the tuning it ran released what they cached


def test_too_few_test_users_is_insufficient_evidence_and_the_champion_stays(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop, trained = trained_shop
    config = copy_shop(shop, tmp_path, "mlflow.min_test_users=100000")
    result = train(spark, config, Lake.at(config.lake.root), gate=no_gate)
    assert not result.promoted and result.status == "insufficient_evidence"
    assert "mlflow.min_test_users=100000" in result.reason
    assert str(champion_version(config.mlflow).version) == trained.model_version
    tags = mlflow.get_run(result.run_id).data.tags
    assert tags["promotion_status"] == "insufficient_evidence"

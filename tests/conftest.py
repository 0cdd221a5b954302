"""One local SparkSession for the whole suite, and per-test configs whose state lives in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pyspark.sql import SparkSession

from recspark.core.config import Config, load_config
from recspark.core.session import build_spark
from recspark.packages import spark_packages

if TYPE_CHECKING:
    from recspark.model.train import TrainResult

TEST_SETTINGS = (
    "spark.master=local[2]",
    "spark.shuffle_partitions=2",
    "spark.driver_memory=3g",
    "serve.users_per_block=256",
    "train.rank=8",
    "train.max_iter=5",
    "train.num_user_blocks=2",
    "train.num_item_blocks=2",
    "train.min_train_interactions=20",
    "spark.conf.spark.ui.enabled=false",
    "spark.conf.spark.databricks.delta.snapshotPartitions=2",
)


def config_under(root: Path, *overrides: str) -> Config:
    """A config whose lake, inputs and MLflow store all live under ``root``."""
    return load_config(
        None,
        [
            *TEST_SETTINGS,
            f"lake.root={root / 'lake'}",
            f"ingest.path={root / 'incoming' / 'events'}",
            f"catalog.path={root / 'incoming' / 'catalog.jsonl'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"mlflow.artifact_location={root / 'mlartifacts'}",
            *overrides,
        ],
        environ={},
    )


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    warehouse = tmp_path_factory.mktemp("warehouse")
    config = config_under(
        tmp_path_factory.mktemp("session"),
        f"spark.conf.spark.sql.warehouse.dir={warehouse}",
        # Whatever a test's ingest.source, the one shared session must read Kafka too.
        f"spark.conf.spark.jars.packages={','.join(spark_packages(kafka=True))}",
    )
    session = build_spark(config, "tests")
    yield session
    session.stop()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_under(tmp_path)


SHOP_TOP_N = 5


@pytest.fixture(scope="session")
def trained_shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):
    """A tiny generated shop taken through ingest -> train -> recommend once for the session.

    Tests that change it (new events, new champions) must leave it serving every user N rows.
    """
    from recspark.core.tables import Lake
    from recspark.ingest.stream import run_ingest
    from recspark.model.train import train
    from recspark.ops.generate import ShopSpec, write_shop
    from recspark.ops.quality import gate_for
    from recspark.serve.publish import recommend

    root = tmp_path_factory.mktemp("shop")
    config = config_under(root, f"serve.top_n={SHOP_TOP_N}", "train.test_days=5")
    shop = ShopSpec(users=300, items=80, categories=8, events=15_000, days=21, seed=11)
    write_shop(shop, Path(config.ingest.path), Path(config.catalog.path))
    lake = Lake.at(config.lake.root)
    run_ingest(spark, config, lake, once=True)
    result = train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))
    recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"))
    return config, result


@pytest.fixture
def shop(trained_shop: tuple[Config, TrainResult]) -> Config:
    """The trained shop's config."""
    return trained_shop[0]


@pytest.fixture
def trained(trained_shop: tuple[Config, TrainResult]) -> TrainResult:
    """The trained shop's first training result."""
    return trained_shop[1]

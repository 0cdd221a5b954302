"""One local SparkSession for the whole suite, and per-test configs whose state lives in tmp_path."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow  # noqa: F401  (configures its logger on import: before any test saves that state)
import pytest
from pyspark.sql import SparkSession

from recspark.core.config import Config, load_config
from recspark.core.session import build_spark
from recspark.packages import spark_packages

if TYPE_CHECKING:
    from recspark.model.training.train import TrainResult

# A pytest-xdist worker's __main__ has neither __spec__ nor __file__, which pyspark.sql.connect
# (imported by Great Expectations) takes for a doctest run without Spark Connect's dependencies,
# and exits the process. Give it a name.
_main = sys.modules["__main__"]
if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = "pytest-xdist-worker"

TEST_SETTINGS = (
    "spark.master=local[2]",
    "spark.shuffle_partitions=2",
    "spark.driver_memory=4g",
    "serve.users_per_block=256",
    "train.rank=8",
    "train.max_iter=5",
    "train.num_user_blocks=2",
    "train.num_item_blocks=2",
    "train.min_train_interactions=20",
    "spark.conf.spark.ui.enabled=false",
    "spark.conf.spark.databricks.delta.snapshotPartitions=2",
    # One driver serves the whole suite (an hour, thousands of queries): keep the status store's
    # history of queries short and let the cleaner free unreferenced broadcasts and shuffles often.
    "spark.conf.spark.sql.ui.retainedExecutions=50",
    "spark.conf.spark.ui.retainedJobs=100",
    "spark.conf.spark.ui.retainedStages=100",
    "spark.conf.spark.cleaner.periodicGC.interval=2min",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``spark`` tier: every test whose fixtures include ``spark``, directly or through other
    fixtures (``trained_shop``, ``shop``...), so a new test lands in its tier by what it uses.
    What no shared fixture names carries its marker itself: ``kafka`` (test_kafka.py),
    ``cluster`` (test_cluster.py), ``airflow`` and ``notebooks`` (the tests that start them),
    ``slow`` (over 20 s on two cores, or sharing a costly module fixture). The markers are registered in
    pyproject.toml; ``make test-fast`` runs all but kafka, cluster, airflow, notebooks and slow."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


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


@pytest.fixture(autouse=True)
def _release_session_memory(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used Spark, drop what it left cached (DataFrames, Delta table states
    of its temporary lakes), so the shared driver holds about what one job would. Without it, a
    shuffled run ran out of driver memory 168 tests in. Production code must not rely on this:
    :func:`nothing_cached` checks the jobs that live long."""
    yield
    if "spark" in request.fixturenames:
        spark = request.getfixturevalue("spark")
        spark.catalog.clearCache()
        spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


def nothing_cached(spark: SparkSession) -> bool:
    """Whether the session holds no cached DataFrame: ``persist`` is held until ``unpersist``,
    so a per-batch leak in a stream that runs for weeks grows the driver without bound."""
    return bool(spark._jsparkSession.sharedState().cacheManager().isEmpty())


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers and wraps ``sys.stdout`` and ``sys.stderr``, and
    diverting library output reroutes MLflow's logger and Python's warnings; give pytest's back
    afterwards. Autouse: every test that runs a command in-process (``main([...])``) does this,
    and a test must not see what an earlier one on the same worker left."""
    from recspark.core import console

    plan = console._planned, console._diverted
    root, mlflow_logger = logging.getLogger(), logging.getLogger("mlflow")
    handlers, level = root.handlers[:], root.level
    mlflow_handlers, mlflow_propagates = mlflow_logger.handlers[:], mlflow_logger.propagate
    streams = sys.stdout, sys.stderr
    yield
    for logger, kept in ((root, handlers), (mlflow_logger, mlflow_handlers)):
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
            if handler not in kept:
                handler.close()  # the test's own, e.g. a job's log file
        for handler in kept:
            logger.addHandler(handler)
    root.setLevel(level)
    mlflow_logger.propagate = mlflow_propagates
    logging.captureWarnings(False)
    sys.stdout, sys.stderr = streams
    console._planned, console._diverted = plan


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return config_under(tmp_path)


SHOP_TOP_N = 5
# The shared shops train one family each with its configured settings: fast and deterministic.
# What the defaults choose (tuning, families, blends) is tested on logs of its own.
SHOP_SETTINGS = (f"serve.top_n={SHOP_TOP_N}", "train.test_days=5", "tune.auto=false")


def shop_config(root: Path, family: str, *overrides: str) -> Config:
    return config_under(root, *SHOP_SETTINGS, f"train.families=[{family}]", *overrides)


def _trained_shop(spark: SparkSession, root: Path, family: str):
    from recspark.core.tables import Lake
    from recspark.datasets.shop.files import write_shop
    from recspark.datasets.shop.spec import ShopSpec
    from recspark.ingest.stream import run_ingest
    from recspark.model.training.train import train
    from recspark.ops.quality.gate import gate_for
    from recspark.serve.publish import recommend

    config = shop_config(root, family)
    shop = ShopSpec(users=300, items=80, categories=8, events=15_000, days=21, seed=11)
    write_shop(shop, Path(config.ingest.path), Path(config.catalog.path))
    lake = Lake.at(config.lake.root)
    run_ingest(spark, config, lake, once=True)
    result = train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))
    recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"))
    return config, result


@pytest.fixture(scope="session")
def trained_shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):
    """A tiny generated shop taken through ingest -> train (ALS) -> recommend once per session.

    Read-only: a test that changes a shop works on :func:`copy_shop` of it."""
    return _trained_shop(spark, tmp_path_factory.mktemp("shop"), "als")


@pytest.fixture(scope="session")
def item_item_shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):
    """The same shop with an item-item (EASE) champion. Read-only, like ``trained_shop``."""
    return _trained_shop(spark, tmp_path_factory.mktemp("ease_shop"), "ease")


def copy_shop(config: Config, root: Path, *overrides: str) -> Config:
    """A private, writable copy of a shop under ``root``: its lake (checkpoints included), MLflow
    store and catalog. New event files go to an empty directory of its own (the ingest query
    starts afresh there; dedup against ``events`` keeps it exact), and new MLflow runs to an
    experiment of its own."""
    shop_root = Path(config.lake.root).parent
    shutil.copytree(config.lake.root, root / "lake")
    shutil.copy(shop_root / "mlflow.db", root / "mlflow.db")
    (root / "incoming" / "events").mkdir(parents=True)
    shutil.copy(config.catalog.path, root / "incoming" / "catalog.jsonl")
    shutil.rmtree(root / "lake" / "_checkpoints" / "ingest_events", ignore_errors=True)
    family = config.train.families[0]
    return shop_config(root, family, "mlflow.experiment=copy", *overrides)


@pytest.fixture
def shop(trained_shop: tuple[Config, TrainResult]) -> Config:
    """The trained shop's config."""
    return trained_shop[0]


@pytest.fixture
def trained(trained_shop: tuple[Config, TrainResult]) -> TrainResult:
    """The trained shop's first training result."""
    return trained_shop[1]

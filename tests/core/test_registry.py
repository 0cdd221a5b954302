"""The registry: faults are never read as "no champion", and every alias move is on record."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from recspark.cli import main
from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.registry import (
    RegistryUnreachableError,
    TrackingError,
    alias_version,
    champion_move,
    champion_version,
    configure_mlflow,
    move_alias,
    registered_run_id,
    rollback,
)
from recspark.core.tables import CHAMPION_HISTORY, JOB_RUNS, Lake
from recspark.serve.refresh import RefreshBatchWriter
from tests.conftest import config_under
from tests.kafka_broker import free_port


def register_versions(config: Config, count: int) -> None:
    """``count`` versions of the configured model, each from a run of its own."""
    configure_mlflow(config.mlflow)
    client = MlflowClient()
    client.create_registered_model(config.mlflow.model_name)
    for _ in range(count):
        with mlflow.start_run() as run:
            mlflow.log_text("weights", "model/weights.txt")
        client.create_model_version(
            config.mlflow.model_name, f"{run.info.artifact_uri}/model", run.info.run_id
        )


@contextmanager
def locked(config: Config) -> Iterator[None]:
    """Another process holds the SQLite store's write lock (a long migration, a stuck writer)."""
    connection = sqlite3.connect(config.mlflow.tracking_uri.removeprefix("sqlite:///"), timeout=0.1)
    connection.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        connection.rollback()
        connection.close()


def cli_settings(config: Config) -> list[str]:
    settings = [f"mlflow.tracking_uri={config.mlflow.tracking_uri}", f"lake.root={config.lake.root}"]
    return [arg for setting in settings for arg in ("--set", setting)]


def test_rollback_undoes_promotions_made_by_train_and_records_every_move(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = config_under(tmp_path)
    lake = Lake.at(config.lake.root)
    register_versions(config, 3)
    for version in ("1", "2", "3"):  # what train does when a candidate earns promotion
        move_alias(spark, lake, config.mlflow, champion_move(config.mlflow, version, "train", "beat v-1"))

    assert rollback(spark, lake, config.mlflow) == "2"
    assert main(["rollback", *cli_settings(config)]) == 0
    assert str(champion_version(config.mlflow).version) == "1"
    with pytest.raises(TrackingError, match="no earlier champion"):
        rollback(spark, lake, config.mlflow)

    history = lake.read(spark, CHAMPION_HISTORY).orderBy("moved_at").collect()
    assert [(r.version, r.previous_version, r.action) for r in history] == [
        ("1", None, "train"),
        ("2", "1", "train"),
        ("3", "2", "train"),
        ("2", "3", "rollback"),
        ("1", "2", "rollback"),
    ]
    assert all(r.moved_by and r.reason and r.moved_at for r in history)


@pytest.mark.slow
def test_a_registry_fault_is_an_error_not_an_absent_champion(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_under(tmp_path)
    configure_mlflow(config.mlflow)
    assert alias_version(config.mlflow, "champion") is None  # nothing registered: truly absent
    register_versions(config, 1)

    with locked(config), pytest.raises(TrackingError, match="locked"):
        alias_version(config.mlflow, "champion")

    with locked(config):
        code = main(["promote", "1", *cli_settings(config)])
    assert code == 2
    assert "database is locked" in capsys.readouterr().err
    run = Lake.at(config.lake.root).read(spark, JOB_RUNS).first()
    assert run.job == "promote" and run.status == "failed" and "locked" in run.error
    assert champion_version(config.mlflow) is None


def test_a_registry_that_does_not_answer_is_an_outage_and_a_refusal_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running refresh rides out an outage (RegistryUnreachableError) but not a wrong answer:
    the two must not be confused either way."""
    config = config_under(tmp_path)
    register_versions(config, 1)
    with locked(config), pytest.raises(RegistryUnreachableError, match="locked"):
        alias_version(config.mlflow, "champion")
    with pytest.raises(TrackingError, match="must be an integer") as refused:
        registered_run_id(config.mlflow, "one")  # the store answered: no such request
    assert not isinstance(refused.value, RegistryUnreachableError)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    nobody = free_port()  # released: nothing listens there
    down = config_under(tmp_path, f"mlflow.tracking_uri=http://127.0.0.1:{nobody}")
    try:
        with pytest.raises(RegistryUnreachableError, match="is not usable: API request"):
            configure_mlflow(down.mlflow)
        with pytest.raises(RegistryUnreachableError, match=r"looking up .champion.* API request"):
            alias_version(down.mlflow, "champion")
    finally:
        mlflow.set_tracking_uri(config.mlflow.tracking_uri)


@pytest.mark.slow
def test_a_registry_fault_fails_the_refresh_batch_so_spark_runs_it_again(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = config_under(tmp_path)
    register_versions(config, 1)
    lake = Lake.at(config.lake.root)
    writer = RefreshBatchWriter(config, lake, str(tmp_path / "checkpoint"), no_gate)
    changes = spark.createDataFrame([], "user_id string, _change_type string, _commit_version long")
    with locked(config), pytest.raises(TrackingError, match="locked"):
        writer(changes, 0)  # raised out of foreachBatch: the batch is not committed


ROOT = Path(__file__).resolve().parents[2]

# Jobs that start together on a store nobody has opened yet: each opens it (MLflow creates the
# schema on first use) at the same moment.
OPEN_TOGETHER = """\
import sys
import time

from recspark.core.config import load_config
from recspark.core.registry import TrackingError, configure_mlflow

root, start = sys.argv[1], float(sys.argv[2])
config = load_config(None, [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db"], environ={})
time.sleep(max(0.0, start - time.time()))
try:
    configure_mlflow(config.mlflow)
except TrackingError as exc:
    sys.exit(str(exc))
"""


def test_jobs_opening_a_new_store_together_all_get_it(tmp_path: Path) -> None:
    """A train and a scheduled refresh started by Airflow at once on a fresh SQLite store: all
    but one failed in MLflow's schema migrations (alembic_version, "table already exists")."""
    script = tmp_path / "open_store.py"
    script.write_text(OPEN_TOGETHER)
    start = time.time() + 15  # after every process has imported MLflow
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(start)],
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    failures = []
    for process in processes:
        _, err = process.communicate(timeout=120)
        if process.returncode != 0:
            failures.append(err.strip().splitlines()[-1])
    assert failures == []

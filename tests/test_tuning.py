"""`recspark tune`: chooses by the validation metric, nests its trials in MLflow, feeds `train`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from recspark.cli import main
from recspark.core.config import Config, TuneConfig
from recspark.core.gates import no_gate
from recspark.core.registry import champion_version, configure_mlflow
from recspark.core.tables import Lake
from recspark.model.train import TrainResult, train
from recspark.model.tune import search_space, tune


def test_search_space_is_the_grid_or_a_seeded_sample_of_it() -> None:
    small = TuneConfig(rank=[4, 8], reg_param=[0.1], alpha=[1, 10])
    assert search_space(small) == [
        {"rank": 4, "reg_param": 0.1, "alpha": 1.0},
        {"rank": 4, "reg_param": 0.1, "alpha": 10.0},
        {"rank": 8, "reg_param": 0.1, "alpha": 1.0},
        {"rank": 8, "reg_param": 0.1, "alpha": 10.0},
    ]
    big = TuneConfig(rank=[4, 8, 16], reg_param=[0.01, 0.1, 1.0], alpha=[1, 10, 40], max_trials=5, seed=3)
    sample = search_space(big)
    assert len(sample) == 5 and sample == search_space(big)
    assert len({tuple(p.values()) for p in sample}) == 5


def test_tune_picks_the_best_validation_trial_and_train_uses_it(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop, trained = trained_shop
    best_path = tmp_path / "best_params.json"
    config = shop.with_overrides(
        [
            "tune.rank=[1, 8]",
            "tune.reg_param=[0.1]",
            "tune.alpha=[10]",
            "tune.validation_days=4",
            f"tune.best_params_path={best_path}",
            # A model name of its own: the shop's champion must not move.
            "mlflow.model_name=recspark-als-tuned",
        ]
    )
    lake = Lake.at(shop.lake.root)
    result = tune(spark, config, lake)

    configure_mlflow(config.mlflow)
    children = MlflowClient().search_runs(
        [mlflow.get_run(result.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    assert len(children) == 2
    by_rank = {int(c.data.params["rank"]): c.data.metrics["ndcg_at_k"] for c in children}
    winner = max(by_rank, key=by_rank.get)
    assert by_rank[1] != by_rank[8]
    stored = json.loads(best_path.read_text())
    assert stored["params"] == {"rank": winner, "reg_param": 0.1, "alpha": 10.0}
    assert stored["run_id"] == result.run_id
    assert stored["value"] == pytest.approx(by_rank[winner])
    # The validation period ends where the test period begins: trials never see the test period.
    parent = mlflow.get_run(result.run_id)
    test_cutoff = mlflow.get_run(trained.run_id).data.tags["test_cutoff"]
    assert parent.data.tags["validation_cutoff"] < test_cutoff
    assert "best_params.json" in {a.path for a in MlflowClient().list_artifacts(result.run_id)}

    trained_tuned = train(spark, config, lake, gate=no_gate)
    assert trained_tuned.tuned_from_run == result.run_id
    params = mlflow.get_run(trained_tuned.run_id).data.params
    assert int(params["rank"]) == winner and params["tuned_from_run"] == result.run_id
    assert str(champion_version(shop.mlflow).version) == trained.model_version


def test_tune_without_room_for_a_validation_period_exits_2(
    trained_shop: tuple[Config, TrainResult], capsys: pytest.CaptureFixture[str]
) -> None:
    shop, _ = trained_shop
    code = main(
        [
            "tune",
            "--set",
            f"lake.root={shop.lake.root}",
            "--set",
            f"mlflow.tracking_uri={shop.mlflow.tracking_uri}",
            "--set",
            "train.test_days=5",
            "--set",
            "tune.validation_days=30",
        ]
    )
    assert code == 2
    assert "cannot carve a validation period" in capsys.readouterr().err

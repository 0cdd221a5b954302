"""Tuning: chooses family and settings on the validation period, nests trials in MLflow, feeds
`train`, and runs by itself when the stored plan is missing or stale."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from recspark.cli import main
from recspark.core.config import Config, TuneConfig
from recspark.core.gates import no_gate
from recspark.core.registry import configure_mlflow
from recspark.core.tables import Lake
from recspark.model.families.model import ALS, BLEND, EASE
from recspark.model.training.train import TrainResult, train
from recspark.model.tuning.plan import TunedPlan
from recspark.model.tuning.search import search_space, tune, winner_of
from tests.conftest import copy_shop


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


def test_a_blend_wins_only_when_measured_better_than_both_halves() -> None:
    assert winner_of({ALS: 0.10, EASE: 0.12}) == EASE
    assert winner_of({ALS: 0.10, EASE: 0.12, BLEND: 0.121}) == BLEND
    assert winner_of({ALS: 0.10, EASE: 0.12, BLEND: 0.12}) == EASE  # a tie: the simpler model
    assert winner_of({ALS: 0.13, EASE: 0.12, BLEND: 0.125}) == ALS


def test_a_plan_goes_stale_with_age_or_growth() -> None:
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    plan = TunedPlan(ALS, {ALS: {"family": ALS}}, {ALS: 0.1}, "ndcg_at_k", "r", now.isoformat(), 1000, "v")
    tune = TuneConfig(max_age_days=7, max_growth=0.5)
    assert plan.stale_because(tune, 1400, now + timedelta(days=6)) is None
    assert "tune.max_age_days=7" in plan.stale_because(tune, 1000, now + timedelta(days=8))
    assert "tune.max_growth=0.5" in plan.stale_because(tune, 1600, now + timedelta(days=1))


def test_tune_picks_the_best_validation_trial_and_train_uses_it(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop = trained_shop[0]
    best_path = tmp_path / "best_params.json"
    config = copy_shop(
        shop,
        tmp_path / "shop",
        "train.families=[als, ease]",
        # The configured points are pinned so the trial count follows from this test alone.
        "train.rank=8",
        "train.reg_param=0.1",
        "train.alpha=10",
        "ease.l2=300",
        "ease.signal=preference",
        "tune.ease_signal=[preference]",
        "tune.rank=[1, 8]",
        "tune.reg_param=[0.1]",
        "tune.alpha=[10]",
        "tune.ease_l2=[50, 500]",
        "tune.blend_weight=[0.5]",
        f"tune.best_params_path={best_path}",
    )
    lake = Lake.at(config.lake.root)
    result = tune(spark, config, lake)

    configure_mlflow(config.mlflow)
    children = MlflowClient().search_runs(
        [mlflow.get_run(result.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    # ALS: the configured point (rank 8, reg 0.1, alpha 10; the grid's rank 8 is the same point)
    # and rank 1; EASE: 300 (configured), 50, 500; one blend of the best two.
    assert len(children) == 6
    scores: dict[tuple, float] = {}
    for child in children:
        params = child.data.params
        key = (params["family"], params.get("rank"), params.get("ease_l2"))
        scores[key] = child.data.metrics["ndcg_at_k"]
    best_key = max(scores, key=scores.get)
    stored = json.loads(best_path.read_text())
    assert stored["run_id"] == result.run_id
    assert stored["family"] == result.plan.family
    assert stored["scores"][stored["family"]] == pytest.approx(scores[best_key]) or stored["family"] == BLEND
    for family in (ALS, EASE):
        family_best = max(v for k, v in scores.items() if k[0] == family)
        assert stored["scores"][family] == pytest.approx(family_best)
    parent = mlflow.get_run(result.run_id)
    # The validation period is carved out of the training period: trials never see the test period.
    assert parent.data.tags["validation_split"] in ("time", "per_user")
    assert "best_params.json" in {a.path for a in MlflowClient().list_artifacts(result.run_id)}

    trained_tuned = train(spark, config, lake, gate=no_gate)
    assert trained_tuned.tuned_from_run == result.run_id
    assert trained_tuned.family == result.plan.family
    params = mlflow.get_run(trained_tuned.run_id).data.params
    assert params["family"] == result.plan.family and params["tuned_from_run"] == result.run_id


def test_train_tunes_by_itself_when_there_is_no_plan_and_the_budget_bounds_blends_too(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop, _ = trained_shop
    config = copy_shop(
        shop,
        tmp_path / "shop",
        "tune.auto=true",
        "train.families=[als, ease]",
        "train.blend=true",
        "train.rank=8",
        "tune.rank=[4, 8]",
        "tune.ease_l2=[50, 500]",
        "tune.ease_signal=[preference]",
        "tune.blend_weight=[0.25, 0.5, 0.75]",
        # Spent before the search starts: each family's configured point and one blend, no more.
        "tune.budget_seconds=0.001",
        f"tune.best_params_path={tmp_path / 'plan.json'}",
    )
    result = train(spark, config, Lake.at(config.lake.root), gate=no_gate)
    assert result.tuned_from_run is not None and (tmp_path / "plan.json").exists()
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["family"] == result.family and plan["positives"] > 0  # train used what it tuned

    configure_mlflow(config.mlflow)
    parent = mlflow.get_run(result.tuned_from_run)
    trials = MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    families = sorted(t.data.params["family"] for t in trials)
    assert families == [ALS, BLEND, EASE], families
    blend = next(t for t in trials if t.data.params["family"] == BLEND)
    assert float(blend.data.params["blend_weight"]) == 0.25


def test_tune_without_room_for_a_validation_period_exits_2(
    trained_shop: tuple[Config, TrainResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop, _ = trained_shop
    config = copy_shop(shop, tmp_path / "shop")
    code = main(
        [
            "tune",
            "--set",
            f"lake.root={config.lake.root}",
            "--set",
            f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
            "--set",
            f"catalog.path={config.catalog.path}",
            "--set",
            "train.test_days=5",
            "--set",
            "tune.validation_split=time",
            "--set",
            "tune.validation_days=30",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot carve a validation period" in err and "tune.validation_days" in err

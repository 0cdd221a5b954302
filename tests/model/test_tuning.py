"""Tuning: chooses family and settings on the validation period, nests trials in MLflow, feeds
`train`, and runs by itself when the stored plan is missing or stale."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from recspark.cli import main
from recspark.core.config import Config, load_config
from recspark.core.config.model import TuneConfig
from recspark.core.gates import no_gate
from recspark.core.registry import configure_mlflow
from recspark.core.tables import Lake
from recspark.model.candidates.sources import CATEGORY_POPULAR, POPULAR
from recspark.model.evaluation.holdout import Holdout, Scored, scored_on_driver
from recspark.model.evaluation.inputs import read_inputs
from recspark.model.evaluation.local_scoring import LocalModel
from recspark.model.evaluation.splits import choose_split, split_period
from recspark.model.families.local_als import ImplicitALS, least_squares_step
from recspark.model.families.model import ALS, BLEND, EASE, FittedModel, ModelSpec, fit_model
from recspark.model.training.train import TrainResult, train
from recspark.model.tuning.plan import TunedPlan
from recspark.model.tuning.search import search_space, tune, validation_policy, winner_of
from recspark.model.tuning.trials import LocalTrials
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


@pytest.mark.slow
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
        "train.driver_max_pairs=0",  # every trial in Spark: MLlib's ALS and the Spark path's lists
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
    assert parent.data.tags["trials_on"] == "spark"
    # The validation period is carved out of the training period: trials never see the test period.
    assert parent.data.tags["validation_split"] in ("time", "per_user")
    assert "best_params.json" in {a.path for a in MlflowClient().list_artifacts(result.run_id)}

    trained_tuned = train(spark, config, lake, gate=no_gate)
    assert trained_tuned.tuned_from_run == result.run_id
    assert trained_tuned.family == result.plan.family
    params = mlflow.get_run(trained_tuned.run_id).data.params
    assert params["family"] == result.plan.family and params["tuned_from_run"] == result.run_id


@pytest.mark.slow
def test_train_tunes_by_itself_on_the_driver_with_als_by_successive_halving(
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
        "train.max_iter=5",
        "tune.rank=[4, 8]",
        "tune.reg_param=[0.1]",
        "tune.alpha=[1, 10]",
        "tune.ease_l2=[50, 500]",
        "tune.ease_signal=[preference]",
        "tune.blend_weight=[0.5]",
        f"tune.best_params_path={tmp_path / 'plan.json'}",
    )
    result = train(spark, config, Lake.at(config.lake.root), gate=no_gate)
    assert result.tuned_from_run is not None and (tmp_path / "plan.json").exists()
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["family"] == result.family and plan["positives"] > 0  # train used what it tuned
    assert plan["params"][ALS]["max_iter"] == 5  # the best ALS setting, as the final fit runs it

    configure_mlflow(config.mlflow)
    parent = mlflow.get_run(result.tuned_from_run)
    assert parent.data.tags["trials_on"] == "driver" and parent.data.tags["budget_not_started"] == "none"
    trials = MlflowClient().search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    # ALS: the configured point and 4 of the grid to 3 iterations, the better 3 of them to 5;
    # EASE: the configured λ 300, 50 and 500 (one decomposition); one blend of the two bests.
    iterations = sorted(int(t.data.params["max_iter"]) for t in trials if t.data.params["family"] == ALS)
    assert iterations == [3] * 5 + [5] * 3
    assert sum(t.data.params["family"] == EASE for t in trials) == 3
    assert sum(t.data.params["family"] == BLEND for t in trials) == 1


@pytest.mark.slow
def test_a_budget_with_no_room_for_a_trial_trains_the_configured_settings(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop, _ = trained_shop
    config = copy_shop(
        shop,
        tmp_path / "shop",
        "tune.auto=true",
        "train.families=[als, ease]",
        "tune.budget_seconds=0.001",  # spent before the first trial could be started
        f"tune.best_params_path={tmp_path / 'plan.json'}",
    )
    result = train(spark, config, Lake.at(config.lake.root), gate=no_gate)
    assert result.tuned_from_run is None and not (tmp_path / "plan.json").exists()
    assert result.family == ALS  # train.families[0] with its configured settings


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


# --------------------------------------------------------------------------------------------
# Trials on the driver: the same lists and metrics as the Spark path, MLlib's ALS objective


@pytest.fixture(scope="module")
def validation(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path_factory: pytest.TempPathFactory
):
    """The shop's validation period as tuning carves it, ready to score on (a private copy)."""
    config = copy_shop(trained_shop[0], tmp_path_factory.mktemp("validation"), "train.families=[als, ease]")
    lake = Lake.at(config.lake.root)
    inputs = read_inputs(spark, config, lake)
    split = choose_split(inputs.split.train_events, validation_policy(config, inputs.split))
    data = split_period(spark, config, lake, split, all_interactions=inputs.interactions, period="validation")
    yield config, inputs, split, data
    data.unpersist()
    split.unpersist()
    inputs.unpersist()


def served(lists: pd.DataFrame) -> pd.DataFrame:
    return lists[["user_id", "rank", "item_id"]].sort_values(["user_id", "rank"]).reset_index(drop=True)


@pytest.mark.parametrize(
    "rules",
    [
        (),
        (
            "serve.max_per_category=1",
            "serve.new_item_share=0.3",
            "serve.new_item_days=30",
            "serve.min_score=0.01",
        ),
    ],
    ids=["defaults", "category-cap-new-items-min-score"],
)
@pytest.mark.slow
def test_lists_scored_on_the_driver_equal_the_spark_path(
    spark: SparkSession, validation, rules: tuple[str, ...]
) -> None:
    shop, inputs, split, data = validation
    config = replace(shop, serve=load_config(None, list(rules), environ={}).serve)
    holdout = Holdout(spark, config, split, data, inputs.catalog, inputs.eligible)
    als = ModelSpec(ALS, als=config.train)
    ease = ModelSpec(EASE, als=config.train, ease_l2=50.0, ease_signal="binary")
    fitted_als = fit_model(spark, als, data, config.ease)
    fitted_ease = fit_model(spark, ease, data, config.ease)
    blend = replace(ease, family=BLEND, blend_weight=0.3)
    models = {
        "none": None,
        ALS: fitted_als,
        EASE: fitted_ease,
        BLEND: FittedModel(blend, fitted_als.user_factors, fitted_als.item_factors, fitted_ease.similarity),
    }

    def same(driver: Scored, spark_path: Scored, name: str) -> None:
        pd.testing.assert_frame_equal(driver.per_user, spark_path.per_user, check_dtype=False, obj=name)
        assert driver.metrics == pytest.approx(spark_path.metrics, rel=1e-12)  # coverage, novelty too
        for rows, expected in ((driver.by_k, spark_path.by_k), (driver.bands, spark_path.bands)):
            assert len(rows) == len(expected) > 0
            for row, expected_row in zip(rows, expected, strict=True):
                assert row == pytest.approx(expected_row, rel=1e-12)

    try:
        local = holdout.on_driver()
        assert local is not None  # the shop is far below train.driver_max_pairs
        for name, model in models.items():
            expected = served(holdout.lists(model).toPandas())
            assert len(expected) > 0
            on_driver = None if model is None else LocalModel.of(model)
            pd.testing.assert_frame_equal(
                served(local.lists(on_driver, holdout.chain)), expected, check_dtype=False, obj=name
            )
            spark_path = holdout.score(name, holdout.lists(model), detail=True)
            same(holdout.score_model(name, model, detail=True), spark_path, name)
        for name, sources in ((POPULAR, (POPULAR,)), (CATEGORY_POPULAR, holdout.chain)):
            spark_path = holdout.score(name, holdout.lists(None, sources), detail=True)
            same(holdout.score_baseline(name, detail=True), spark_path, name)
    finally:
        fitted_als.unpersist()
        fitted_ease.unpersist()
        holdout.unpersist()


def test_the_driver_als_minimises_mllibs_objective_and_scores_alike(spark: SparkSession, validation) -> None:
    config, inputs, split, data = validation
    settings = replace(config.train, rank=8, reg_param=0.05, alpha=2.0, max_iter=10)
    spec = ModelSpec(ALS, als=settings)
    holdout = Holdout(spark, config, split, data, inputs.catalog, inputs.eligible)
    mllib = fit_model(spark, spec, data, config.ease)
    try:
        local = holdout.on_driver()
        assert local is not None
        trials = LocalTrials(config, local)
        ratings = trials.ratings
        _, driver = trials.als_model(spec, settings.max_iter, None)
        theirs = LocalModel.of(mllib)
        # MLlib's users are MLlib's user step against its items: the driver's step gives them back.
        items = theirs.item_factors[pd.Index(theirs.item_ids).get_indexer(pd.Index(ratings.item_ids))]
        users = theirs.user_factors[pd.Index(theirs.user_ids).get_indexer(pd.Index(ratings.user_ids))]
        step = least_squares_step(items, ratings.by_user, settings.alpha, settings.reg_param)
        np.testing.assert_allclose(step, users, rtol=1e-3, atol=1e-4 * np.abs(users).max())

        # The same objective, minimised from different random starts: about the same minimum.
        def loss(user_factors: np.ndarray, item_factors: np.ndarray) -> float:
            return ImplicitALS(
                ratings, 8, settings.reg_param, settings.alpha, user_factors, item_factors
            ).loss()

        assert loss(driver.user_factors, driver.item_factors) == pytest.approx(loss(users, items), rel=0.03)
        # And the lists score the same within noise on the validation users.
        ours = scored_on_driver(local, "driver", local.lists(driver))
        theirs_scored = scored_on_driver(local, "mllib", local.lists(theirs))
        interval = theirs_scored.intervals["ndcg"]
        assert abs(ours.metrics["ndcg"] - theirs_scored.metrics["ndcg"]) < (interval.high - interval.low) / 2
    finally:
        mllib.unpersist()
        holdout.unpersist()

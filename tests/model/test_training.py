"""Training: the baselines, reproducibility, what each run leaves behind, and failures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.cli import main
from recspark.core.config import Config
from recspark.core.config.model import TrainConfig
from recspark.core.config.serving import ServeConfig
from recspark.core.gates import no_gate
from recspark.core.registry import champion_version, configure_mlflow
from recspark.core.tables import ALS_ITEM_FACTORS, ALS_USER_FACTORS, INTERACTIONS, Lake
from recspark.model.candidates.lists import ListInputs, build_lists
from recspark.model.evaluation.holdout import BASELINE_SOURCES
from recspark.model.families.als import fit_als
from recspark.model.training.train import TrainResult, train
from tests.conftest import copy_shop


def interactions_frame(spark: SparkSession, rows: list[tuple[str, str, float, int]]) -> DataFrame:
    """(user, item, strength, purchases) as rows of the interactions table."""
    now = datetime(2026, 11, 20)
    return spark.createDataFrame(
        [(u, i, 0, 0, 0, p, 0, None, now, now, s, s, now) for u, i, s, p in rows],
        INTERACTIONS.schema,
    )


def test_category_baseline_is_the_fallback_chain_users_without_a_model_get(spark: SparkSession) -> None:
    catalog = spark.createDataFrame(
        [("i1", "A", True), ("i2", "A", True), ("i3", "A", True), ("j1", "B", True), ("j2", "B", True),
         ("k1", "C", True), ("zz", None, True)],
        "item_id string, category string, available boolean",
    )  # fmt: skip
    # Popularity (users per item): i1 5, i2 3, i3 1, j1 10, j2 2, k1 4, zz 1 (from other users).
    crowd = [(f"c{n}", item, 1.0, 0) for item, users in {"i1": 4, "i2": 3, "j1": 10, "j2": 1, "k1": 3}.items()
             for n in range(users)]  # fmt: skip
    # u: category strength A 5 (i3 and i1), C 2, B 1; bought i1. v: only an item without category.
    mine = [
        ("u", "i3", 4.0, 0),
        ("u", "i1", 1.0, 1),
        ("u", "k1", 2.0, 0),
        ("u", "j2", 1.0, 0),
        ("v", "zz", 3.0, 0),
    ]
    interactions = interactions_frame(spark, crowd + mine)
    users = spark.createDataFrame([("u",), ("v",)], "user_id string")

    def lists(favourites: int) -> dict[str, list[str]]:
        serve = ServeConfig(top_n=4, trending_days=0)
        inputs = ListInputs(
            users=users,
            interactions=interactions,
            eligible=interactions.select("item_id").distinct(),
            catalog=catalog,
            fallbacks=BASELINE_SOURCES["category_popular"],
        )
        got: dict[str, list[str]] = {}
        for row in build_lists(spark, serve, favourites, inputs).orderBy("user_id", "rank").collect():
            got.setdefault(row["user_id"], []).append(row["item_id"])
        return got

    # u's favourite is A: its popular items (score = share x popularity) minus the bought i1,
    # then the most popular items overall. v has no categorised history: popular only.
    assert lists(1) == {"u": ["i2", "i3", "j1", "k1"], "v": ["j1", "i1", "k1", "i2"]}
    # Two favourites, A (share 5/7) and C (2/7): i2 5/7 x 3 > k1 2/7 x 4 > i3 5/7 x 1.
    assert lists(2) == {"u": ["i2", "k1", "i3", "j1"], "v": ["j1", "i1", "k1", "i2"]}


def test_training_is_reproducible_with_a_fixed_seed(spark: SparkSession) -> None:
    ratings = spark.createDataFrame(
        [(u, i, float(1 + (u * i) % 3)) for u in range(20) for i in range(15) if (u + 2 * i) % 3 != 0],
        "user_idx int, item_idx int, rating float",
    )
    settings = TrainConfig(rank=4, max_iter=3, num_user_blocks=2, num_item_blocks=2, seed=7)

    def factors(seed: int) -> list[tuple[int, list[float]]]:
        model = fit_als(ratings, TrainConfig(**{**settings.__dict__, "seed": seed}))
        return sorted((r["id"], list(r["features"])) for r in model.userFactors.collect()) + sorted(
            (-1 - r["id"], list(r["features"])) for r in model.itemFactors.collect()
        )

    first = factors(7)
    assert factors(7) == first  # bit for bit
    assert factors(8) != first


def test_run_reports_baselines_intervals_factors_and_the_report(
    spark: SparkSession, shop: Config, trained: TrainResult
) -> None:
    metrics = trained.metrics
    for prefix in ("", "popular_", "category_popular_"):
        for name in ("precision", "recall", "ndcg", "map", "hit_rate"):
            value = metrics[f"{prefix}{name}_at_k"]
            low, high = metrics[f"{prefix}{name}_at_k_ci_low"], metrics[f"{prefix}{name}_at_k_ci_high"]
            assert low <= value <= high and high > low, (prefix, name)
        assert 0.0 < metrics[f"{prefix}coverage_at_k"] <= 1.0 and metrics[f"{prefix}novelty_at_k"] > 0.0
    assert metrics["category_popular_test_users"] == metrics["test_users"] >= shop.mlflow.min_test_users
    # By default only the popularity baseline gates promotion; the other is reported.
    assert "most popular" in trained.reason and "categories" not in trained.reason
    assert "test_days=5" not in trained.test_period and "newest 5 days" in trained.test_period

    lake = Lake.at(shop.lake.root)
    for spec, key in ((ALS_USER_FACTORS, "user_id"), (ALS_ITEM_FACTORS, "item_id")):
        factors = lake.read(spark, spec).where(f"model_version = '{trained.model_version}'")
        assert factors.count() > 0 and factors.where(F.col("run_id") != trained.run_id).count() == 0
        assert {r[0] for r in factors.select("model_name").distinct().collect()} == {shop.mlflow.model_name}
        assert len(factors.first()["features"]) == shop.train.rank
        known = lake.read(spark, INTERACTIONS).select(key).distinct()
        assert factors.select(key).subtract(known).count() == 0

    configure_mlflow(shop.mlflow)
    client = MlflowClient()
    run = client.get_run(trained.run_id)
    assert run.data.tags["model_family"] == "als" and run.data.tags["promotion_status"] == "promoted"
    assert run.data.tags["test_split"] == "time" and "newest 5 days" in run.data.tags["test_period"]
    names = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"evaluation_report.html", "evaluation.txt", "model"} <= names
    page = Path(
        mlflow.artifacts.download_artifacts(run_id=trained.run_id, artifact_path="evaluation_report.html")
    )
    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") == 6  # five metric-by-K charts and popularity vs frequency
    for label in (
        "ALS",
        "most popular",
        "popular in favourite categories",
        "ndcg by K",
        "bootstrap interval",
    ):
        assert label in html
    assert f"[{metrics['ndcg_at_k_ci_low']:.4f}, {metrics['ndcg_at_k_ci_high']:.4f}]" in html


@pytest.mark.parametrize("store", ["unreachable-server", "uncreatable-directory"])
def test_a_missing_tracking_store_stops_training_with_a_clear_error(
    spark: SparkSession,
    shop: Config,
    trained: TrainResult,
    tmp_path: Path,
    store: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    if store == "unreachable-server":
        uri = "http://127.0.0.1:9"  # discard port: nothing listens there
    else:
        (tmp_path / "a-file").write_text("not a directory")
        uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    config = copy_shop(shop, tmp_path / "shop")
    configure_mlflow(config.mlflow)  # MLflow's store is process-wide: point it at this copy
    champion_before = str(champion_version(config.mlflow).version)
    code = main(
        [
            "train",
            "--set",
            f"lake.root={config.lake.root}",
            "--set",
            f"catalog.path={config.catalog.path}",
            "--set",
            f"mlflow.tracking_uri={uri}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("recspark train: error:")]
    assert len(errors) == 1 and f"MLflow tracking store at {uri}" in errors[0]
    assert "Traceback" not in err
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    assert str(champion_version(config.mlflow).version) == champion_before


@pytest.mark.slow
def test_a_retrain_with_the_champions_settings_is_promoted_despite_a_margin(
    spark: SparkSession, shop: Config, trained: TrainResult, tmp_path: Path
) -> None:
    """The nightly retrain: fresher data, the champion's settings. The champion's settings refitted
    on the same split are the candidate itself, so the margin (for challengers with other
    settings) cannot apply; the baselines still gate."""
    config = copy_shop(shop, tmp_path, "mlflow.promotion_margin=0.01")
    lake = Lake.at(config.lake.root)
    retrained = train(spark, config, lake, gate=no_gate)
    assert retrained.promoted and retrained.status == "promoted", retrained.reason
    assert retrained.reason.startswith(
        f"same settings as champion version {trained.model_version}: a refit on fresher data, promoted"
    )
    assert "most popular baseline" in retrained.reason
    configure_mlflow(config.mlflow)
    assert str(champion_version(config.mlflow).version) == retrained.model_version

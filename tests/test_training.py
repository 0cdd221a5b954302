"""Training: the category baseline, reproducibility, what each run leaves behind, and failures."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.cli import main
from recspark.core.config import Config, TrainConfig
from recspark.core.registry import champion_version, configure_mlflow
from recspark.core.tables import ALS_ITEM_FACTORS, ALS_USER_FACTORS, INTERACTIONS, Lake
from recspark.model.train import TrainResult, category_popular_recommendations, fit_als


def test_category_baseline_recommends_popular_items_of_favourite_categories(spark: SparkSession) -> None:
    categories = spark.createDataFrame(
        [("i1", "A"), ("i2", "A"), ("i3", "A"), ("j1", "B"), ("j2", "B"), ("k1", "C")],
        "item_id string, category string",
    )
    popularity = spark.createDataFrame(
        [("i1", 5.0), ("i2", 3.0), ("i3", 1.0), ("j1", 10.0), ("j2", 2.0), ("k1", 4.0), ("zz", 0.5)],
        "item_id string, popularity double",
    )
    # u: category strength A 5 (i3 and i1), C 2, B 1; bought i1. v: only an item without category.
    interactions = spark.createDataFrame(
        [("u", "i3", 4.0), ("u", "i1", 1.0), ("u", "k1", 2.0), ("u", "j2", 1.0), ("v", "zz", 3.0)],
        "user_id string, item_id string, strength double",
    )
    users = spark.createDataFrame([("u", ["i1"]), ("v", None)], "user_id string, exclude array<string>")

    def recs(favourites: int) -> dict[str, list[str]]:
        rows = category_popular_recommendations(users, interactions, popularity, categories, 4, favourites)
        got: dict[str, list[str]] = {}
        for row in rows.orderBy("user_id", "rank").collect():
            got.setdefault(row["user_id"], []).append(row["item_id"])
        return got

    # u's favourite is A: its popular items minus the purchased i1, then overall popularity.
    # v has no categorised history: overall popularity only.
    assert recs(1) == {"u": ["i2", "i3", "j1", "k1"], "v": ["j1", "i1", "k1", "i2"]}
    # Two favourites (A, C): their items by popularity (k1 4 > i2 3 > i3 1), then the fill.
    assert recs(2) == {"u": ["k1", "i2", "i3", "j1"], "v": ["j1", "i1", "k1", "i2"]}


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


def test_run_reports_both_baselines_and_keeps_factors_and_report(
    spark: SparkSession, shop: Config, trained: TrainResult
) -> None:
    metrics = trained.metrics
    for prefix in ("", "popular_", "category_popular_"):
        for name in ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "novelty"):
            assert metrics[f"{prefix}{name}_at_k"] >= 0.0, (prefix, name)
    assert metrics["category_popular_test_users"] == metrics["test_users"]
    # By default only the popularity baseline gates promotion; the other is reported.
    assert "most popular" in trained.reason and "categories" not in trained.reason

    lake = Lake.at(shop.lake.root)
    for spec, key in ((ALS_USER_FACTORS, "user_id"), (ALS_ITEM_FACTORS, "item_id")):
        factors = lake.read(spark, spec).where(f"model_version = '{trained.model_version}'")
        assert factors.count() > 0 and factors.where(F.col("run_id") != trained.run_id).count() == 0
        assert len(factors.first()["features"]) == shop.train.rank
        known = lake.read(spark, INTERACTIONS).select(key).distinct()
        assert factors.select(key).subtract(known).count() == 0

    configure_mlflow(shop.mlflow)
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"evaluation_report.html", "evaluation.txt", "model"} <= names
    page = Path(
        mlflow.artifacts.download_artifacts(run_id=trained.run_id, artifact_path="evaluation_report.html")
    )
    html = page.read_text(encoding="utf-8")
    assert html.count("<svg") == 6  # five metric-by-K charts and popularity vs frequency
    for label in ("ALS", "most popular", "popular in favourite categories", "ndcg by K"):
        assert label in html


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
    champion_before = str(champion_version(shop.mlflow).version)
    code = main(
        [
            "train",
            "--set",
            f"lake.root={shop.lake.root}",
            "--set",
            f"catalog.path={shop.catalog.path}",
            "--set",
            f"mlflow.tracking_uri={uri}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("recspark train: error:")]
    assert len(errors) == 1 and f"MLflow tracking store at {uri}" in errors[0]
    assert "Traceback" not in err
    mlflow.set_tracking_uri(shop.mlflow.tracking_uri)
    assert str(champion_version(shop.mlflow).version) == champion_before

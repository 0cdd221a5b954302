"""Benchmark: `recspark train` on a generated shop, and the `implicit` library's ALS as the peer.

    .venv/bin/pip install -e ".[bench]"      # the peer: implicit (CPU)
    .venv/bin/python bench/train.py --events 1000000 --users 50000 --items 10000

1. Generates a shop (`recspark.datasets.shop.events`: ground-truth events, no ingestion noise) and writes
   the `events` and `interactions` Delta tables directly (ingestion has its own benchmark).
2. Runs the real training job (`recspark.model.training.train.train`): wall time per phase (read, tune,
   evaluate, fit, log) and the quality of the model and both baselines on the test period. The
   first run finds no tuned plan, so it tunes (within ``tune.budget_seconds``); ``--trains 2``
   (the default) runs the job again, as the next nightly run would: the plan is fresh, there is
   a champion to compare with, nothing is tuned.
3. On the same train/test split and the same ALS input (log1p(strength), confidence
   1 + alpha * r, same rank, iterations and regularisation value), fits MLlib ALS and `implicit`'s
   CPU ALS, scores both with recspark's top-N and metric code, and prints time and NDCG@K.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config, load_config
from recspark.core.session import build_spark
from recspark.core.tables import EVENTS, INTERACTIONS, Lake
from recspark.datasets.history import load_history
from recspark.datasets.shop.events import generate_events
from recspark.datasets.shop.spec import ShopSpec
from recspark.model.evaluation.holdout import Holdout
from recspark.model.evaluation.inputs import read_inputs
from recspark.model.evaluation.splits import split_period
from recspark.model.families.als import als_ratings, factor_tables, fit_als
from recspark.model.families.model import ALS, FittedModel, ModelSpec
from recspark.model.training.train import train
from recspark.ops.quality.gate import gate_for


def write_shop_tables(spark: SparkSession, config: Config, lake: Lake, spec: ShopSpec, root: Path) -> int:
    """Events and interactions as Delta tables, the catalog as Parquet; returns the pair count."""
    catalog, events = generate_events(spec)
    catalog_path = str(root / "catalog.parquet")
    spark.createDataFrame(catalog).write.mode("overwrite").parquet(catalog_path)
    return load_history(spark, config, lake, spark.createDataFrame(events), "bench")


def peer_comparison(spark: SparkSession, config: Config, lake: Lake) -> dict[str, float]:
    """MLlib ALS vs implicit's ALS on the training job's split, scored by the same code."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    settings = config.train
    inputs = read_inputs(spark, config, lake)
    split = inputs.split
    data = split_period(spark, config, lake, split, all_interactions=inputs.interactions, period="the split")
    holdout = Holdout(spark, config, split, data, inputs.catalog, inputs.eligible)
    ratings = als_ratings(data.interactions, data.user_ids, data.item_ids, settings).persist()
    n_ratings = ratings.count()
    out: dict[str, float] = {"split_ratings": float(n_ratings), "test_users": float(holdout.users.count())}
    spec = ModelSpec(ALS, als=settings)

    started = time.time()
    model = fit_als(ratings, settings)
    model.userFactors.count(), model.itemFactors.count()
    out["mllib_fit_seconds"] = time.time() - started
    user_factors, item_factors = factor_tables(model, data.user_ids, data.item_ids)
    mllib = FittedModel(spec, user_factors, item_factors)
    out["mllib_ndcg_at_k"] = holdout.score_model("mllib", mllib).metrics["ndcg"]

    # What using `implicit` from this pipeline would add: the ratings collected into a CSR matrix.
    started = time.time()
    local = ratings.toPandas()
    n_users = int(data.user_ids.agg(F.max("user_idx")).collect()[0][0]) + 1
    n_items = int(data.item_ids.agg(F.max("item_idx")).collect()[0][0]) + 1
    # implicit's confidence is alpha * value: feed it 1 + alpha * r with alpha = 1, as MLlib uses.
    values = (1.0 + settings.alpha * local["rating"].to_numpy(np.float32)).astype(np.float32)
    confidence = csr_matrix(
        (values, (local["user_idx"].to_numpy(np.int64), local["item_idx"].to_numpy(np.int64))),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    out["implicit_handoff_seconds"] = time.time() - started
    with threadpool_limits(1, "blas"):  # implicit runs its own threads (all cores), as its docs advise
        peer = AlternatingLeastSquares(
            factors=settings.rank,
            regularization=settings.reg_param,
            alpha=1.0,
            iterations=settings.max_iter,
            random_state=settings.seed,
            calculate_training_loss=False,
        )
    started = time.time()
    with threadpool_limits(1, "blas"):
        peer.fit(confidence, show_progress=False)
    out["implicit_fit_seconds"] = time.time() - started
    peer_users = spark.createDataFrame(
        pd.DataFrame({"user_idx": np.arange(n_users, dtype=np.int32), "features": list(peer.user_factors)}),
        "user_idx int, features array<float>",
    ).join(data.user_ids, "user_idx")
    peer_items = spark.createDataFrame(
        pd.DataFrame({"item_idx": np.arange(n_items, dtype=np.int32), "features": list(peer.item_factors)}),
        "item_idx int, features array<float>",
    ).join(data.item_ids, "item_idx")
    # Items the training period never saw have no signal: MLlib has no factors for them either.
    seen = ratings.select("item_idx").distinct()
    peer_model = FittedModel(
        spec,
        peer_users.select("user_id", "features"),
        peer_items.join(seen, "item_idx").select("item_id", "features"),
    )
    out["implicit_ndcg_at_k"] = holdout.score_model("implicit", peer_model).metrics["ndcg"]
    holdout.unpersist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--categories", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--reg-param", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--trains", type=int, default=2, help="training runs in a row (see above)")
    parser.add_argument(
        "--reuse", action="store_true", help="train on the tables already in --workdir (no generation)"
    )
    parser.add_argument("--skip-peer", action="store_true", help="no MLlib / implicit comparison")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any further config override, e.g. train.num_user_blocks=2 (repeatable)",
    )
    args = parser.parse_args()
    if args.trains < 1:
        parser.error("--trains must be at least 1")

    root = Path(args.workdir or tempfile.mkdtemp(prefix="recspark-bench-train-"))
    config = load_config(
        None,
        [
            f"spark.driver_memory={args.driver_memory}",
            "spark.shuffle_partitions=8",
            "spark.conf.spark.ui.enabled=false",
            "spark.conf.spark.databricks.delta.snapshotPartitions=2",
            f"lake.root={root / 'lake'}",
            f"catalog.path={root / 'catalog.parquet'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"mlflow.artifact_location={root / 'mlartifacts'}",
            f"train.rank={args.rank}",
            f"train.max_iter={args.max_iter}",
            f"train.reg_param={args.reg_param}",
            f"train.alpha={args.alpha}",
            *args.set,
        ],
        environ={},
    )
    spark = build_spark(config, "bench-train")
    lake = Lake.at(config.lake.root)
    if args.reuse:
        pairs = lake.read(spark, INTERACTIONS).count()
        print(f"shop: reusing the tables in {root}", flush=True)
    else:
        spec = ShopSpec(
            users=args.users,
            items=args.items,
            categories=args.categories,
            events=args.events,
            days=args.days,
            seed=args.seed,
        )
        started = time.time()
        pairs = write_shop_tables(spark, config, lake, spec, root)
        print(f"shop: {pairs:,} user-item pairs written in {time.time() - started:.0f} s", flush=True)
    n_events = lake.read(spark, EVENTS).count()
    print(f"shop: {n_events:,} events, {pairs:,} user-item pairs", flush=True)

    runs = []
    for attempt in range(1, args.trains + 1):
        started = time.time()
        result = train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))
        total = time.time() - started
        runs.append(
            {"train_seconds": round(total, 1), "phases": result.phase_seconds, "family": result.family}
        )
        m = result.metrics
        print(
            f"train run {attempt}: {total:.1f} s, {result.family}, {result.status}; "
            f"phases {result.phase_seconds}",
            flush=True,
        )
        for name in ("ndcg", "precision", "recall", "map", "hit_rate", "coverage", "novelty"):
            print(
                f"  {name + '@K':<12} model {m[f'{name}_at_k']:.4f}  "
                f"popular {m[f'popular_{name}_at_k']:.4f}  "
                f"category-popular {m[f'category_popular_{name}_at_k']:.4f}",
                flush=True,
            )
    summary = {
        "events": n_events,
        "pairs": pairs,
        "runs": runs,
        "metrics": {k: round(v, 4) for k, v in m.items()},
    }
    if args.skip_peer:
        print(json.dumps(summary))
        spark.stop()
        return
    peer = peer_comparison(spark, config, lake)
    mllib, fit = peer["mllib_fit_seconds"], peer["implicit_fit_seconds"]
    handoff = peer["implicit_handoff_seconds"]
    print(
        f"same split ({peer['split_ratings']:,.0f} training pairs, {peer['test_users']:,.0f} test users): "
        f"MLlib ALS fit {mllib:.1f} s NDCG@K {peer['mllib_ndcg_at_k']:.4f} | "
        f"implicit fit {fit:.1f} s (+{handoff:.1f} s to collect its CSR input) "
        f"NDCG@K {peer['implicit_ndcg_at_k']:.4f} | "
        f"time ratio {mllib / fit:.1f}x fit, {mllib / (fit + handoff):.1f}x with the hand-off",
        flush=True,
    )
    print(json.dumps({**summary, "peer": {k: round(v, 4) for k, v in peer.items()}}))
    spark.stop()


if __name__ == "__main__":
    main()

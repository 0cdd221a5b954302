"""Benchmark: item-item top-N (EASE) and the ALS + item-item blend, as the serving job scores them.

    .venv/bin/python bench/itemitem.py --users 100000 --items 10000 --history 20 --neighbours 500
    .venv/bin/python bench/itemitem.py --users 1000 --weights table   # a refresh batch's fixed cost
    .venv/bin/python bench/itemitem.py --users 20000 --catalogue 400000 --items-per-block 100000 --modes blend

Synthetic inputs of the shape a shop's EASE champion serves: ``--items`` modelled items, each with
``--neighbours`` weights (``ease.neighbours``), and users with ``--history`` history items each,
which are also their exclusions (already bought), as serving passes them. Item popularity is
skewed (a Zipf-like draw), so histories overlap as real ones do. The blend adds ALS vectors of
``--rank`` to users and items. Each mode runs once cold and ``--warm-runs`` times warm; the median
of the warm runs is reported. The output is written to Spark's ``noop`` sink, so every row is
built and nothing is stored. Each run is timed from the call, so the driver's share counts too:
``--weights`` says what it gets (weights prepared once, as a serving champion keeps them; a pandas
frame; or a Spark table collected on every call, as each refresh batch did before), and a small
``--users`` makes that share a refresh batch's fixed cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from topn import WorkerPeak  # bench/topn.py, next to this script

from recspark.core.config import load_config
from recspark.core.session import build_spark
from recspark.model.scoring.item_item import recommend_item_item
from recspark.model.scoring.weights import ItemWeights


def skewed_items(rng: np.random.Generator, items: int, size: tuple[int, int]) -> np.ndarray:
    """Item indices drawn with popularity falling as 1/rank, as a shop's sales do."""
    popularity = 1.0 / np.arange(1, items + 1)
    return rng.choice(items, size=size, p=popularity / popularity.sum())


def similarity_weights(rng: np.random.Generator, items: int, neighbours: int) -> pd.DataFrame:
    """``neighbours`` random weights from every item, as ``ItemGram.similarity`` keeps them."""
    sources = np.repeat(np.arange(items), neighbours)
    targets = (sources + rng.integers(1, items, size=len(sources))) % items
    return pd.DataFrame(
        {
            "item_id": sources.astype(str).astype(object),
            "similar_item_id": targets.astype(str).astype(object),
            "weight": rng.normal(size=len(sources)).astype(np.float32),
        }
    ).drop_duplicates(["item_id", "similar_item_id"])


def user_frame(
    spark: SparkSession, rng: np.random.Generator, users: int, items: int, history: int, rank: int
) -> DataFrame:
    picks = skewed_items(rng, items, (users, history)).astype(str)
    vectors = rng.normal(size=(users, rank)).astype(np.float32)
    rows = [
        (f"u{u}", picks[u].tolist(), [1.0] * history, picks[u].tolist(), vectors[u].tolist())
        for u in range(users)
    ]
    schema = (
        "user_id string, history array<string>, history_weight array<double>, "
        "exclude array<string>, features array<float>"
    )
    return spark.createDataFrame(rows, schema).repartition(8).persist()


def timed_runs(score: Callable[[], DataFrame], warm_runs: int) -> tuple[float, list[float]]:
    """Cold and warm wall times of ``score()`` written to the noop sink: the driver's work (the
    weights as a sparse matrix, the broadcast) counts, as the serving job pays it."""
    runs = []
    for _ in range(1 + warm_runs):
        started = time.time()
        score().write.format("noop").mode("overwrite").save()
        runs.append(time.time() - started)
    return runs[0], runs[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=20, help="history (and excluded) items per user")
    parser.add_argument("--neighbours", type=int, default=500)
    parser.add_argument("--rank", type=int, default=32, help="ALS rank of the blend")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--modes", default="ease,blend", help="comma-separated: ease, blend")
    parser.add_argument(
        "--catalogue",
        type=int,
        default=None,
        help="eligible items with ALS vectors (default --items); the weights span the first --items",
    )
    parser.add_argument(
        "--items-per-block", type=int, default=None, help="serve.max_items_per_block (default: no bound)"
    )
    parser.add_argument(
        "--weights",
        default="prepared",
        choices=["prepared", "frame", "table"],
        help="what each call gets: the weights prepared once (ItemWeights, as a champion keeps "
        "them), a pandas frame built into a matrix per call, or a Spark table collected and built "
        "per call (what a refresh batch paid before)",
    )
    args = parser.parse_args()

    config = load_config(None, ["spark.shuffle_partitions=8", "spark.driver_memory=12g"])
    spark = build_spark(config, "bench-itemitem")
    rng = np.random.default_rng(0)
    frame = similarity_weights(rng, args.items, args.neighbours)
    similarity: DataFrame | pd.DataFrame | ItemWeights
    if args.weights == "table":
        similarity = spark.createDataFrame(frame).persist()
        similarity.count()
    elif args.weights == "frame":
        similarity = frame
    else:
        started = time.time()
        similarity = ItemWeights.from_frame(frame)
        print(f"weights prepared once in {time.time() - started:.2f} s", flush=True)
    users = user_frame(spark, rng, args.users, args.items, args.history, args.rank)
    users.count()
    catalogue = args.catalogue or args.items
    item_vectors = rng.normal(size=(catalogue, args.rank)).astype(np.float32)
    items = spark.createDataFrame(
        [(str(i), item_vectors[i].tolist()) for i in range(catalogue)],
        "item_id string, features array<float>",
    ).persist()
    items.count()

    for mode in args.modes.split(","):
        blend = mode == "blend"

        def score(blend: bool = blend) -> DataFrame:
            return recommend_item_item(
                spark,
                users if blend else users.drop("features"),
                similarity,
                items if blend else items.select("item_id"),
                args.n,
                users_per_block=args.block,
                als_weight=0.3 if blend else 0.0,
                weighted=True,
                items_per_block=args.items_per_block,
            )

        with WorkerPeak() as worker:
            cold, warm = timed_runs(score, args.warm_runs)
        print(
            f"| {date.today()} | {platform.node()} ({os.cpu_count()} cores) | {mode} | "
            f"{args.users:,} users x {catalogue:,} items ({args.items:,} weighted), "
            f"{args.history} history and excluded per user, {len(frame):,} weights ({args.weights})"
            f"{f', rank {args.rank}' if blend else ''}, N={args.n}, items per block "
            f"{args.items_per_block or 'all'} | {cold:.1f} s cold, {statistics.median(warm):.2f} s warm "
            f"({', '.join(f'{r:.2f}' for r in warm)}) | "
            f"peak Python worker {worker.peak_kib / 1024:.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Benchmark: blocked NumPy top-N vs MLlib's recommendForAllUsers vs implicit vs the bare matrix product.

    .venv/bin/python bench/topn.py --users 200000 --items 50000 --rank 64 --n 10
    .venv/bin/python bench/topn.py --users 50000 --items 400000 --rank 64 --n 10 --items-per-block 100000

All three run on the same random factors (an ALS model's factors have the same shape; their
values do not change the cost). The floor is one BLAS matrix product of all users against all
items in blocks, without any selection, on the driver with all cores. The product-and-selection
floor adds what top-N cannot skip, the selection of each user's N best, on one thread divided by
the cores (see :func:`product_and_selection_floor`). ``implicit`` (the optional ``bench``
extra) runs its ``recommend`` for all users on the driver with all cores, outside Spark.

Memory: the peak resident size of any Spark Python worker during the blocked top-N (sampled from
``/proc`` every 50 ms: ``VmHWM`` of every ``pyspark.daemon`` process), and the largest item
matrix the driver collects (the largest item block, or the whole catalogue within the budget).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import functions as F
from threadpoolctl import threadpool_limits

from recspark.core.config import load_config
from recspark.core.session import build_spark
from recspark.model.scoring.als import recommend_top_n
from recspark.model.scoring.blocks import item_blocks
from recspark.model.scoring.selection import CHUNK, ROWS_PER_PRODUCT, top_n_scores


class WorkerPeak:
    """The largest peak RSS (VmHWM) of any Spark Python worker process while it runs."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if b"pyspark.daemon" not in (proc / "cmdline").read_bytes():
                        continue
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except OSError:  # the process ended while being read
                    continue


def blocked_pass_seconds(users: np.ndarray, items: np.ndarray, n: int | None = None) -> float:
    """Wall time of one pass of all users against all items in ``ROWS_PER_PRODUCT`` blocks,
    outside Spark: the product alone, or with ``n`` also the selection (``top_n_scores``, as
    served, over a matrix padded as the scorer pads it). It gets the same help as the blocked
    top-N: a contiguous item matrix and one reused output block, built before the clock starts
    (fresh 100 MB arrays per product cost page faults, not arithmetic)."""
    width = len(items) if n is None else -(-len(items) // CHUNK) * CHUNK
    item_columns = np.zeros((items.shape[1], width), dtype=np.float32)
    item_columns[:, : len(items)] = items.T
    out = np.empty((ROWS_PER_PRODUCT, width), dtype=np.float32)
    started = time.time()
    for start in range(0, len(users), ROWS_PER_PRODUCT):
        block = users[start : start + ROWS_PER_PRODUCT]
        scores = out[: len(block)]
        np.matmul(block, item_columns, out=scores)
        if n is not None:
            scores[:, len(items) :] = -np.inf
            top_n_scores(scores, n)
    return time.time() - started


def product_and_selection_floor(users: np.ndarray, items: np.ndarray, n: int) -> float:
    """What the blocked top-N computes, outside Spark: the product and the selection for every
    user on one thread, divided by the cores, as if the users were split evenly between them.
    No Spark tasks, Arrow or output rows; no exclusions."""
    with threadpool_limits(limits=1, user_api="blas"):
        return blocked_pass_seconds(users, items, n) / (os.cpu_count() or 1)


def implicit_recommend_all(users: np.ndarray, items: np.ndarray, n: int) -> float:
    """Wall time of implicit's batched ``recommend`` for every user (same factors, no filtering)."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=users.shape[1])
    model.user_factors, model.item_factors = users, items
    started = time.time()
    model.recommend(np.arange(len(users)), None, N=n, filter_already_liked_items=False)
    seconds = time.time() - started
    print(f"implicit recommend: {seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument(
        "--exclude-per-user",
        type=int,
        default=0,
        help="items excluded per user (already bought), as serving passes them; default none",
    )
    parser.add_argument(
        "--items-per-block", type=int, default=None, help="serve.max_items_per_block (default: no bound)"
    )
    parser.add_argument("--warm-runs", type=int, default=3, help="timed runs after the cold one")
    parser.add_argument("--skip-mllib", action="store_true")
    parser.add_argument("--skip-implicit", action="store_true")
    args = parser.parse_args()

    config = load_config(None, ["spark.shuffle_partitions=8", "spark.driver_memory=12g"])
    spark = build_spark(config, "bench-topn")
    rng = np.random.default_rng(0)
    users = rng.normal(size=(args.users, args.rank)).astype(np.float32)
    items = rng.normal(size=(args.items, args.rank)).astype(np.float32)

    # The median of three, as for the warm top-N runs below; all cores (BLAS's own threads).
    floor = statistics.median(blocked_pass_seconds(users, items) for _ in range(3))
    print(f"matrix-product floor: {floor:.2f} s", flush=True)
    selection_floor = product_and_selection_floor(users, items, args.n)
    print(f"product-and-selection floor: {selection_floor:.2f} s", flush=True)
    implicit_seconds = float("nan") if args.skip_implicit else implicit_recommend_all(users, items, args.n)

    user_df = (
        spark.createDataFrame(
            [(i, users[i].tolist()) for i in range(args.users)], "id int, features array<float>"
        )
        .repartition(8)
        .persist()
    )
    item_df = spark.createDataFrame(
        [(i, items[i].tolist()) for i in range(args.items)], "id int, features array<float>"
    ).persist()
    user_df.count(), item_df.count()

    item_vectors = item_df.select(F.col("id").cast("string").alias("item_id"), "features")
    largest_block = args.items
    if args.items_per_block is not None and args.items > args.items_per_block:
        keyed, _ = item_blocks(item_vectors, args.items_per_block)
        largest_block = keyed.groupBy("item_block").count().agg(F.max("count")).collect()[0][0]
    # The first run in a process also starts the Python workers and imports NumPy and Arrow in
    # them, and the JVM compiles the Arrow paths; a serving job pays that once. The warm runs
    # after it are repeated and their median reported: single runs on a shared 2-core machine
    # vary by a second.
    scored_users = user_df.select(F.col("id").cast("string").alias("user_id"), "features")
    if args.exclude_per_user:
        scored_users = scored_users.withColumn(
            "exclude",
            F.transform(
                F.sequence(F.lit(1), F.lit(args.exclude_per_user)),
                lambda i: F.pmod(F.xxhash64(F.col("user_id"), i), F.lit(args.items)).cast("string"),
            ),
        )
    runs: list[float] = []
    with WorkerPeak() as worker:
        for _ in range(1 + args.warm_runs):
            started = time.time()
            blocked = recommend_top_n(
                spark,
                scored_users,
                item_vectors,
                args.n,
                args.block,
                items_per_block=args.items_per_block,
            )
            blocked.write.format("noop").mode("overwrite").save()
            runs.append(time.time() - started)
    cold, blocked_seconds = runs[0], statistics.median(runs[1:])
    driver_mib = largest_block * args.rank * 4 / 2**20
    print(
        f"blocked top-N: {cold:.1f} s cold, {blocked_seconds:.2f} s warm (median of "
        f"{', '.join(f'{r:.2f}' for r in runs[1:])}); peak Python worker "
        f"{worker.peak_kib / 1024:.0f} MiB; largest item matrix on the driver {largest_block:,} items, "
        f"{driver_mib:.0f} MiB",
        flush=True,
    )

    mllib_seconds = float("nan")
    if not args.skip_mllib:
        jvm = spark._jvm
        assert jvm is not None, "a live session has a JVM"
        jvm_model = jvm.org.apache.spark.ml.recommendation.ALSModel(
            "bench", args.rank, user_df._jdf, item_df._jdf
        )
        jvm_model.setUserCol("user").setItemCol("item")
        model = ALSModel(jvm_model)
        started = time.time()
        model.recommendForAllUsers(args.n).write.format("noop").mode("overwrite").save()
        mllib_seconds = time.time() - started
        print(f"recommendForAllUsers: {mllib_seconds:.1f} s", flush=True)

    print(
        f"| {date.today()} | {platform.node()} ({os.cpu_count()} cores) | "
        f"{args.users:,} users x {args.items:,} items, rank {args.rank}, N={args.n}, "
        f"{args.exclude_per_user} excluded per user | "
        f"items per block {args.items_per_block or 'all'} | blocked top-N {cold:.1f} s cold, "
        f"{blocked_seconds:.2f} s warm | "
        f"peak Python worker {worker.peak_kib / 1024:.0f} MiB | driver item matrix {driver_mib:.0f} MiB | "
        f"recommendForAllUsers {mllib_seconds:.1f} s | "
        f"implicit recommend {implicit_seconds:.1f} s | matrix-product floor {floor:.2f} s | "
        f"product-and-selection floor {selection_floor:.2f} s |"
    )


if __name__ == "__main__":
    main()

"""Blocked top-N scoring: users in blocks against broadcast item vectors, with NumPy/BLAS.

One implementation serves the model (ALS factors), the popularity baseline (a one-dimensional
"factor" holding each item's popularity) and evaluation, so what is measured is what is served.
Excluded items (already purchased, unavailable) are masked before selection, so every user keeps
N rows as long as N eligible items exist.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

TOPN_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
    ]
)


def top_n_scores(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and scores of each row's n best finite scores, best first (-inf = excluded).

    Rows with fewer than n finite scores have their missing slots at -inf; callers drop them.
    """
    k = min(n, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), dtype=np.int64), np.empty((scores.shape[0], 0))
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def recommend_top_n(
    spark: SparkSession,
    users: DataFrame,
    items: DataFrame,
    n: int,
    users_per_block: int = 2048,
) -> DataFrame:
    """Top-n items per user.

    ``users``: ``user_id``, ``features`` (array<float>), ``exclude`` (array<string> of item ids,
    may be null). ``items``: ``item_id``, ``features`` — only the eligible items (small enough to
    broadcast: items x rank floats). Returns ``user_id, rank, item_id, score``.
    """
    item_rows = items.select("item_id", "features").orderBy("item_id").collect()
    item_ids = np.array([r["item_id"] for r in item_rows], dtype=object)
    if len(item_ids) == 0:
        return spark.createDataFrame([], TOPN_SCHEMA)
    item_matrix = np.asarray([r["features"] for r in item_rows], dtype=np.float32)
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    shared = spark.sparkContext.broadcast((item_ids, item_matrix, position))

    def score_blocks(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, matrix, pos = shared.value
        for batch in batches:
            if batch.empty:
                continue
            user_matrix = np.stack(batch["features"].to_numpy()).astype(np.float32, copy=False)
            scores = user_matrix @ matrix.T
            for row, excluded in enumerate(batch["exclude"].to_numpy()):
                if excluded is not None and len(excluded):
                    cols = [pos[i] for i in excluded if i in pos]
                    scores[row, cols] = -np.inf
            cols, best = top_n_scores(scores, n)
            keep = np.isfinite(best)
            ranks = np.broadcast_to(np.arange(1, cols.shape[1] + 1, dtype=np.int32), cols.shape)
            user_ids = np.repeat(batch["user_id"].to_numpy(), cols.shape[1]).reshape(cols.shape)
            yield pd.DataFrame(
                {
                    "user_id": user_ids[keep],
                    "rank": ranks[keep],
                    "item_id": ids[cols[keep]],
                    "score": best[keep].astype(np.float64),
                }
            )

    if "exclude" not in users.columns:
        users = users.withColumn("exclude", F.lit(None).cast("array<string>"))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(users_per_block))
    return users.select("user_id", "features", "exclude").mapInPandas(score_blocks, TOPN_SCHEMA)

"""The item-item family: EASE weights (Steck, "Embarrassingly Shallow Autoencoders", 2019).

EASE learns, for every pair of items, how much interacting with one speaks for the other, by
ridge regression of each item's column on all other columns of the user-item matrix X, with the
closed form B = I - P diag(1/diag(P)), P = (XᵀX + λI)⁻¹, diag(B) = 0. On sparse real logs it is
one of the strongest simple models, and it needs no fold-in: a user's fresh history times B is
their score. X is binary, or holds the preference ALS sees (``ease.signal``): on a ratings log
the preference version is several per cent better, on a purchase log about level.

Where the work happens: co-occurrence counts XᵀX are summed in Spark (each partition of users
adds its own sparse XᵀX), only for the ``max_items`` most popular items with at least
``min_item_users`` users; the inverse of that item x item matrix is taken on the driver with
LAPACK (about a second for 5,000 items, 20-30 s for 10,000). Each item keeps its ``neighbours``
largest weights (by absolute value: negative weights rank too), which is what is stored and served.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import sparse

log = logging.getLogger(__name__)

SIMILARITY_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("similar_item_id", T.StringType(), False),
        T.StructField("weight", T.FloatType(), False),
    ]
)
_ROWS_PER_BATCH = 500_000
_ROWS_PER_PARTITION = 500_000
_PAIR_COUNTS = T.StructType(
    [
        T.StructField("i", T.IntegerType(), False),
        T.StructField("j", T.IntegerType(), False),
        T.StructField("count", T.DoubleType(), False),
    ]
)


def similarity_frame(spark: SparkSession, weights: pd.DataFrame) -> DataFrame:
    """The driver's weights as a Spark DataFrame in a few large partitions. From pandas, Spark
    makes one partition per Arrow batch of 10,000 rows: EASE's 5M weights became 500 tasks and
    500 files per write, and writing them took 17-32 s instead of 6 s."""
    partitions = min(spark.sparkContext.defaultParallelism, math.ceil(len(weights) / _ROWS_PER_PARTITION))
    return spark.createDataFrame(weights, SIMILARITY_SCHEMA).coalesce(max(1, partitions))


def _partial_gram(width: int):  # -> mapInPandas function
    """Per partition of users: the upper triangle of its own XᵀX as (i, j, count) rows."""

    def gram(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = sparse.csr_matrix((width, width), dtype=np.float64)
        for batch in batches:
            lengths = batch["items"].map(len).to_numpy()
            indices = np.concatenate([np.asarray(v, dtype=np.int64) for v in batch["items"]])
            values = np.concatenate([np.asarray(v, dtype=np.float64) for v in batch["weights"]])
            indptr = np.concatenate([[0], np.cumsum(lengths)])
            x = sparse.csr_matrix((values, indices, indptr), shape=(len(batch), width), dtype=np.float64)
            total = total + (x.T @ x)
        upper = sparse.triu(total).tocoo()
        # In slices: one Arrow batch of tens of millions of rows would not fit the JVM's heap.
        for start in range(0, upper.nnz, _ROWS_PER_BATCH):
            end = start + _ROWS_PER_BATCH
            yield pd.DataFrame(
                {
                    "i": upper.row[start:end].astype(np.int32),
                    "j": upper.col[start:end].astype(np.int32),
                    "count": upper.data[start:end],
                }
            )

    return gram


@dataclass
class ItemGram:
    """Co-occurrence counts of the modelled items: ids (position = index) and the dense XᵀX."""

    item_ids: np.ndarray
    gram: np.ndarray  # float32, symmetric

    @classmethod
    def compute(
        cls, spark: SparkSession, positives: DataFrame, max_items: int, min_item_users: int
    ) -> ItemGram:
        """``positives``: (user_id, item_id, weight) pairs with a positive signal, each pair once;
        X holds the weights (1.0 for a binary matrix)."""
        started = time.time()
        counts = (
            positives.groupBy("item_id")
            .agg(F.count(F.lit(1)).alias("users"))
            .where(F.col("users") >= min_item_users)
            .orderBy(F.desc("users"), "item_id")
            .limit(max_items)
            .toPandas()
        )
        item_ids = np.sort(counts["item_id"].to_numpy(dtype=object))
        width = len(item_ids)
        if width == 0:
            return cls(item_ids, np.zeros((0, 0), dtype=np.float32))
        index = spark.createDataFrame(
            pd.DataFrame({"item_id": item_ids, "i": np.arange(width, dtype=np.int32)}),
            "item_id string, i int",
        )
        per_user = (
            positives.join(F.broadcast(index), "item_id")
            .groupBy("user_id")
            .agg(F.collect_list("i").alias("items"), F.collect_list("weight").alias("weights"))
            .select("items", "weights")
        )
        pairs = (
            per_user.mapInPandas(_partial_gram(width), _PAIR_COUNTS)
            .groupBy("i", "j")
            .agg(F.sum("count").alias("count"))
            .toPandas()
        )
        gram = np.zeros((width, width), dtype=np.float32)
        gram[pairs["i"].to_numpy(), pairs["j"].to_numpy()] = pairs["count"].to_numpy(np.float32)
        gram = np.maximum(gram, gram.T)  # mirror the upper triangle
        log.info(
            "item-item: co-occurrences of %d items (%d non-zero pairs) in %.1fs",
            width,
            len(pairs),
            time.time() - started,
        )
        return cls(item_ids, gram)

    def ease_weights(self, l2: float) -> np.ndarray:
        """B = I - P diag(1/diag(P)) with P = (G + l2 I)⁻¹ and a zero diagonal (float32)."""
        width = len(self.item_ids)
        if width == 0:
            return np.zeros((0, 0), dtype=np.float32)
        regularised = self.gram + np.float32(l2) * np.eye(width, dtype=np.float32)
        factor, info = scipy.linalg.lapack.spotrf(regularised, lower=0, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"item Gram matrix + {l2} I is not positive definite (info {info})")
        inverse, info = scipy.linalg.lapack.spotri(factor, lower=0, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"cannot invert the item Gram matrix (info {info})")
        inverse = np.triu(inverse) + np.triu(inverse, 1).T
        weights = -inverse / np.diag(inverse)[None, :]
        np.fill_diagonal(weights, 0.0)
        return weights.astype(np.float32, copy=False)

    def similarity(self, l2: float, neighbours: int) -> pd.DataFrame:
        """Each item's ``neighbours`` largest EASE weights by absolute value (item_id,
        similar_item_id, weight as in :data:`SIMILARITY_SCHEMA`; zero weights are never kept)."""
        started = time.time()
        weights = self.ease_weights(l2)
        width = len(self.item_ids)
        keep = min(neighbours, max(width - 1, 0))
        if keep == 0:
            return pd.DataFrame({"item_id": [], "similar_item_id": [], "weight": np.zeros(0, np.float32)})
        magnitude = np.abs(weights)
        columns = np.argpartition(-magnitude, keep - 1, axis=1)[:, :keep]
        values = np.take_along_axis(weights, columns, axis=1)
        rows = np.repeat(np.arange(width), keep)
        frame = pd.DataFrame(
            {
                "item_id": self.item_ids[rows],
                "similar_item_id": self.item_ids[columns.ravel()],
                "weight": values.ravel().astype(np.float32),
            }
        )
        frame = frame[frame["weight"] != 0]
        log.info(
            "item-item: EASE weights of %d items (l2 %g, %d kept per item) in %.1fs",
            width,
            l2,
            keep,
            time.time() - started,
        )
        return frame.reset_index(drop=True)

"""The item-item family: EASE weights (Steck, "Embarrassingly Shallow Autoencoders", 2019).

EASE learns, for every pair of items, how much interacting with one speaks for the other, by
ridge regression of each item's column on all other columns of the user-item matrix X, with the
closed form B = I - P diag(1/diag(P)), P = (XᵀX + λI)⁻¹, diag(B) = 0. On sparse real logs it is
one of the strongest simple models, and it needs no fold-in: a user's fresh history times B is
their score. X is binary, or holds the preference ALS sees (``ease.signal``): on a ratings log
the preference version is several per cent better, on a purchase log about level.

Where the work happens: the user-item pairs are collected to the driver in chunks of whole users
(at most ``_PAIRS_PER_CHUNK`` pairs in memory at once), and each chunk's sparse XᵀX is added into
the dense matrix the driver inverts anyway. Pairs are the cheap thing to move: co-occurrences
are many times more entries than the pairs they come from (docs/benchmarks.md). Only the
``max_items`` most popular items with at least ``min_item_users`` users are modelled, so the
item x item matrix and its inverse (LAPACK, on the driver) stay within that bound. Each item
keeps its ``neighbours`` largest weights (by absolute value: negative weights rank too), which
is what is stored and served.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.linalg
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import sparse

from recspark.core.console import DETAIL

log = logging.getLogger(__name__)

SIMILARITY_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("similar_item_id", T.StringType(), False),
        T.StructField("weight", T.FloatType(), False),
    ]
)
_SIMILARITY_ARROW = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("similar_item_id", pa.string(), nullable=False),
        pa.field("weight", pa.float32(), nullable=False),
    ]
)
_ROWS_PER_PARTITION = 500_000
# From how many λ values one eigendecomposition of a Gram matrix costs less than a Cholesky fit
# per λ. Measured on the shop log's 2,111 items (one thread, CPU seconds; docs/benchmarks.md): a
# fit 0.18 s, the eigendecomposition 0.64 s, each λ of the path 0.14 s; so the path pays from
# 0.64 / (0.18 - 0.14) = 16 values on. Both costs grow as items³, so the ratio holds at any width.
PATH_MIN_L2S = 16
# Per chunk of users collected to the driver by the co-occurrence pass: at most about this many
# (user, item, weight) pairs in memory at once.
_PAIRS_PER_CHUNK = 5_000_000


def similarity_frame(spark: SparkSession, weights: pd.DataFrame) -> DataFrame:
    """The driver's weights as a Spark DataFrame in a few large partitions: one per
    ``_ROWS_PER_PARTITION`` rows, at most one per core, at least one.

    The rows travel as one broadcast (Arrow), each task slicing out its part: a DataFrame made
    from local data carries its rows inside its tasks, megabytes each for a large catalogue.
    The broadcast lives as long as the returned DataFrame is referenced."""
    partitions = max(
        1, min(spark.sparkContext.defaultParallelism, math.ceil(len(weights) / _ROWS_PER_PARTITION))
    )
    table = pa.Table.from_pandas(
        weights[["item_id", "similar_item_id", "weight"]], schema=_SIMILARITY_ARROW, preserve_index=False
    )
    shared = spark.sparkContext.broadcast(table)
    per_part = math.ceil(table.num_rows / partitions)

    def slices(parts: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in parts:
            for part in batch.column(0).to_pylist():
                yield from shared.value.slice(part * per_part, per_part).to_batches()

    return spark.range(partitions, numPartitions=partitions).mapInArrow(slices, SIMILARITY_SCHEMA)


def _add_co_occurrences(gram: np.ndarray, pairs: pd.DataFrame) -> None:
    """Add the upper triangle of XᵀX of ``pairs`` (user_id, i, weight; whole users) to ``gram``."""
    if pairs.empty:
        return
    users, _ = pd.factorize(pairs["user_id"])
    x = sparse.csr_matrix(
        (pairs["weight"].to_numpy(np.float64), (users, pairs["i"].to_numpy(np.int32))),
        shape=(int(users.max()) + 1, gram.shape[0]),
    )
    upper = sparse.triu(x.T @ x).tocoo()
    gram[upper.row, upper.col] += upper.data.astype(np.float32)


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
        pairs = int(counts["users"].sum())
        chunks = max(1, math.ceil(pairs / _PAIRS_PER_CHUNK))
        indexed = positives.join(F.broadcast(index), "item_id").select("user_id", "i", "weight")
        gram = np.zeros((width, width), dtype=np.float32)
        for chunk in range(chunks):
            users = F.pmod(F.xxhash64("user_id"), F.lit(chunks)) == chunk
            _add_co_occurrences(gram, indexed.where(users).toPandas())
            if chunks > 1:
                log.info("item-item: co-occurrences of user chunk %d of %d added", chunk + 1, chunks)
        gram += np.triu(gram, 1).T  # mirror the upper triangle
        log.info(
            "item-item: co-occurrences of %d items (%d user-item pairs in %d chunks) in %.1fs",
            width,
            pairs,
            chunks,
            time.time() - started,
        )
        return cls(item_ids, gram)

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, max_items: int, min_item_users: int) -> ItemGram:
        """:meth:`compute` of pairs already on the driver (user_id, item_id, weight; each pair
        once): the same items (the ``max_items`` with most users, ties by id, at least
        ``min_item_users``) and their co-occurrences in one product."""
        users = pairs.groupby("item_id").size()
        users = users[users >= min_item_users]
        ranked = users.reset_index(name="users").sort_values(["users", "item_id"], ascending=[False, True])
        item_ids = np.sort(ranked["item_id"].head(max_items).to_numpy(dtype=object))
        width = len(item_ids)
        gram = np.zeros((width, width), dtype=np.float32)
        if width:
            index = pd.Index(item_ids).get_indexer(pd.Index(pairs["item_id"]))
            kept = pairs[index >= 0]
            _add_co_occurrences(gram, kept[["user_id", "weight"]].assign(i=index[index >= 0]))
            gram += np.triu(gram, 1).T
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
        return _weights_from_inverse(np.triu(inverse) + np.triu(inverse, 1).T)

    def ease_path(self, l2s: Sequence[float]) -> Iterator[tuple[float, np.ndarray]]:
        """:meth:`ease_weights` for every λ of ``l2s``, in order, from one eigendecomposition
        G = QΛQᵀ: (G + λI)⁻¹ = S Sᵀ with S = Q diag((Λ + λ)^-½), one symmetric product per λ
        instead of a factorisation and an inverse. Equal to separate fits to float tolerance;
        one λ's weights are held at a time. It pays only for long grids (see
        :data:`PATH_MIN_L2S`): the decomposition costs several fits, and each λ still needs a
        product of the same order as a fit, because B is needed whole (each item keeps its
        strongest weights)."""
        width = len(self.item_ids)
        if width == 0:
            for l2 in l2s:
                yield l2, np.zeros((0, 0), dtype=np.float32)
            return
        started = time.time()
        eigenvalues, vectors = scipy.linalg.eigh(self.gram, driver="evd", check_finite=False)
        # A Gram matrix is positive semi-definite: rounding may leave tiny negative eigenvalues.
        eigenvalues = np.maximum(eigenvalues, 0.0)
        log.info("item-item: eigendecomposition of %d items in %.1fs", width, time.time() - started)
        for l2 in l2s:
            scaled = np.asfortranarray(
                vectors * (1.0 / np.sqrt(eigenvalues + np.float32(l2))).astype(np.float32)
            )
            upper = scipy.linalg.blas.ssyrk(1.0, scaled, trans=0, lower=0)
            yield l2, _weights_from_inverse(np.triu(upper) + np.triu(upper, 1).T)

    def similarity(self, l2: float, neighbours: int) -> pd.DataFrame:
        """Each item's ``neighbours`` largest EASE weights by absolute value (item_id,
        similar_item_id, weight as in :data:`SIMILARITY_SCHEMA`; zero weights are never kept)."""
        started = time.time()
        frame = self.strongest(self.ease_weights(l2), neighbours)
        log.info(
            "item-item: EASE weights of %d items (l2 %g, %d kept per item) in %.1fs",
            len(self.item_ids),
            l2,
            min(neighbours, max(len(self.item_ids) - 1, 0)),
            time.time() - started,
            extra=DETAIL,
        )
        return frame

    def similarity_path(self, l2s: Sequence[float], neighbours: int) -> Iterator[tuple[float, pd.DataFrame]]:
        """:meth:`similarity` for every λ of ``l2s``, in order: through one decomposition
        (:meth:`ease_path`) for a grid of at least :data:`PATH_MIN_L2S` values, else a fit per λ,
        whichever costs less."""
        if len(l2s) >= PATH_MIN_L2S:
            for l2, weights in self.ease_path(l2s):
                yield l2, self.strongest(weights, neighbours)
            return
        for l2 in l2s:
            yield l2, self.similarity(l2, neighbours)

    def strongest(self, weights: np.ndarray, neighbours: int) -> pd.DataFrame:
        """Each item's ``neighbours`` largest ``weights`` by absolute value, as rows (item_id,
        similar_item_id, weight), zero weights dropped."""
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
        return frame.reset_index(drop=True)


def _weights_from_inverse(inverse: np.ndarray) -> np.ndarray:
    """EASE's B from P = (G + λI)⁻¹: -P scaled by 1/diag(P) per column, diagonal zero (float32)."""
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32, copy=False)

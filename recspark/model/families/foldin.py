"""ALS fold-in: a user's vector from their interactions against fixed item factors.

This is the closed-form least-squares step implicit ALS itself runs for users (Hu, Koren and
Volinsky 2008, as implemented in Spark MLlib): with c = alpha * r for observed ratings r > 0,

    x_u = (YᵀY + Σ c_i y_i y_iᵀ + λ n_u I)⁻¹ Σ (1 + c_i) y_i

where n_u is the number of observed items (MLlib scales the regularisation by it). Given the
item factors of a trained model and unchanged data it reproduces the model's own user factors,
so users with new activity get fresh vectors between retrains without refitting anything.

A catalogue larger than ``items_per_block`` never comes to the driver whole: YᵀY is summed in
Spark (each partition adds its own, a rank x rank matrix), and each user's item vectors are
joined to their ratings, so a user row carries what its solve needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.model.scoring.factors import collect_within, factor_moments

USER_VECTOR_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("features", T.ArrayType(T.FloatType()), False),
        T.StructField("known_items", T.IntegerType(), False),
    ]
)


def fold_in_vector(
    gram: np.ndarray, item_vectors: np.ndarray, ratings: np.ndarray, alpha: float, reg_param: float
) -> np.ndarray:
    """One user's vector; ``gram`` is YᵀY over all items, rows of ``item_vectors`` the user's items."""
    positive = ratings > 0
    y = item_vectors[positive].astype(np.float64)
    c = alpha * ratings[positive].astype(np.float64)
    a = gram + (y.T * c) @ y + reg_param * len(y) * np.eye(gram.shape[0])
    b = ((1.0 + c)[:, None] * y).sum(axis=0)
    return np.linalg.solve(a, b)


def fold_in_users(
    spark: SparkSession,
    ratings: DataFrame,
    item_factors: DataFrame,
    alpha: float,
    reg_param: float,
    items_per_block: int | None = None,
) -> DataFrame:
    """User vectors for every user in ``ratings`` (user_id, item_id, rating).

    Items without factors (new since training) are ignored; users left with no known item get
    no vector (they are cold-start users for the caller to handle). Up to ``items_per_block``
    item vectors (None: all) are broadcast; beyond it, they are joined (see the module).
    """
    local = collect_within(item_factors, "item_id", items_per_block)
    if local is None:
        return _fold_in_by_join(spark, ratings, item_factors, alpha, reg_param)
    item_ids, item_matrix = local
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    matrix = item_matrix.astype(np.float64)
    gram = matrix.T @ matrix
    shared = spark.sparkContext.broadcast((position, matrix, gram))

    def solve(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        pos, y_all, yty = shared.value
        for batch in batches:
            out_ids, out_vectors, out_known = [], [], []
            for user_id, items, values in zip(
                batch["user_id"], batch["items"], batch["ratings"], strict=True
            ):
                idx = [(pos[i], r) for i, r in zip(items, values, strict=True) if i in pos and r > 0]
                if not idx:
                    continue
                cols = np.fromiter((p for p, _ in idx), dtype=np.int64, count=len(idx))
                vals = np.fromiter((r for _, r in idx), dtype=np.float64, count=len(idx))
                vector = fold_in_vector(yty, y_all[cols], vals, alpha, reg_param)
                out_ids.append(user_id)
                out_vectors.append(vector.astype(np.float32))
                out_known.append(len(idx))
            if out_ids:
                yield pd.DataFrame({"user_id": out_ids, "features": out_vectors, "known_items": out_known})

    grouped = ratings.groupBy("user_id").agg(
        F.collect_list("item_id").alias("items"), F.collect_list("rating").alias("ratings")
    )
    return grouped.mapInPandas(solve, USER_VECTOR_SCHEMA)


def factor_gram(item_factors: DataFrame) -> np.ndarray | None:
    """YᵀY over all of ``item_factors`` (float64), summed in Spark from each partition's own;
    None when there are no items."""
    moments = factor_moments(item_factors)
    return None if moments is None else moments.second * moments.count


def _fold_in_by_join(
    spark: SparkSession, ratings: DataFrame, item_factors: DataFrame, alpha: float, reg_param: float
) -> DataFrame:
    """:func:`fold_in_users` for a catalogue too large to broadcast: each user's positive
    ratings joined to their items' vectors, solved against YᵀY summed in Spark."""
    gram = factor_gram(item_factors)
    if gram is None:
        return spark.createDataFrame([], USER_VECTOR_SCHEMA)
    shared = spark.sparkContext.broadcast(gram)

    def solve(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yty = shared.value
        for batch in batches:
            vectors = [
                fold_in_vector(yty, np.stack(v), np.asarray(r, dtype=np.float64), alpha, reg_param).astype(
                    np.float32
                )
                for v, r in zip(batch["vectors"], batch["ratings"], strict=True)
            ]
            yield pd.DataFrame(
                {
                    "user_id": batch["user_id"],
                    "features": vectors,
                    "known_items": batch["vectors"].map(len).astype("int32"),
                }
            )

    known = ratings.where(F.col("rating") > 0).join(item_factors.select("item_id", "features"), "item_id")
    grouped = known.groupBy("user_id").agg(
        F.collect_list("features").alias("vectors"), F.collect_list("rating").alias("ratings")
    )
    return grouped.mapInPandas(solve, USER_VECTOR_SCHEMA)

"""Item factors on the driver, and their moments summed in Spark."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from scipy import sparse

from recspark.model.scoring.columns import vectors


def collect_factors(factors: DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``key`` ids (sorted, so ties break the same way every run) and their ``features`` as a
    float32 matrix, on the driver, collected as one Arrow table (no Python object per vector)."""
    return _factor_matrix(factors.select(key, "features").toArrow(), key)


def collect_within(factors: DataFrame, key: str, budget: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`collect_factors`, or None when there are more than ``budget`` rows (then at most
    ``budget + 1`` of them ever reach the driver); no budget: all of them."""
    if budget is None:
        return collect_factors(factors, key)
    table = factors.select(key, "features").limit(budget + 1).toArrow()
    return None if table.num_rows > budget else _factor_matrix(table, key)


def _factor_matrix(table: pa.Table, key: str) -> tuple[np.ndarray, np.ndarray]:
    if table.num_rows == 0:
        return np.empty(0, dtype=object), np.empty((0, 0), dtype=np.float32)
    ids = table.column(key).to_numpy()
    order = np.argsort(ids, kind="stable")
    return ids[order], vectors(table.column("features").combine_chunks())[order]


@dataclass(frozen=True)
class FactorMoments:
    """The eligible items' ALS factors summed up: how many, their mean vector and their second
    moment (YᵀY / count), float64. From these each user's ALS scores over all the items have a
    known mean (u·mean) and variance (uᵀ second u - mean²) without scoring all the items at once,
    which is what lets a blend score one item block at a time."""

    count: int
    mean: np.ndarray
    second: np.ndarray

    @classmethod
    def of(cls, factors: np.ndarray) -> FactorMoments:
        y = factors.astype(np.float64)
        return cls(len(y), y.mean(axis=0), y.T @ y / max(len(y), 1))

    def user_moments(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each user's mean and standard deviation of u·v over the items."""
        u = users.astype(np.float64)
        mean = u @ self.mean
        variance = np.einsum("ij,jk,ik->i", u, self.second, u) - mean**2
        return mean, np.sqrt(np.maximum(variance, 0.0))


def factor_moments(item_factors: DataFrame) -> FactorMoments | None:
    """:class:`FactorMoments` of ``item_factors`` (``features``), summed in Spark from each
    partition's own, so no process holds all the vectors; None when there are no items."""

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        count, total, gram = 0, None, None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            y = vectors(batch.column("features")).astype(np.float64)
            count += len(y)
            total = y.sum(axis=0) if total is None else total + y.sum(axis=0)
            gram = y.T @ y if gram is None else gram + y.T @ y
        if total is not None and gram is not None:
            yield pa.RecordBatch.from_pydict(
                {"count": [count], "total": [total.tolist()], "gram": [gram.ravel().tolist()]}
            )

    schema = "count long, total array<double>, gram array<double>"
    parts = item_factors.select("features").mapInArrow(partial, schema).collect()
    if not parts:
        return None
    count = sum(int(part["count"]) for part in parts)
    total = np.sum([np.asarray(part["total"]) for part in parts], axis=0)
    gram = np.sum([np.asarray(part["gram"]) for part in parts], axis=0).reshape(len(total), len(total))
    return FactorMoments(count, total / count, gram / count)


def row_moments(scores: sparse.csr_matrix | np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and standard deviation over ``count`` items, of which ``scores`` holds
    the non-zero ones (an item it leaves out scores 0)."""
    if sparse.issparse(scores):
        total = np.asarray(scores.sum(axis=1), dtype=np.float64).ravel()
        squares = np.asarray(scores.multiply(scores).sum(axis=1), dtype=np.float64).ravel()
    else:
        total = scores.sum(axis=1, dtype=np.float64)
        squares = np.einsum("ij,ij->i", scores, scores, dtype=np.float64)
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))

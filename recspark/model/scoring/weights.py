"""Item-item weights on the driver, in the form scoring needs, built once per model.

A model's weights are millions of (item, similar item, weight) rows. Scoring needs them as a
sparse (source items x eligible items) matrix, and the eligible items change between calls (a
refresh batch reads the catalogue afresh). The matrix is built from the rows once per model,
and each call picks its eligible columns from it with one sparse product, so a serving stream
pays the build once per champion, not per batch (docs/benchmarks.md, item-item top-N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy import sparse


@dataclass(frozen=True)
class ItemWeights:
    """``matrix[s, t]``: how much interacting with ``sources[s]`` speaks for ``targets[t]``.
    Both id arrays are sorted; zero weights are dropped (they speak for nothing)."""

    sources: np.ndarray
    targets: np.ndarray
    matrix: sparse.csr_matrix

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ItemWeights:
        """From rows of ``item_id``, ``similar_item_id``, ``weight``."""
        # Positions by hashing, not by binary search in object arrays of string ids, which was
        # about ten times slower at 5M weights (docs/benchmarks.md, training).
        rows, sources = pd.factorize(frame["item_id"].to_numpy(dtype=object), sort=True)
        columns, targets = pd.factorize(frame["similar_item_id"].to_numpy(dtype=object), sort=True)
        matrix = sparse.csr_matrix(
            (frame["weight"].to_numpy(np.float32), (rows, columns)),
            shape=(len(sources), len(targets)),
            dtype=np.float32,
        )
        matrix.eliminate_zeros()
        return cls(np.asarray(sources, dtype=object), np.asarray(targets, dtype=object), matrix)

    def towards(self, targets: np.ndarray, width: int) -> sparse.csr_matrix:
        """The weights towards ``targets`` (column j for ``targets[j]``; none for an id this
        model has no weights towards), as a (sources x ``width``) matrix: the columns past the
        targets are padding for the selection and hold nothing. One sparse product with a
        column-selection matrix, so the cost follows the weights, not a rebuild from rows."""
        position = pd.Index(self.targets).get_indexer(pd.Index(targets))
        known = np.flatnonzero(position >= 0)
        if len(known) == len(self.targets) == width and (position == np.arange(width)).all():
            return self.matrix
        selection = sparse.csr_matrix(
            (np.ones(len(known), dtype=np.float32), (position[known], known)),
            shape=(len(self.targets), width),
        )
        return (self.matrix @ selection).tocsr()


def as_item_weights(similarity: DataFrame | pd.DataFrame | ItemWeights) -> ItemWeights:
    """The weights as a matrix: as given when prepared, else built from their rows."""
    if isinstance(similarity, ItemWeights):
        return similarity
    if isinstance(similarity, pd.DataFrame):
        return ItemWeights.from_frame(similarity)
    return ItemWeights.from_frame(similarity.select("item_id", "similar_item_id", "weight").toPandas())


def weighted_targets(spark: SparkSession, items: DataFrame, weights: ItemWeights) -> np.ndarray:
    """The ids of ``items`` (``item_id``) some weight points to, sorted: without ALS only these
    can be candidates, so scoring them alone bounds the driver's ids and every task's score
    matrix by the modelled items (``ease.max_items``) instead of the catalogue. The catalogue is
    filtered in Spark, never collected."""
    pointed_to = spark.createDataFrame(pd.DataFrame({"item_id": weights.targets}), "item_id string")
    eligible = items.select("item_id").join(F.broadcast(pointed_to), "item_id", "left_semi")
    return np.sort(eligible.toPandas()["item_id"].to_numpy(dtype=object))

"""ALS top-N: users in blocks against broadcast item vectors, with NumPy/BLAS.

One implementation serves the model (ALS factors), the popularity baseline (a one-dimensional
"factor" holding each item's popularity) and evaluation, so what is measured is what is served.
Excluded items (already purchased, unavailable) are masked before selection, so every user keeps
N rows as long as N eligible items exist. Scores are written into one buffer per task, reused
for every product: a fresh array per product costs more in page faults than the arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession

from recspark.model.scoring.blocks import item_blocks, scored_by_item_block, with_history_vectors
from recspark.model.scoring.columns import (
    EXPLAINED_SCHEMA,
    HISTORY_IN_ROWS,
    TOPN_SCHEMA,
    because_from_rows,
    closest_history,
    excluded_cells,
    ranked_columns,
    scoring_columns,
    unit_rows,
    vectors,
)
from recspark.model.scoring.factors import collect_within
from recspark.model.scoring.selection import (
    ROWS_PER_PRODUCT,
    selection_width,
    single_threaded_blas,
    top_n_scores,
)


def recommend_top_n(
    spark: SparkSession,
    users: DataFrame,
    items: DataFrame,
    n: int,
    users_per_block: int = 2048,
    explain: bool = False,
    items_per_block: int | None = None,
) -> DataFrame:
    """Top-n items per user.

    ``users``: ``user_id``, ``features`` (array<float>), ``exclude`` (array<string> of item ids,
    may be null). ``items``: ``item_id``, ``features`` — only the eligible items. Returns
    ``user_id, rank, item_id, score``.

    With ``explain``, ``users`` also has ``history`` (array<string>, the user's interacted items)
    and ``history_weight`` (array<double>, the preference ALS saw for each), and the result gets
    ``because_item_id``: the history item with the highest weight x cosine similarity to the
    recommended item (null when the user has no history item among ``items``).

    ``items_per_block`` bounds how many item vectors any one process holds (the driver that
    broadcasts them, each Python worker that scores against them, and its score buffer). A
    catalogue within it is scored in one pass; a larger one block by block, each block's top-n
    per user kept and merged (:func:`top_n_by_item_block`). None: no bound.
    """
    local = collect_within(items, "item_id", items_per_block)
    if local is None:
        assert items_per_block is not None
        return top_n_by_item_block(spark, users, items, n, users_per_block, explain, items_per_block)
    scored, _ = score_against(spark, scoring_columns(users, explain), local, n, users_per_block, explain)
    return scored


def score_against(
    spark: SparkSession,
    users: DataFrame,
    local: tuple[np.ndarray, np.ndarray],
    n: int,
    users_per_block: int,
    explain: bool,
) -> tuple[DataFrame, Broadcast | None]:
    """``users`` (as :func:`scoring_columns` left them) scored against the items ``local``
    holds (ids and vectors, broadcast); returns the lists and the broadcast, for a caller that
    wants to free it once the lists are computed."""
    item_ids, real_matrix = local
    schema = EXPLAINED_SCHEMA if explain else TOPN_SCHEMA
    if len(item_ids) == 0:
        return spark.createDataFrame([], schema), None
    real = len(item_ids)
    padded = selection_width(real, n)
    item_matrix = np.zeros((padded, real_matrix.shape[1]), dtype=np.float32)
    item_matrix[:real] = real_matrix
    position = {item_id: i for i, item_id in enumerate(item_ids)}
    shared = spark.sparkContext.broadcast((item_ids, item_matrix, position))
    history_in_rows = HISTORY_IN_ROWS[0] in users.columns

    def score_block(
        user_matrix: np.ndarray,
        excluded: tuple[np.ndarray, np.ndarray],
        item_columns: np.ndarray,
        buffer: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = buffer[: len(user_matrix)]
        np.matmul(user_matrix, item_columns, out=scores)
        scores[:, real:] = -np.inf
        scores[excluded] = -np.inf
        return top_n_scores(scores, n)

    def explain_block(
        history: dict[str, list], cols: np.ndarray, keep: np.ndarray, unit: np.ndarray
    ) -> np.ndarray:
        if history_in_rows:
            return because_from_rows(history, cols, keep, unit)
        ids, _, pos = shared.value
        because = np.full(cols.shape, None, dtype=object)
        for row, (items, weights) in enumerate(
            zip(history["history"], history["history_weight"], strict=True)
        ):
            if items is None or not keep[row].any():
                continue
            known = [(pos[i], w) for i, w in zip(items, weights, strict=True) if i in pos]
            if not known:
                continue
            hist = np.fromiter((p for p, _ in known), dtype=np.int64, count=len(known))
            wts = np.fromiter((w for _, w in known), dtype=np.float32, count=len(known))
            picked = cols[row][keep[row]]
            because[row, : len(picked)] = ids[hist[closest_history(unit[picked], unit[hist], wts)]]
        return because

    explain_columns = [c for c in users.columns if c not in ("user_id", "features", "exclude")]
    step = min(ROWS_PER_PRODUCT, users_per_block)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Arrow in and out: the vectors arrive as one flat array, and the ids leave by Arrow
        ``take``, with no Python object per row or per id (what pandas conversion cost)."""
        ids, matrix, _ = shared.value
        item_columns = np.ascontiguousarray(matrix.T)
        buffer = np.empty((ROWS_PER_PRODUCT, len(matrix)), dtype=np.float32)
        unit = unit_rows(matrix) if explain else None
        id_array: pa.Array | None = None
        with single_threaded_blas():
            for batch in batches:
                if id_array is None:
                    id_array = pa.array(ids, type=batch.column("user_id").type)
                excluded_rows, excluded_cols = excluded_cells(batch.column("exclude"), id_array)
                for start in range(0, batch.num_rows, step):
                    part = batch.slice(start, step)
                    user_ids = part.column("user_id")
                    first, end = np.searchsorted(excluded_rows, [start, start + part.num_rows])
                    excluded = (excluded_rows[first:end] - start, excluded_cols[first:end])
                    cols, best = score_block(vectors(part.column("features")), excluded, item_columns, buffer)
                    columns, keep = ranked_columns(user_ids, id_array, cols, best)
                    if unit is not None:  # explain
                        history = {c: part.column(c).to_pylist() for c in explain_columns}
                        because = explain_block(history, cols, keep, unit)[keep]
                        columns.append(pa.array(because, type=user_ids.type))
                    yield pa.RecordBatch.from_arrays(columns, names=schema.fieldNames())

    return users.mapInArrow(score_batches, schema), shared


def top_n_by_item_block(
    spark: SparkSession,
    users: DataFrame,
    items: DataFrame,
    n: int,
    users_per_block: int,
    explain: bool,
    items_per_block: int,
) -> DataFrame:
    """Top-n per user over a catalogue larger than ``items_per_block``: every user is scored
    against one item block at a time (only that block on the driver and in each Python worker),
    keeps that block's top-n, and the blocks' lists are merged per user. A true top-n item is in
    its own block's top-n, so the merge equals scoring the whole catalogue at once."""
    keyed, blocks = item_blocks(items, items_per_block)
    scored_users = with_history_vectors(users, keyed) if explain else users
    scored_users = scoring_columns(scored_users, explain).localCheckpoint(eager=True)
    return scored_by_item_block(
        keyed,
        blocks,
        lambda local: score_against(spark, scored_users, local, n, users_per_block, explain),
        n,
        explain,
    )

"""Blocked top-N scoring: users in blocks against broadcast item vectors, with NumPy/BLAS.

One implementation serves the model (ALS factors), the popularity baseline (a one-dimensional
"factor" holding each item's popularity) and evaluation, so what is measured is what is served.
Excluded items (already purchased, unavailable) are masked before selection, so every user keeps
N rows as long as N eligible items exist.

Selection is two-stage: a full partial sort of every user's 50k scores costs several times the
matrix product itself. Instead the columns of each user's scores are dealt into ``CHUNK``-sized
chunks, the chunk maxima are taken, and only the ``k`` chunks with the largest maxima are
searched: each of the true top-k items lies in one of them (a chunk holding a top-k item has a
maximum at least that item's score, and at most k-1 other chunks can beat it). Chunks are
strided (chunk c holds columns c, c + C, c + 2C, ... for C chunks), so their maxima are an
element-wise maximum over contiguous rows of memory, which NumPy vectorises, rather than many
short reductions. Scores are written into one buffer per task, reused for every product: a fresh
100 MB array per product costs more in page faults than the product's arithmetic.

Item blocks: the item vectors are broadcast whole only up to a budget (``serve.max_items_per_block``).
A larger catalogue is scored one item block at a time, and each user's per-block top-n are merged,
so neither the driver nor any Python worker (nor its score buffer) grows with the catalogue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window
from scipy import sparse
from threadpoolctl import threadpool_limits

from recspark.model.item_weights import ItemWeights

TOPN_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
    ]
)
EXPLAINED_SCHEMA = T.StructType([*TOPN_SCHEMA.fields, T.StructField("because_item_id", T.StringType(), True)])
# With item blocks, each user's history items the block may not hold travel with the user row.
_HISTORY_IN_ROWS = ("known_history", "known_history_weight", "known_history_vectors")

log = logging.getLogger(__name__)

# Columns per chunk in the two-stage selection; rows scored per matrix product. The selection
# reads the scores the product just wrote, so a smaller block reads more of them from cache:
# 256 rows beat 512 at every shape measured, one thread, product plus selection (20k items rank
# 32: 1.33 s against 1.77 s per 50k users; 50k rank 64: 2.21 against 2.39 s; 400k rank 64:
# 3.86 against 5.34 s; docs/benchmarks.md), and the score buffer is half the size.
CHUNK = 64
ROWS_PER_PRODUCT = 256


def _direct_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def _chunked_top_k(scores: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Columns of each row's k best scores (unordered); ``scores.shape[1]`` is a multiple of ``chunk``.

    Chunk c holds columns c + j * chunks for j < ``chunk`` (strided, see the module docstring).
    """
    rows, cols = scores.shape
    chunks = cols // chunk
    best_chunks = _direct_top_k(scores.reshape(rows, chunk, chunks).max(axis=1), k)
    candidates = (best_chunks[:, :, None] + chunks * np.arange(chunk)[None, None, :]).reshape(rows, k * chunk)
    # A flat gather: take_along_axis spent a third more on the same 640 cells per row.
    flat = np.ravel(scores)[candidates + (cols * np.arange(rows))[:, None]]
    within = _direct_top_k(flat, k)
    return np.take_along_axis(candidates, within, axis=1)


def top_n_scores(scores: np.ndarray, n: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and scores of each row's n best finite scores, best first (-inf = excluded).

    Rows with fewer than n finite scores have their missing slots at -inf; callers drop them.
    The two-stage path is used when the row is long enough for it to pay (and its width is a
    multiple of ``chunk``; ``recommend_top_n`` pads its item matrix so that it is).
    """
    k = min(n, scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), dtype=np.int64), np.empty((scores.shape[0], 0))
    if scores.shape[1] % chunk == 0 and scores.shape[1] >= 4 * k * chunk:
        part = _chunked_top_k(scores, k, chunk)
    else:
        part = _direct_top_k(scores, k)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def selection_width(items: int, n: int) -> int:
    """Columns of the score matrix for ``items`` items: padded to a multiple of ``CHUNK`` where
    the two-stage selection pays (the padding scores -inf), else the items alone. A width the
    chunks do not divide falls back to a full partial sort: 13 ms against 3.8 ms per 256 users
    at 10k items (docs/benchmarks.md)."""
    return -(-items // CHUNK) * CHUNK if items >= 4 * n * CHUNK else items


def single_threaded_blas() -> AbstractContextManager[object]:
    """Spark runs one task per core: a multithreaded BLAS in every task only oversubscribes them."""
    return threadpool_limits(limits=1, user_api="blas")


def _because(picked_unit: np.ndarray, history_unit: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each picked item (unit vectors), the position of the history item (unit vectors,
    with their weights) with the highest weight x cosine similarity to it."""
    similarity = picked_unit @ history_unit.T  # picked x history
    return np.argmax(similarity * weights[None, :], axis=1)


def collect_factors(factors: DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``key`` ids (sorted, so ties break the same way every run) and their ``features`` as a
    float32 matrix, on the driver. As one Arrow table: Row objects cost seconds for 50k
    vectors, and pandas one NumPy array per vector (0.22 against 0.14 s for 20k)."""
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
    return ids[order], _vectors(table.column("features").combine_chunks())[order]


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
    per user kept and merged (:func:`_top_n_by_item_block`). None: no bound.
    """
    local = collect_within(items, "item_id", items_per_block)
    if local is None:
        assert items_per_block is not None
        return _top_n_by_item_block(spark, users, items, n, users_per_block, explain, items_per_block)
    scored, _ = _score_against(spark, _scoring_columns(users, explain), local, n, users_per_block, explain)
    return scored


def _scoring_columns(users: DataFrame, explain: bool) -> DataFrame:
    columns = ["user_id", "features", "exclude"]
    if explain:
        columns += [c for c in _HISTORY_IN_ROWS if c in users.columns] or ["history", "history_weight"]
    return _empty_for_null(_with_exclusions(users), columns[2:]).select(*columns)


def _with_exclusions(users: DataFrame) -> DataFrame:
    if "exclude" in users.columns:
        return users
    return users.withColumn("exclude", F.array().cast("array<string>"))


def _empty_for_null(frame: DataFrame, arrays: list[str]) -> DataFrame:
    """``frame`` with null values of its array columns ``arrays`` as empty arrays, which mean
    the same to the scorers. Spark's Arrow writer spends about 4.5 µs on each null array and
    nothing on an empty one: a null ``exclude`` for 100k users cost 0.45 s of a 3.1 s top-N
    (docs/benchmarks.md)."""
    types = {field.name: field.dataType for field in frame.schema.fields}
    return frame.withColumns({c: F.coalesce(F.col(c), F.array().cast(types[c])) for c in arrays})


def _score_against(
    spark: SparkSession,
    users: DataFrame,
    local: tuple[np.ndarray, np.ndarray],
    n: int,
    users_per_block: int,
    explain: bool,
) -> tuple[DataFrame, Broadcast | None]:
    """``users`` (as :func:`_scoring_columns` left them) scored against the items ``local``
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
    history_in_rows = _HISTORY_IN_ROWS[0] in users.columns

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
            return _because_from_rows(history, cols, keep, unit)
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
            because[row, : len(picked)] = ids[hist[_because(unit[picked], unit[hist], wts)]]
        return because

    explain_columns = [c for c in users.columns if c not in ("user_id", "features", "exclude")]
    step = min(ROWS_PER_PRODUCT, users_per_block)

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Arrow in and out: the vectors arrive as one flat array, and the ids leave by Arrow
        ``take``, with no Python object per row or per id (what pandas conversion cost)."""
        ids, matrix, _ = shared.value
        item_columns = np.ascontiguousarray(matrix.T)
        buffer = np.empty((ROWS_PER_PRODUCT, len(matrix)), dtype=np.float32)
        unit = _unit_rows(matrix) if explain else None
        id_array: pa.Array | None = None
        with single_threaded_blas():
            for batch in batches:
                if id_array is None:
                    id_array = pa.array(ids, type=batch.column("user_id").type)
                excluded_rows, excluded_cols = _excluded_cells(batch.column("exclude"), id_array)
                for start in range(0, batch.num_rows, step):
                    part = batch.slice(start, step)
                    user_ids = part.column("user_id")
                    first, end = np.searchsorted(excluded_rows, [start, start + part.num_rows])
                    excluded = (excluded_rows[first:end] - start, excluded_cols[first:end])
                    cols, best = score_block(
                        _vectors(part.column("features")), excluded, item_columns, buffer
                    )
                    columns, keep = _ranked_columns(user_ids, id_array, cols, best)
                    if explain:
                        history = {c: part.column(c).to_pylist() for c in explain_columns}
                        because = explain_block(history, cols, keep, unit)[keep]
                        columns.append(pa.array(because, type=user_ids.type))
                    yield pa.RecordBatch.from_arrays(columns, names=schema.fieldNames())

    return users.mapInArrow(score_batches, schema), shared


def _vectors(column: pa.Array) -> np.ndarray:
    """A list<float> column as a (rows, rank) float32 matrix: one flat copy when every row has
    the same length (factors do), not one NumPy array per row."""
    rows = len(column)
    if rows and column.null_count == 0:
        lengths = np.diff(column.offsets.to_numpy())
        if (lengths == lengths[0]).all():
            flat = column.flatten().to_numpy(zero_copy_only=False)
            return flat.astype(np.float32, copy=False).reshape(rows, int(lengths[0]))
    return np.array(column.to_pylist(), dtype=np.float32)


def _list_cells(lists: pa.ListArray, ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row (ascending) and position in ``ids`` of every element of ``lists`` that ``ids`` holds,
    and which of the flattened elements those are: one hashed lookup for a whole Arrow batch, no
    Python object per id. A Python list and a dict lookup per id made 100k users with 20
    exclusions each 0.7-1.2 s slower (docs/benchmarks.md)."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    positions = pc.index_in(lists.flatten(), value_set=ids.cast(lists.type.value_type))
    known = pc.is_valid(positions).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(lists)), lengths)[known]
    return rows, pc.drop_null(positions).to_numpy().astype(np.int64), known


def _excluded_cells(excluded: pa.ListArray, item_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Row (ascending) and item column of every excluded item the matrix holds, for a whole batch."""
    rows, columns, _ = _list_cells(excluded, item_ids)
    return rows, columns


def _history_cells(
    history: pa.ListArray, weights: pa.ListArray | None, sources: pa.Array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, source column and weight of each user's history items that ``sources`` holds, for a
    whole Arrow batch, ordered by row then column (as a CSR matrix stores them). A history item
    weighs its ``weights`` entry, or 1 where the user's weights are null; an item listed twice
    counts once, with its last weight."""
    rows, columns, known = _list_cells(history, sources)
    values = np.ones(len(known), dtype=np.float32)
    if weights is not None and weights.null_count < len(weights):
        has_weights = weights.is_valid().to_numpy(zero_copy_only=False)
        lengths = pc.fill_null(pc.list_value_length(history), 0).to_numpy()
        if (pc.fill_null(pc.list_value_length(weights), 0).to_numpy() != lengths)[has_weights].any():
            raise ValueError("history_weight must hold one weight per history item")
        flat = weights.flatten().to_numpy(zero_copy_only=False)
        values[np.repeat(has_weights, lengths)] = flat
    values = values[known]
    key = rows * len(sources) + columns
    _, last_from_end = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - last_from_end  # sorted by key: by row, then column
    return rows[last], columns[last], values[last]


def _ranked_columns(
    user_ids: pa.Array, item_ids: pa.Array, cols: np.ndarray, best: np.ndarray
) -> tuple[list[pa.Array], np.ndarray]:
    """A block's top-N as Arrow columns (user, rank, item, score), one row per finite score, and
    the mask that picked them, so explanations can be cut the same way. Ids leave by Arrow
    ``take``, with no Python object per row."""
    keep = np.isfinite(best)
    rows, ranks = np.nonzero(keep)
    columns = [
        user_ids.take(pa.array(rows)),
        pa.array(ranks.astype(np.int32) + 1),
        item_ids.take(pa.array(cols[keep])),
        pa.array(best[keep].astype(np.float64)),
    ]
    return columns, keep


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _because_from_rows(
    batch: dict[str, list], cols: np.ndarray, keep: np.ndarray, unit: np.ndarray
) -> np.ndarray:
    """:func:`_because` with the history's vectors taken from each user's row (item blocks: the
    block scoring a user may not hold the history items that explain its picks)."""
    because = np.full(cols.shape, None, dtype=object)
    rows = zip(*(batch[c] for c in _HISTORY_IN_ROWS), strict=True)
    for row, (history, weights, vectors) in enumerate(rows):
        if history is None or len(history) == 0 or not keep[row].any():
            continue
        history_unit = _unit_rows(np.stack(vectors).astype(np.float32, copy=False))
        picked = cols[row][keep[row]]
        best = _because(unit[picked], history_unit, np.asarray(weights, dtype=np.float32))
        because[row, : len(picked)] = np.asarray(history, dtype=object)[best]
    return because


def item_blocks(items: DataFrame, budget: int) -> tuple[DataFrame, int]:
    """``items`` with an ``item_block`` in [0, blocks), no block holding more than ``budget``
    items: blocks by a hash of the item id, as few as fit (the largest block is counted, and
    the count raised until it fits). Returns the keyed items (checkpointed) and the count."""
    items = items.select("item_id", "features").localCheckpoint(eager=True)
    blocks = max(1, math.ceil(items.count() / budget))
    while True:
        keyed = items.withColumn("item_block", F.pmod(F.xxhash64("item_id"), F.lit(blocks)).cast("int"))
        largest = keyed.groupBy("item_block").count().agg(F.max("count")).first()[0] or 0
        if largest <= budget:
            return keyed, blocks
        blocks += max(1, blocks // 4)


def _with_history_vectors(users: DataFrame, items: DataFrame) -> DataFrame:
    """``users`` plus their history items found among ``items``, in history order, with each
    one's weight and vector (:data:`_HISTORY_IN_ROWS`): what explains a pick in any block."""
    exploded = users.select(
        "user_id", F.posexplode("history").alias("position", "item_id"), "history_weight"
    ).select(
        "user_id",
        "position",
        "item_id",
        F.element_at("history_weight", F.col("position") + 1).alias("weight"),
    )
    known = (
        exploded.join(items.select("item_id", "features"), "item_id")
        .groupBy("user_id")
        .agg(
            F.array_sort(F.collect_list(F.struct("position", "item_id", "weight", "features"))).alias(
                "_known"
            )
        )
    )
    history, weight, vectors = _HISTORY_IN_ROWS
    return users.join(known, "user_id", "left").select(
        *users.columns,
        F.col("_known.item_id").alias(history),
        F.col("_known.weight").alias(weight),
        F.col("_known.features").alias(vectors),
    )


def _top_n_by_item_block(
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
    its own block's top-n, so the merge equals scoring the whole catalogue at once.

    Seven parameters: :func:`recommend_top_n`'s own."""
    keyed, blocks = item_blocks(items, items_per_block)
    scored_users = _with_history_vectors(users, keyed) if explain else users
    scored_users = _scoring_columns(scored_users, explain).localCheckpoint(eager=True)
    return _scored_by_item_block(
        keyed,
        blocks,
        lambda local: _score_against(spark, scored_users, local, n, users_per_block, explain),
        n,
        explain,
    )


def _scored_by_item_block(
    keyed: DataFrame,
    blocks: int,
    score: Callable[[tuple[np.ndarray, np.ndarray]], tuple[DataFrame, Broadcast | None]],
    n: int,
    explain: bool,
) -> DataFrame:
    """Each item block of ``keyed`` (``item_block``) collected in turn and scored by ``score``
    (its ids and factors -> its lists and broadcast), then each user's n best of the blocks'
    lists. A block's lists are computed (checkpointed) and its broadcast freed before the next
    block is collected, so the driver never holds two blocks; the merge itself stays lazy. A
    true top-n item is in its own block's top-n, so the merge equals scoring all at once."""
    partials = []
    for block in range(blocks):
        started = time.time()
        local = collect_factors(keyed.where(F.col("item_block") == block), "item_id")
        lists, shared = score(local)
        partials.append(lists.localCheckpoint(eager=True))
        if shared is not None:
            shared.destroy()
        log.info(
            "top-N: item block %d/%d (%d items) scored in %.1fs",
            block + 1,
            blocks,
            len(local[0]),
            time.time() - started,
        )
    candidates = reduce(DataFrame.unionByName, partials)
    best_first = Window.partitionBy("user_id").orderBy(F.desc("score"), "item_id")
    schema = EXPLAINED_SCHEMA if explain else TOPN_SCHEMA
    return (
        candidates.withColumn("rank", F.row_number().over(best_first))
        .where(F.col("rank") <= n)
        .select(*schema.fieldNames())
    )


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
            y = _vectors(batch.column("features")).astype(np.float64)
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


def blend_into(
    item_item: np.ndarray,
    als: np.ndarray,
    als_weight: float,
    als_moments: tuple[np.ndarray, np.ndarray],
    item_moments: tuple[np.ndarray, np.ndarray],
) -> None:
    """``item_item`` becomes ``als_weight`` x z(``als``) + (1 - ``als_weight``) x z(``item_item``),
    with z each user's z-scores over all eligible items (``*_moments``: each row's mean and
    standard deviation over them; a row without spread counts zero), so two models' scores can
    be mixed, also when ``item_item`` and ``als`` hold one item block. Done as two scaled
    matrices and a shift per row, in place: z-scores as separate arrays cost three full-size
    temporaries per block. ``als`` is overwritten."""

    def scale_and_shift(
        moments: tuple[np.ndarray, np.ndarray], weight: float
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, spread = moments
        scale = np.divide(weight, spread, out=np.zeros_like(spread), where=spread > 0)
        return scale[:, None].astype(np.float32), (scale * mean)[:, None].astype(np.float32)

    als_scale, als_shift = scale_and_shift(als_moments, als_weight)
    item_scale, item_shift = scale_and_shift(item_moments, 1.0 - als_weight)
    item_item *= item_scale
    als *= als_scale
    item_item += als
    item_item -= als_shift + item_shift


def scatter_scores(product: sparse.csr_matrix, scores: np.ndarray) -> None:
    """``scores`` holds the sparse ``product`` where it has entries and -inf elsewhere: one
    scatter into a flat view (a dense copy, then a mask of its zeros, took twice as long)."""
    scores.fill(-np.inf)
    rows = np.repeat(np.arange(product.shape[0]) * scores.shape[1], np.diff(product.indptr))
    scores.ravel()[rows + product.indices] = product.data


def _item_weights(similarity: DataFrame | pd.DataFrame | ItemWeights) -> ItemWeights:
    """The weights as a matrix: as given when prepared, else built from their rows."""
    if isinstance(similarity, ItemWeights):
        return similarity
    if isinstance(similarity, pd.DataFrame):
        return ItemWeights.from_frame(similarity)
    return ItemWeights.from_frame(similarity.select("item_id", "similar_item_id", "weight").toPandas())


def weighted_targets(spark: SparkSession, items: DataFrame, weights: ItemWeights) -> np.ndarray:
    """The ids of ``items`` (``item_id``) some weight points to, sorted: without ALS only these
    can be candidates, so scoring them alone bounds the driver's ids and every task's score
    matrix by the modelled items (``ease.max_items``) instead of the catalogue (5M items would
    be a 5 GB score buffer per task). The catalogue is filtered in Spark, not collected."""
    pointed_to = spark.createDataFrame(pd.DataFrame({"item_id": weights.targets}), "item_id string")
    eligible = items.select("item_id").join(F.broadcast(pointed_to), "item_id", "left_semi")
    return np.sort(eligible.toPandas()["item_id"].to_numpy(dtype=object))


@dataclass(frozen=True)
class ItemItemOptions:
    """How :func:`recommend_item_item` scores: list length, users per output block, whether to
    explain, whether history items carry their weights, and the blend's ALS weight (0: none)."""

    n: int
    users_per_block: int = 2048
    explain: bool = False
    weighted: bool = False
    als_weight: float = 0.0


def recommend_item_item(
    spark: SparkSession,
    users: DataFrame,
    similarity: DataFrame | pd.DataFrame | ItemWeights,
    items: DataFrame,
    n: int,
    *,
    users_per_block: int = 2048,
    explain: bool = False,
    als_weight: float = 0.0,
    weighted: bool = False,
    items_per_block: int | None = None,
) -> DataFrame:
    """Top-n items per user from their history times item-item weights, optionally blended with ALS.

    ``users``: ``user_id``, ``history`` (array<string>: the items the user interacted with
    positively), ``exclude`` (array<string> or null) and, for a blend, ``features``; with
    ``weighted``, also ``history_weight`` (array<double>: what each history item counts,
    as the weights were learned with), else every history item counts 1.
    ``similarity``: ``item_id``, ``similar_item_id``, ``weight`` (how much interacting with
    ``item_id`` speaks for ``similar_item_id``), or those weights prepared once as
    :class:`ItemWeights` by a caller that scores with them again. ``items``: the eligible items,
    ``item_id`` and, for a blend, their ALS ``features``. Returns ``user_id, rank, item_id,
    score`` (plus ``because_item_id``: the history item with the largest weight towards it, with
    ``explain``).

    Without ALS (``als_weight`` 0) only items some history item has a weight towards are
    candidates, so a user with a thin history gets a short list (the caller fills it), and only
    those are scored. A blend mixes the two models' per-user z-scores over every eligible item,
    ``als_weight`` x ALS + (1 - ``als_weight``) x item-item. ``items_per_block`` bounds a blend's
    item vectors as :func:`recommend_top_n` bounds ALS's: a larger catalogue is scored one item
    block at a time, with each user's z-score statistics over all items computed first.

    Ten parameters: the session, the three inputs and ``n``; the other five are keyword-only
    options with defaults, which each family's caller sets by name.
    """
    options = ItemItemOptions(n, users_per_block, explain, weighted, als_weight)
    prepared = _item_weights(similarity)
    scoring = _item_item_columns(users, options)
    if als_weight <= 0:
        lists, _ = _score_item_item(
            spark, scoring, prepared, (weighted_targets(spark, items, prepared), None), options, None
        )
        return lists
    local = collect_within(items, "item_id", items_per_block)
    if local is None:
        assert items_per_block is not None
        return _blend_by_item_block(spark, scoring, prepared, items, options, items_per_block)
    lists, _ = _score_item_item(spark, scoring, prepared, local, options, FactorMoments.of(local[1]))
    return lists


def _item_item_columns(users: DataFrame, options: ItemItemOptions) -> DataFrame:
    columns = ["user_id", "history", "exclude"] + (["history_weight"] if options.weighted else [])
    columns += ["features"] if options.als_weight > 0 else []
    return _empty_for_null(_with_exclusions(users), ["exclude"]).select(*columns)


def _blend_by_item_block(
    spark: SparkSession,
    users: DataFrame,
    prepared: ItemWeights,
    items: DataFrame,
    options: ItemItemOptions,
    items_per_block: int,
) -> DataFrame:
    """A blend over a catalogue larger than ``items_per_block``, as :func:`_top_n_by_item_block`
    scores ALS. A z-score needs the user's mean and spread over every item, so those come
    first: the ALS half's from the items' factor moments (summed in Spark), the item-item half's
    from each user's scores over the weighted items alone (``ease.max_items`` bounds them; every
    other item scores 0), kept in the user rows."""
    keyed, blocks = item_blocks(items, items_per_block)
    moments = factor_moments(keyed)
    assert moments is not None  # item_blocks found items
    with_moments, shared = _with_item_item_moments(
        spark, users, prepared, weighted_targets(spark, keyed, prepared), moments.count, options.weighted
    )
    scored_users = with_moments.localCheckpoint(eager=True)
    shared.destroy()
    return _scored_by_item_block(
        keyed,
        blocks,
        lambda local: _score_item_item(spark, scored_users, prepared, local, options, moments),
        options.n,
        options.explain,
    )


def _history_slices(
    batch: pa.RecordBatch, weighted: bool, source_array: pa.Array, sources: int, step: int
) -> Iterator[tuple[int, pa.RecordBatch, sparse.csr_matrix]]:
    """Each slice of at most ``step`` users of ``batch``: its start, its rows and their
    histories as a sparse (users x ``sources``) matrix, looked up once for the whole batch."""
    history_weight = batch.column("history_weight") if weighted else None
    rows, cols, values = _history_cells(batch.column("history"), history_weight, source_array)
    for start in range(0, batch.num_rows, step):
        part = batch.slice(start, step)
        first, end = np.searchsorted(rows, [start, start + part.num_rows])
        indptr = np.searchsorted(rows[first:end] - start, np.arange(part.num_rows + 1))
        history = sparse.csr_matrix(
            (values[first:end], cols[first:end], indptr), shape=(part.num_rows, sources)
        )
        yield start, part, history


def _with_item_item_moments(
    spark: SparkSession,
    users: DataFrame,
    prepared: ItemWeights,
    targets: np.ndarray,
    count: int,
    weighted: bool,
) -> tuple[DataFrame, Broadcast]:
    """``users`` with ``item_mean`` and ``item_spread``: the mean and standard deviation of each
    user's item-item scores over ``count`` items, of which ``targets`` are all that can score
    other than 0. Returns the broadcast too, to free once the rows are computed."""
    shared = spark.sparkContext.broadcast((prepared.sources, prepared.towards(targets, len(targets))))

    def with_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sources, matrix = shared.value
        source_array: pa.Array | None = None
        for batch in batches:
            if source_array is None:
                source_array = pa.array(sources, type=batch.column("user_id").type)
            means, spreads = [], []
            for _, _, history in _history_slices(
                batch, weighted, source_array, matrix.shape[0], ROWS_PER_PRODUCT
            ):
                mean, spread = row_moments(history @ matrix, count)
                means.append(mean)
                spreads.append(spread)
            extra = [pa.array(np.concatenate(means)), pa.array(np.concatenate(spreads))]
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *extra], names=[*batch.schema.names, "item_mean", "item_spread"]
            )

    schema = T.StructType(
        [
            *users.schema.fields,
            T.StructField("item_mean", T.DoubleType(), False),
            T.StructField("item_spread", T.DoubleType(), False),
        ]
    )
    return users.mapInArrow(with_moments, schema), shared


def _score_item_item(
    spark: SparkSession,
    users: DataFrame,
    prepared: ItemWeights,
    local: tuple[np.ndarray, np.ndarray | None],
    options: ItemItemOptions,
    moments: FactorMoments | None,
) -> tuple[DataFrame, Broadcast | None]:
    """``users`` (as :func:`_item_item_columns` left them, plus ``item_mean``/``item_spread``
    when the items are one block of many) scored against the items ``local`` holds (ids and,
    for a blend, their factors, whose ``moments`` over all eligible items scale the ALS half).
    Returns the lists and the broadcast, for a caller that wants to free it."""
    targets, factor_matrix = local
    n, explain, als_weight = options.n, options.explain, options.als_weight
    schema = EXPLAINED_SCHEMA if explain else TOPN_SCHEMA
    if len(targets) == 0:
        return spark.createDataFrame([], schema), None
    real, width = len(targets), selection_width(len(targets), n)
    weights = prepared.towards(targets, width)
    shared = spark.sparkContext.broadcast((targets, prepared.sources, weights, factor_matrix))
    step = min(ROWS_PER_PRODUCT, options.users_per_block)
    moments_in_rows = "item_mean" in users.columns

    def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Arrow in and out, as the ALS scorer: each batch's histories and exclusions are looked
        up in one hashed pass, and ids leave by Arrow ``take``."""
        ids, source_ids, matrix, factors = shared.value
        item_columns = np.ascontiguousarray(factors.T) if factors is not None else None
        id_array: pa.Array | None = None
        source_array: pa.Array | None = None
        buffer = np.empty((step, width), dtype=np.float32)
        with single_threaded_blas():
            for batch in batches:
                if id_array is None:
                    id_array = pa.array(ids, type=batch.column("user_id").type)
                    source_array = pa.array(source_ids, type=batch.column("user_id").type)
                excluded_rows, excluded_cols = _excluded_cells(batch.column("exclude"), id_array)
                for start, part, history in _history_slices(
                    batch, options.weighted, source_array, matrix.shape[0], step
                ):
                    scores = buffer[: part.num_rows]
                    if item_columns is None:  # candidates: the items some history item weighs
                        scatter_scores(history @ matrix, scores)
                    else:  # every eligible item, with item-item's zeros counted
                        assert moments is not None
                        scores.fill(0.0)
                        (history @ matrix).toarray(out=scores)
                        user_matrix = _vectors(part.column("features"))
                        item_moments = (
                            (part.column("item_mean").to_numpy(), part.column("item_spread").to_numpy())
                            if moments_in_rows
                            else row_moments(scores[:, :real], real)
                        )
                        als = user_matrix @ item_columns
                        blend_into(
                            scores[:, :real], als, als_weight, moments.user_moments(user_matrix), item_moments
                        )
                        scores[:, real:] = -np.inf
                    first, end = np.searchsorted(excluded_rows, [start, start + part.num_rows])
                    scores[excluded_rows[first:end] - start, excluded_cols[first:end]] = -np.inf
                    cols, best = top_n_scores(scores, n)
                    columns, keep = _ranked_columns(part.column("user_id"), id_array, cols, best)
                    if explain:
                        because = _item_item_because(history, matrix, cols, keep, source_ids)
                        columns.append(pa.array(because[keep], type=id_array.type))
                    yield pa.RecordBatch.from_arrays(columns, names=schema.fieldNames())

    return users.mapInArrow(score_batches, schema), shared


def _item_item_because(
    history: sparse.csr_matrix,
    weights: sparse.csr_matrix,
    cols: np.ndarray,
    keep: np.ndarray,
    source_ids: np.ndarray,
) -> np.ndarray:
    """Per picked item, the user's history item with the largest weight towards it."""
    because = np.full(cols.shape, None, dtype=object)
    for row in range(cols.shape[0]):
        sources = history.indices[history.indptr[row] : history.indptr[row + 1]]
        picked = cols[row][keep[row]]
        if len(sources) == 0 or len(picked) == 0:
            continue
        contribution = weights[sources][:, picked].toarray()  # history x picked
        best = np.argmax(contribution, axis=0)
        has_weight = contribution[best, np.arange(len(picked))] != 0
        because[row, : len(picked)] = np.where(has_weight, source_ids[sources[best]], None)
    return because

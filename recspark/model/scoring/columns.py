"""Users' rows as the scorers read them and lists as they leave: Arrow columns to NumPy and back.

Everything here works on a whole Arrow batch at once (one hashed lookup for every excluded or
history item, ids out by Arrow ``take``), with no Python object per row or per id.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import sparse

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
HISTORY_IN_ROWS = ("known_history", "known_history_weight", "known_history_vectors")


def scoring_columns(users: DataFrame, explain: bool) -> DataFrame:
    columns = ["user_id", "features", "exclude"]
    if explain:
        columns += [c for c in HISTORY_IN_ROWS if c in users.columns] or ["history", "history_weight"]
    return empty_for_null(with_exclusions(users), columns[2:]).select(*columns)


def with_exclusions(users: DataFrame) -> DataFrame:
    if "exclude" in users.columns:
        return users
    return users.withColumn("exclude", F.array().cast("array<string>"))


def empty_for_null(frame: DataFrame, arrays: list[str]) -> DataFrame:
    """``frame`` with null values of its array columns ``arrays`` as empty arrays, which mean
    the same to the scorers and cost Spark's Arrow writer nothing (a null array costs it time
    per row)."""
    types = {field.name: field.dataType for field in frame.schema.fields}
    return frame.withColumns({c: F.coalesce(F.col(c), F.array().cast(types[c])) for c in arrays})


def vectors(column: pa.Array) -> np.ndarray:
    """A list<float> column as a (rows, rank) float32 matrix: one flat copy when every row has
    the same length (factors do), not one NumPy array per row."""
    rows = len(column)
    if rows and column.null_count == 0:
        lengths = np.diff(column.offsets.to_numpy())
        if (lengths == lengths[0]).all():
            flat = column.flatten().to_numpy(zero_copy_only=False)
            return flat.astype(np.float32, copy=False).reshape(rows, int(lengths[0]))
    return np.array(column.to_pylist(), dtype=np.float32)


def list_cells(lists: pa.ListArray, ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row (ascending) and position in ``ids`` of every element of ``lists`` that ``ids`` holds,
    and which of the flattened elements those are: one hashed lookup for a whole Arrow batch, no
    Python object per id. Null lists and unknown ids yield nothing."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    positions = pc.index_in(lists.flatten(), value_set=ids.cast(lists.type.value_type))
    known = pc.is_valid(positions).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(lists)), lengths)[known]
    return rows, pc.drop_null(positions).to_numpy().astype(np.int64), known


def excluded_cells(excluded: pa.ListArray, item_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Row (ascending) and item column of every excluded item the matrix holds, for a whole batch."""
    rows, columns, _ = list_cells(excluded, item_ids)
    return rows, columns


def history_cells(
    history: pa.ListArray, weights: pa.ListArray | None, sources: pa.Array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, source column and weight of each user's history items that ``sources`` holds, for a
    whole Arrow batch, ordered by row then column (as a CSR matrix stores them). A history item
    weighs its ``weights`` entry, or 1 where the user's weights are null; an item listed twice
    counts once, with its last weight."""
    rows, columns, known = list_cells(history, sources)
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


def history_slices(
    batch: pa.RecordBatch, weighted: bool, source_array: pa.Array, sources: int, step: int
) -> Iterator[tuple[int, pa.RecordBatch, sparse.csr_matrix]]:
    """Each slice of at most ``step`` users of ``batch``: its start, its rows and their
    histories as a sparse (users x ``sources``) matrix, looked up once for the whole batch."""
    history_weight = batch.column("history_weight") if weighted else None
    rows, cols, values = history_cells(batch.column("history"), history_weight, source_array)
    for start in range(0, batch.num_rows, step):
        part = batch.slice(start, step)
        first, end = np.searchsorted(rows, [start, start + part.num_rows])
        indptr = np.searchsorted(rows[first:end] - start, np.arange(part.num_rows + 1))
        history = sparse.csr_matrix(
            (values[first:end], cols[first:end], indptr), shape=(part.num_rows, sources)
        )
        yield start, part, history


def ranked_columns(
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


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def closest_history(picked_unit: np.ndarray, history_unit: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each picked item (unit vectors), the position of the history item (unit vectors,
    with their weights) with the highest weight x cosine similarity to it."""
    similarity = picked_unit @ history_unit.T  # picked x history
    return np.argmax(similarity * weights[None, :], axis=1)


def because_from_rows(
    batch: dict[str, list], cols: np.ndarray, keep: np.ndarray, unit: np.ndarray
) -> np.ndarray:
    """:func:`closest_history` with the history's vectors taken from each user's row (item blocks: the
    block scoring a user may not hold the history items that explain its picks)."""
    because = np.full(cols.shape, None, dtype=object)
    rows = zip(*(batch[c] for c in HISTORY_IN_ROWS), strict=True)
    for row, (history, weights, vectors) in enumerate(rows):
        if history is None or len(history) == 0 or not keep[row].any():
            continue
        history_unit = unit_rows(np.stack(vectors).astype(np.float32, copy=False))
        picked = cols[row][keep[row]]
        best = closest_history(unit[picked], history_unit, np.asarray(weights, dtype=np.float32))
        because[row, : len(picked)] = np.asarray(history, dtype=object)[best]
    return because

"""Item-item top-N (EASE, and its blend with ALS): each user's history times the item weights."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from scipy import sparse

from recspark.model.scoring.blend import blend_into, with_item_item_moments
from recspark.model.scoring.blocks import item_blocks, scored_by_item_block
from recspark.model.scoring.columns import (
    EXPLAINED_SCHEMA,
    TOPN_SCHEMA,
    empty_for_null,
    excluded_cells,
    history_slices,
    ranked_columns,
    vectors,
    with_exclusions,
)
from recspark.model.scoring.factors import FactorMoments, collect_within, factor_moments, row_moments
from recspark.model.scoring.selection import (
    ROWS_PER_PRODUCT,
    selection_width,
    single_threaded_blas,
    top_n_scores,
)
from recspark.model.scoring.weights import ItemWeights, as_item_weights, weighted_targets


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
    """
    options = ItemItemOptions(n, users_per_block, explain, weighted, als_weight)
    prepared = as_item_weights(similarity)
    scoring = item_item_columns(users, options)
    if als_weight <= 0:
        lists, _ = score_item_item(
            spark, scoring, prepared, (weighted_targets(spark, items, prepared), None), options, None
        )
        return lists
    local = collect_within(items, "item_id", items_per_block)
    if local is None:
        assert items_per_block is not None
        return blend_by_item_block(spark, scoring, prepared, items, options, items_per_block)
    lists, _ = score_item_item(spark, scoring, prepared, local, options, FactorMoments.of(local[1]))
    return lists


def item_item_columns(users: DataFrame, options: ItemItemOptions) -> DataFrame:
    columns = ["user_id", "history", "exclude"] + (["history_weight"] if options.weighted else [])
    columns += ["features"] if options.als_weight > 0 else []
    return empty_for_null(with_exclusions(users), ["exclude"]).select(*columns)


def blend_by_item_block(
    spark: SparkSession,
    users: DataFrame,
    prepared: ItemWeights,
    items: DataFrame,
    options: ItemItemOptions,
    items_per_block: int,
) -> DataFrame:
    """A blend over a catalogue larger than ``items_per_block``, as :func:`top_n_by_item_block`
    scores ALS. A z-score needs the user's mean and spread over every item, so those come
    first: the ALS half's from the items' factor moments (summed in Spark), the item-item half's
    from each user's scores over the weighted items alone (``ease.max_items`` bounds them; every
    other item scores 0), kept in the user rows."""
    keyed, blocks = item_blocks(items, items_per_block)
    moments = factor_moments(keyed)
    assert moments is not None  # item_blocks found items
    with_moments, shared = with_item_item_moments(
        spark, users, prepared, weighted_targets(spark, keyed, prepared), moments.count, options.weighted
    )
    scored_users = with_moments.localCheckpoint(eager=True)
    shared.destroy()
    return scored_by_item_block(
        keyed,
        blocks,
        lambda local: score_item_item(spark, scored_users, prepared, local, options, moments),
        options.n,
        options.explain,
    )


def scatter_scores(product: sparse.csr_matrix, scores: np.ndarray) -> None:
    """``scores`` holds the sparse ``product`` where it has entries and -inf elsewhere, in place:
    one scatter into a flat view, no dense copy."""
    scores.fill(-np.inf)
    rows = np.repeat(np.arange(product.shape[0]) * scores.shape[1], np.diff(product.indptr))
    scores.ravel()[rows + product.indices] = product.data


def score_item_item(
    spark: SparkSession,
    users: DataFrame,
    prepared: ItemWeights,
    local: tuple[np.ndarray, np.ndarray | None],
    options: ItemItemOptions,
    moments: FactorMoments | None,
) -> tuple[DataFrame, Broadcast | None]:
    """``users`` (as :func:`item_item_columns` left them, plus ``item_mean``/``item_spread``
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
                excluded_rows, excluded_cols = excluded_cells(batch.column("exclude"), id_array)
                for start, part, history in history_slices(
                    batch, options.weighted, source_array, matrix.shape[0], step
                ):
                    scores = buffer[: part.num_rows]
                    if item_columns is None:  # candidates: the items some history item weighs
                        scatter_scores(history @ matrix, scores)
                    else:  # every eligible item, with item-item's zeros counted
                        assert moments is not None
                        scores.fill(0.0)
                        (history @ matrix).toarray(out=scores)
                        user_matrix = vectors(part.column("features"))
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
                    columns, keep = ranked_columns(part.column("user_id"), id_array, cols, best)
                    if explain:
                        because = item_item_because(history, matrix, cols, keep, source_ids)
                        columns.append(pa.array(because[keep], type=id_array.type))
                    yield pa.RecordBatch.from_arrays(columns, names=schema.fieldNames())

    return users.mapInArrow(score_batches, schema), shared


def item_item_because(
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

"""Blending two models' scores: per-user z-scores over every eligible item, mixed by weight.

A z-score needs each user's mean and spread over all items; these come from the items' factor
moments (ALS) and from each user's scores over the weighted items (item-item), so a blend can
score one item block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from recspark.model.scoring.columns import history_slices
from recspark.model.scoring.factors import row_moments
from recspark.model.scoring.selection import ROWS_PER_PRODUCT
from recspark.model.scoring.weights import ItemWeights


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


def with_item_item_moments(
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
            for _, _, history in history_slices(
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

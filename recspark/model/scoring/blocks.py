"""Catalogues larger than one process should hold: items in blocks, each user's lists merged.

The item vectors are broadcast whole only up to a budget (``serve.max_items_per_block``). A larger
catalogue is scored one item block at a time, and each user's per-block top-n are merged, so
neither the driver nor any Python worker (nor its score buffer) grows with the catalogue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import reduce

import numpy as np
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.model.scoring.columns import EXPLAINED_SCHEMA, HISTORY_IN_ROWS, TOPN_SCHEMA
from recspark.model.scoring.factors import collect_factors

log = logging.getLogger(__name__)


def item_blocks(items: DataFrame, budget: int) -> tuple[DataFrame, int]:
    """``items`` with an ``item_block`` in [0, blocks), no block holding more than ``budget``
    items: blocks by a hash of the item id, as few as fit (the largest block is counted, and
    the count raised until it fits). Returns the keyed items (checkpointed) and the count."""
    items = items.select("item_id", "features").localCheckpoint(eager=True)
    blocks = max(1, math.ceil(items.count() / budget))
    while True:
        keyed = items.withColumn("item_block", F.pmod(F.xxhash64("item_id"), F.lit(blocks)).cast("int"))
        largest = keyed.groupBy("item_block").count().agg(F.max("count")).collect()[0][0] or 0
        if largest <= budget:
            return keyed, blocks
        blocks += max(1, blocks // 4)


def with_history_vectors(users: DataFrame, items: DataFrame) -> DataFrame:
    """``users`` plus their history items found among ``items``, in history order, with each
    one's weight and vector (:data:`HISTORY_IN_ROWS`): what explains a pick in any block."""
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
    history, weight, vectors = HISTORY_IN_ROWS
    return users.join(known, "user_id", "left").select(
        *users.columns,
        F.col("_known.item_id").alias(history),
        F.col("_known.weight").alias(weight),
        F.col("_known.features").alias(vectors),
    )


def scored_by_item_block(
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

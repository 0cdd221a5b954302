"""A training period, ready for any model family: built once, shared by every fit on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config, EaseConfig
from recspark.core.interactions import strength_as_of
from recspark.core.tables import Lake
from recspark.model.families.ease import ItemGram
from recspark.model.families.idmap import extend_user_and_item_maps


class TrainingError(RuntimeError):
    """Training cannot produce a trustworthy model from the data at hand."""


@dataclass
class TrainingData:
    """A training period every family can be fitted on: interactions with ``strength`` as of its
    end, the id maps (ALS), and the item co-occurrences (EASE), computed once and shared."""

    interactions: DataFrame
    user_ids: DataFrame
    item_ids: DataFrame
    as_of: datetime
    positives: int  # user-item pairs with strength > 0
    _grams: dict[str, ItemGram] = field(default_factory=dict)

    def gram(self, spark: SparkSession, ease: EaseConfig, weight: Column, signal: str) -> ItemGram:
        """Co-occurrences with ``weight`` per pair (computed once per ``signal``)."""
        if signal not in self._grams:
            pairs = self.interactions.where(F.col("strength") > 0).select(
                "user_id", "item_id", weight.cast("double").alias("weight")
            )
            self._grams[signal] = ItemGram.compute(spark, pairs, ease.max_items, ease.min_item_users)
        return self._grams[signal]

    def unpersist(self) -> None:
        for frame in (self.interactions, self.user_ids, self.item_ids):
            frame.unpersist()


def training_data(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    interactions: DataFrame,
    *,
    as_of: datetime,
    all_interactions: DataFrame,
    period: str,
) -> TrainingData:
    """``interactions`` (in the interactions schema) with ``strength`` decayed to ``as_of``,
    persisted, and the id maps extended to every user and item of ``all_interactions``; refuses
    a period with fewer positive pairs than ``train.min_train_interactions`` (``period`` names it
    in the message)."""
    decayed = strength_as_of(interactions, as_of, config.interactions).persist()
    positives = decayed.where("strength > 0").count()
    least = config.train.min_train_interactions
    if positives < least:
        decayed.unpersist()
        raise TrainingError(
            f"only {positives} positive user-item interactions in {period} "
            f"(train.min_train_interactions={least}): add data or lower train.min_train_interactions"
        )
    user_ids, item_ids = extend_user_and_item_maps(spark, lake, all_interactions)
    return TrainingData(decayed, user_ids.persist(), item_ids.persist(), as_of, positives)

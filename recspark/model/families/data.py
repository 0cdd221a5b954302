"""A training period, ready for any model family: built once, shared by every fit on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.config.model import EaseConfig
from recspark.core.interactions import strength_as_of
from recspark.core.tables import Lake
from recspark.model.families.ease import ItemGram
from recspark.model.families.idmap import extend_user_and_item_maps


class TrainingError(RuntimeError):
    """Training cannot produce a trustworthy model from the data at hand."""


@dataclass
class TrainingData:
    """A training period every family can be fitted on: interactions with ``strength`` as of its
    end, the id maps (ALS), and the item co-occurrences (EASE), computed once and shared. The id
    maps are extended (a Delta commit per map) when an MLlib fit first needs them, so a period
    only EASE or the driver's ALS fits on never writes them."""

    interactions: DataFrame
    as_of: datetime
    positives: int  # user-item pairs with strength > 0
    extend_id_maps: Callable[[], tuple[DataFrame, DataFrame]] = field(repr=False)
    _id_maps: tuple[DataFrame, DataFrame] | None = field(default=None, repr=False)
    _grams: dict[str, ItemGram] = field(default_factory=dict)

    def id_maps(self) -> tuple[DataFrame, DataFrame]:
        """(user_id, user_idx) and (item_id, item_idx) of every id, extended once, persisted."""
        if self._id_maps is None:
            user_ids, item_ids = self.extend_id_maps()
            self._id_maps = (user_ids.persist(), item_ids.persist())
        return self._id_maps

    @property
    def user_ids(self) -> DataFrame:
        return self.id_maps()[0]

    @property
    def item_ids(self) -> DataFrame:
        return self.id_maps()[1]

    def gram(self, spark: SparkSession, ease: EaseConfig, weight: Column, signal: str) -> ItemGram:
        """Co-occurrences with ``weight`` per pair (computed once per ``signal``)."""
        if signal not in self._grams:
            pairs = self.interactions.where(F.col("strength") > 0).select(
                "user_id", "item_id", weight.cast("double").alias("weight")
            )
            self._grams[signal] = ItemGram.compute(spark, pairs, ease.max_items, ease.min_item_users)
        return self._grams[signal]

    def unpersist(self) -> None:
        for frame in (self.interactions, *(self._id_maps or ())):
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
    persisted, and the id maps extended to every user and item of ``all_interactions`` when an
    MLlib fit first asks for them; refuses a period with fewer positive pairs than
    ``train.min_train_interactions`` (``period`` names it in the message)."""
    decayed = strength_as_of(interactions, as_of, config.interactions).persist()
    positives = decayed.where("strength > 0").count()
    least = config.train.min_train_interactions
    if positives < least:
        decayed.unpersist()
        raise TrainingError(
            f"only {positives} positive user-item interactions in {period} "
            f"(train.min_train_interactions={least}): add data or lower train.min_train_interactions"
        )
    return TrainingData(
        decayed, as_of, positives, lambda: extend_user_and_item_maps(spark, lake, all_interactions)
    )

"""The ALS family: MLlib's implicit-feedback ALS on the interactions' preference signal."""

from __future__ import annotations

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recspark.core.config.model import TrainConfig


def preference(settings: TrainConfig) -> Column:
    """The rating ALS sees for a pair (confidence = 1 + alpha * rating)."""
    return F.log1p("strength") if settings.confidence == "log" else F.col("strength")


def als_ratings(
    interactions: DataFrame, user_ids: DataFrame, item_ids: DataFrame, settings: TrainConfig
) -> DataFrame:
    """ALS input: integer ids and the preference signal of every positive pair."""
    return (
        interactions.where(F.col("strength") > 0)
        .join(user_ids, "user_id")
        .join(item_ids, "item_id")
        .select("user_idx", "item_idx", preference(settings).cast("float").alias("rating"))
    )


def fit_als(ratings: DataFrame, settings: TrainConfig) -> ALSModel:
    als = ALS(
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="rating",
        implicitPrefs=True,
        rank=settings.rank,
        regParam=settings.reg_param,
        alpha=settings.alpha,
        maxIter=settings.max_iter,
        seed=settings.seed,
        numUserBlocks=settings.num_user_blocks,
        numItemBlocks=settings.num_item_blocks,
        checkpointInterval=settings.checkpoint_interval,
        coldStartStrategy="drop",
    )
    return als.fit(ratings)


def factor_tables(model: ALSModel, user_ids: DataFrame, item_ids: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The model's factors keyed by the shop's own ids."""
    users = model.userFactors.join(user_ids, F.col("id") == F.col("user_idx")).select("user_id", "features")
    items = model.itemFactors.join(item_ids, F.col("id") == F.col("item_idx")).select("item_id", "features")
    return users, items

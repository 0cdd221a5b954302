"""Candidate sources other than the model: popular, trending, popular in the user's categories,
new items, every eligible item; and the rules for what is never recommended (to anyone, and to
a user).

Evaluation scores the baselines with these very functions and serving fills lists with them,
so a baseline's name means one algorithm everywhere (``most popular`` in a training report is the
``popular`` source of the serving table).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.config.serving import INCLUDE_UNLISTED, ServeConfig
from recspark.model.scoring.als import recommend_top_n

POPULAR = "popular"
TRENDING = "trending"
CATEGORY_POPULAR = "category_popular"
NEW_ITEM = "new_item"
ALL_ITEMS = "all_items"


def item_popularity(interactions: DataFrame) -> DataFrame:
    """How many users interacted positively with each item (item_id, popularity)."""
    return (
        interactions.where(F.col("strength") > 0)
        .groupBy("item_id")
        .agg(F.count("*").cast("double").alias("popularity"))
    )


def newest_event_time(interactions: DataFrame) -> datetime | None:
    """ "Now" for the recency rules: the newest event seen, so a replay of old data behaves alike."""
    return interactions.agg(F.max("last_event_time")).collect()[0][0]


def fallback_popularity(
    interactions: DataFrame,
    eligible: DataFrame,
    as_of: datetime | None,
    trending_days: float,
    top_n: int,
) -> tuple[DataFrame, str]:
    """What fills a list the model cannot: items trending over the last ``trending_days`` before
    ``as_of`` (so the list moves with the shop), or all-time popular items when fewer than
    ``top_n`` eligible items were active recently. Returns (item_id, popularity) and the source."""
    available = item_popularity(interactions).join(eligible, "item_id")
    if trending_days and as_of is not None:
        since = as_of - timedelta(days=trending_days)
        recent = interactions.where(F.col("last_event_time") >= F.lit(since))
        # Counted, then read again by the caller: computed once. Not cached, which the session
        # would hold until unpersisted (the refresh stream calls this every batch); a local
        # checkpoint's blocks go with the last reference to the frame.
        trending = item_popularity(recent).join(eligible, "item_id").localCheckpoint()
        if trending.count() >= top_n:
            return trending, TRENDING
    return available, POPULAR


def user_exclusions(serve: ServeConfig, interactions: DataFrame, as_of: datetime | None) -> DataFrame:
    """Per user, the items never recommended to them (user_id, exclude): bought
    (``serve.exclude_purchased``), rated (``serve.exclude_rated``) and, with
    ``serve.exclude_viewed_days``, viewed within that many days before ``as_of``.

    Evaluation drops the same items from what counts as relevant, so no recommender is scored on
    items serving would never show."""
    rule = F.lit(False)
    if serve.exclude_purchased:
        rule = rule | (F.col("purchase_count") > 0)
    if serve.exclude_rated:
        rule = rule | (F.col("rating_count") > 0)
    if serve.exclude_viewed_days and as_of is not None:
        since = as_of - timedelta(days=serve.exclude_viewed_days)
        # The pair's newest event is recent and it includes a view.
        rule = rule | ((F.col("view_count") > 0) & (F.col("last_event_time") >= F.lit(since)))
    return interactions.where(rule).groupBy("user_id").agg(F.collect_list("item_id").alias("exclude"))


def excluding(candidates: DataFrame, exclusions: DataFrame) -> DataFrame:
    """``candidates`` (user_id, item_id, ...) without each user's excluded items."""
    pairs = exclusions.select("user_id", F.explode("exclude").alias("item_id"))
    return candidates.join(pairs, ["user_id", "item_id"], "left_anti")


def ranked(candidates: DataFrame, fetch: int, *order: Column | str) -> DataFrame:
    """Keep each user's ``fetch`` best candidates in ``order``, numbered as ``rank``."""
    position = F.row_number().over(Window.partitionBy("user_id").orderBy(*order))
    return candidates.withColumn("rank", position).where(F.col("rank") <= fetch)


def popular_candidates(
    spark: SparkSession,
    users: DataFrame,
    popularity: DataFrame,
    fetch: int,
    users_per_block: int,
    *,
    items_per_block: int | None = None,
) -> DataFrame:
    """The ``fetch`` most popular items per user minus their exclusions (``users``: user_id,
    exclude), through the same blocked top-N path as the model (and the same item budget)."""
    user_vectors = users.withColumn("features", F.array(F.lit(1.0).cast("float")))
    item_vectors = popularity.select("item_id", F.array(F.col("popularity").cast("float")).alias("features"))
    return recommend_top_n(
        spark, user_vectors, item_vectors, fetch, users_per_block, items_per_block=items_per_block
    )


def category_preferences(interactions: DataFrame, catalog: DataFrame, favourites: int) -> DataFrame:
    """Per user, their ``favourites`` categories with the most positive strength and each one's
    share of it (user_id, category, share)."""
    per_category = (
        interactions.where(F.col("strength") > 0)
        .join(catalog.select("item_id", "category").where(F.col("category").isNotNull()), "item_id")
        .groupBy("user_id", "category")
        .agg(F.sum("strength").alias("strength"))
    )
    user = Window.partitionBy("user_id")
    return (
        per_category.withColumn("_n", F.row_number().over(user.orderBy(F.desc("strength"), "category")))
        .where(F.col("_n") <= favourites)
        .select("user_id", "category", (F.col("strength") / F.sum("strength").over(user)).alias("share"))
    )


def category_popular_candidates(
    preferences: DataFrame, popularity: DataFrame, catalog: DataFrame, exclusions: DataFrame, fetch: int
) -> DataFrame:
    """Popular items of the user's favourite categories: score = the user's share of the category
    x the item's popularity (each category's ``2 x fetch`` most popular items are candidates)."""
    in_category = popularity.join(catalog.select("item_id", "category"), "item_id").where(
        F.col("category").isNotNull()
    )
    top = in_category.withColumn(
        "_n", F.row_number().over(Window.partitionBy("category").orderBy(F.desc("popularity"), "item_id"))
    ).where(F.col("_n") <= 2 * fetch)
    candidates = preferences.join(F.broadcast(top), "category").select(
        "user_id", "item_id", (F.col("share") * F.col("popularity")).alias("score")
    )
    return ranked(excluding(candidates, exclusions), fetch, F.desc("score"), "item_id")


def new_items(
    serve: ServeConfig, interactions: DataFrame, catalog: DataFrame, as_of: datetime | None
) -> DataFrame:
    """Available catalog items with at most ``serve.new_item_max_users`` users and first seen
    (first event, else the catalog's ``updated_at``) within ``serve.new_item_days`` of ``as_of``."""
    if as_of is None:
        return catalog.select("item_id", "category", F.lit(None).cast("timestamp").alias("first_seen")).limit(
            0
        )
    stats = interactions.groupBy("item_id").agg(
        F.min("first_event_time").alias("first_event"),
        F.count(F.when(F.col("strength") > 0, 1)).alias("users"),
    )
    since = as_of - timedelta(days=serve.new_item_days)
    return (
        catalog.where(F.col("available") & F.col("category").isNotNull())
        .join(stats, "item_id", "left")
        .select("item_id", "category", F.coalesce("first_event", "updated_at").alias("first_seen"), "users")
        .where(
            (F.coalesce("users", F.lit(0)) <= serve.new_item_max_users)
            & (F.col("first_seen") >= F.lit(since))
        )
        .drop("users")
    )


def new_item_candidates(
    preferences: DataFrame, fresh_items: DataFrame, exclusions: DataFrame, fetch: int
) -> DataFrame:
    """New items from the user's preferred categories: score = the user's share of the category,
    newest first within it."""
    candidates = preferences.join(F.broadcast(fresh_items), "category").select(
        "user_id", "item_id", F.col("share").alias("score"), "first_seen"
    )
    return ranked(
        excluding(candidates, exclusions), fetch, F.desc("score"), F.desc("first_seen"), "item_id"
    ).drop("first_seen")


def all_items_ranking(eligible: DataFrame, popularity: DataFrame) -> DataFrame:
    """Every eligible item in one fixed order, by popularity (0 for items without any), then item
    id, as (item_id, popularity) where ``popularity`` is the item's place counted from the end:
    unique per item, so the blocked top-N (:func:`popular_candidates`) keeps exactly this order.
    What fills a list when every other source has run out."""
    counted = eligible.select("item_id").distinct().join(popularity, "item_id", "left")
    place = F.row_number().over(
        Window.orderBy(F.coalesce(F.col("popularity"), F.lit(0.0)).asc(), F.col("item_id").desc())
    )
    return counted.select("item_id", place.cast("double").alias("popularity"))


def unavailable_items(catalog: DataFrame) -> DataFrame:
    """The catalog's items marked unavailable, or held back by a malformed line (item_id)."""
    return catalog.where(~F.col("available")).select("item_id")


def eligible_items(
    items: DataFrame, catalog: DataFrame | None, serve: ServeConfig, unlisted_items: str
) -> DataFrame:
    """The items of ``items`` (item_id) that may be recommended at all: not on the
    ``serve.exclude_items`` list and, with a catalog, listed as available; an item the catalog
    does not list at all only when ``unlisted_items`` (``catalog.unlisted_items``) is
    ``include``. No catalog: all of them."""
    eligible = items.select("item_id").distinct()
    if catalog is not None:
        if unlisted_items == INCLUDE_UNLISTED:
            eligible = eligible.join(unavailable_items(catalog), "item_id", "left_anti")
        else:
            eligible = eligible.join(
                catalog.where(F.col("available")).select("item_id"), "item_id", "left_semi"
            )
    if serve.exclude_items:
        eligible = eligible.where(~F.col("item_id").isin(*serve.exclude_items))
    return eligible

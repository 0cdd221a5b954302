"""The serving table: top-N per user from the champion model, published in one Delta commit."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.ml.recommendation import ALSModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.catalog import read_catalog
from recspark.core.config import Config, TrainConfig
from recspark.core.gates import Gate
from recspark.core.registry import configure_mlflow, require_champion
from recspark.core.tables import INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, SIMILAR_ITEMS, USER_IDS, Lake
from recspark.model.topn import recommend_top_n
from recspark.model.train import (
    factor_tables,
    item_popularity,
    popular_recommendations,
    preference,
    settings_from_run,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    version: str
    model: ALSModel
    settings: TrainConfig  # what it was trained with: fold-in must use the same alpha and reg


def load_champion(config: Config) -> Champion:
    import mlflow.spark

    configure_mlflow(config.mlflow)
    version = require_champion(config.mlflow)
    pipeline = mlflow.spark.load_model(
        f"models:/{config.mlflow.model_name}/{version.version}",
        dfs_tmpdir=tempfile.mkdtemp(prefix="recspark-mlflow-"),
    )
    model = pipeline.stages[-1] if hasattr(pipeline, "stages") else pipeline
    return Champion(
        version=str(version.version),
        model=model,
        settings=settings_from_run(version.run_id, config.train),
    )


def unavailable_item_ids(spark: SparkSession, config: Config) -> DataFrame | None:
    if config.catalog.path is None:
        return None
    return read_catalog(spark, config.catalog.path).where(~F.col("available")).select("item_id")


def available_items(
    spark: SparkSession, config: Config, items: DataFrame, catalog: DataFrame | None = None
) -> DataFrame:
    """Keep only items the catalog does not mark unavailable (no catalog: keep all) and that are
    not on the ``serve.exclude_items`` list."""
    if catalog is None and config.catalog.path is not None:
        catalog = read_catalog(spark, config.catalog.path)
    if catalog is not None:
        items = items.join(catalog.where(~F.col("available")).select("item_id"), "item_id", "left_anti")
    if config.serve.exclude_items:
        items = items.where(~F.col("item_id").isin(*config.serve.exclude_items))
    return items


def newest_event_time(interactions: DataFrame) -> datetime | None:
    """ "Now" for the recency rules: the newest event seen, so a replay of old data behaves alike."""
    return interactions.agg(F.max("last_event_time")).first()[0]


def fallback_popularity(
    spark: SparkSession,
    config: Config,
    interactions: DataFrame,
    as_of: datetime | None = None,
    catalog: DataFrame | None = None,
) -> tuple[DataFrame, str]:
    """What users the model cannot personalise for get: items trending over the last
    ``serve.trending_days`` (so the list moves with the shop), or all-time popular items when
    too few items were active recently."""
    available = available_items(spark, config, item_popularity(interactions), catalog)
    if config.serve.trending_days:
        newest = as_of if as_of is not None else newest_event_time(interactions)
        if newest is not None:
            since = newest - timedelta(days=config.serve.trending_days)
            recent = interactions.where(F.col("last_event_time") >= F.lit(since))
            trending = available_items(spark, config, item_popularity(recent), catalog).persist()
            if trending.count() >= config.serve.top_n:
                return trending, "trending"
            trending.unpersist()
    return available, "popular"


def user_exclusions(config: Config, interactions: DataFrame, as_of: datetime | None) -> DataFrame:
    """Per user, the items never recommended to them: purchased (``serve.exclude_purchased``)
    and, with ``serve.exclude_viewed_days``, viewed within that many days before ``as_of``."""
    serve = config.serve
    rule = F.lit(False)
    if serve.exclude_purchased:
        rule = rule | (F.col("purchase_count") > 0)
    if serve.exclude_viewed_days and as_of is not None:
        since = as_of - timedelta(days=serve.exclude_viewed_days)
        # The pair's newest event is recent and it includes a view.
        rule = rule | ((F.col("view_count") > 0) & (F.col("last_event_time") >= F.lit(since)))
    return interactions.where(rule).groupBy("user_id").agg(F.collect_list("item_id").alias("exclude"))


def category_preferences(interactions: DataFrame, catalog: DataFrame) -> DataFrame:
    """Per user and catalog category, the user's share of positive strength (user_id, category, share)."""
    per_category = (
        interactions.where(F.col("strength") > 0)
        .join(catalog.select("item_id", "category").where(F.col("category").isNotNull()), "item_id")
        .groupBy("user_id", "category")
        .agg(F.sum("strength").alias("strength"))
    )
    total = F.sum("strength").over(Window.partitionBy("user_id"))
    return per_category.select("user_id", "category", (F.col("strength") / total).alias("share"))


def _excluding(candidates: DataFrame, exclusions: DataFrame) -> DataFrame:
    pairs = exclusions.select("user_id", F.explode("exclude").alias("item_id"))
    return candidates.join(pairs, ["user_id", "item_id"], "left_anti")


def _ranked(candidates: DataFrame, fetch: int, *order: Column) -> DataFrame:
    """Keep each user's ``fetch`` best candidates in ``order``, numbered as ``rank``."""
    position = F.row_number().over(Window.partitionBy("user_id").orderBy(*order))
    return candidates.withColumn("rank", position).where(F.col("rank") <= fetch)


def category_popular_candidates(
    preferences: DataFrame, popularity: DataFrame, catalog: DataFrame, exclusions: DataFrame, fetch: int
) -> DataFrame:
    """Popular items within the categories a user touched: score = the user's share of the
    category x the item's popularity (only each category's ``2 x fetch`` most popular items)."""
    in_category = popularity.join(catalog.select("item_id", "category"), "item_id").where(
        F.col("category").isNotNull()
    )
    top = in_category.withColumn(
        "_n", F.row_number().over(Window.partitionBy("category").orderBy(F.desc("popularity"), "item_id"))
    ).where(F.col("_n") <= 2 * fetch)
    candidates = preferences.join(F.broadcast(top), "category").select(
        "user_id", "item_id", (F.col("share") * F.col("popularity")).alias("score")
    )
    return _ranked(_excluding(candidates, exclusions), fetch, F.desc("score"), "item_id")


def new_items(
    config: Config, interactions: DataFrame, catalog: DataFrame, as_of: datetime | None
) -> DataFrame:
    """Available catalog items with at most ``serve.new_item_max_users`` users and first seen
    (first event, else the catalog's ``updated_at``) within ``serve.new_item_days`` of ``as_of``."""
    serve = config.serve
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
    return _ranked(
        _excluding(candidates, exclusions), fetch, F.desc("score"), F.desc("first_seen"), "item_id"
    ).drop("first_seen")


SEGMENTS = {"als": 0, "category_popular": 1, "trending": 2, "popular": 2, "new_item": 3}


def assemble_lists(candidates: DataFrame, n: int, max_per_category: int, new_item_slots: int) -> DataFrame:
    """Each user's final N rows from ranked candidates of several sources.

    ``candidates``: user_id, item_id, rank (within its source), score, source, category,
    because_item_id. Sources are taken in order (als, category_popular, trending/popular); an
    item offered twice keeps its first source. With ``max_per_category``, candidates beyond a
    category's cap move behind every other candidate, so the cap holds whenever enough other
    items exist and the list is never short because of it. ``new_item_slots`` rows at the end go
    to new items when there are some (and more when nothing else is left). The score is kept
    non-increasing with rank (scores of different sources are not comparable; rank is the order).
    """
    seg = F.col("_seg")
    with_seg = candidates.withColumn(
        "_seg", F.coalesce(*[F.when(F.col("source") == s, F.lit(v)) for s, v in SEGMENTS.items()], F.lit(9))
    )
    first = Window.partitionBy("user_id", "item_id").orderBy(seg, "rank")
    frame = with_seg.withColumn("_first", F.row_number().over(first)).where(F.col("_first") == 1)
    if max_per_category:
        in_category = Window.partitionBy("user_id", "category").orderBy(seg, "rank")
        over = F.col("category").isNotNull() & (F.row_number().over(in_category) > max_per_category)
    else:
        over = F.lit(False)
    frame = frame.withColumns({"_over": over, "_new": F.col("source") == "new_item"})
    group = Window.partitionBy("user_id", "_new")
    frame = frame.withColumns(
        {
            "_g": F.row_number().over(group.orderBy("_over", seg, "rank", "item_id")),
            "_gcount": F.count(F.lit(1)).over(group),
        }
    )
    user = Window.partitionBy("user_id")
    main_count = F.coalesce(F.max(F.when(~F.col("_new"), F.col("_gcount"))).over(user), F.lit(0))
    new_count = F.coalesce(F.max(F.when(F.col("_new"), F.col("_gcount"))).over(user), F.lit(0))
    frame = frame.withColumn(
        "_new_take", F.least(new_count, F.greatest(F.lit(new_item_slots), F.lit(n) - main_count))
    ).withColumn("_main_take", F.least(main_count, F.lit(n) - F.col("_new_take")))
    kept = frame.where(
        F.when(F.col("_new"), F.col("_g") <= F.col("_new_take")).otherwise(F.col("_g") <= F.col("_main_take"))
    )
    ordered = user.orderBy("_new", "_g")
    return kept.select(
        "user_id",
        F.row_number().over(ordered).alias("rank"),
        "item_id",
        F.min("score").over(ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)).alias("score"),
        "source",
        F.when(F.col("source") == "als", F.col("because_item_id")).alias("because_item_id"),
    )


def champion_factors(spark: SparkSession, lake: Lake, champion: Champion) -> tuple[DataFrame, DataFrame]:
    """The champion's user and item factors keyed by the shop's ids."""
    return factor_tables(champion.model, lake.read(spark, USER_IDS), lake.read(spark, ITEM_IDS))


def build_recommendations(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion,
    users: DataFrame | None = None,
    user_vectors: DataFrame | None = None,
    item_factors: DataFrame | None = None,
    interactions: DataFrame | None = None,
    as_of: datetime | None = None,
    users_interactions: DataFrame | None = None,
) -> DataFrame:
    """N rows for each of ``users`` (default: everyone with interactions), business rules applied.

    The one code path of the full publish and the refresh job. ``user_vectors`` (user_id,
    features) default to the champion's own user factors; the refresh job passes folded-in
    vectors of recently active users (and the item factors and interactions it already read, and
    ``users_interactions``, the rows of ``interactions`` that belong to ``users``).
    Users with a vector and at least ``serve.min_history`` positive interactions with items the
    model knows get ALS rows; the others (cold start) get popular items of the categories they
    touched, then trending (else popular) items. Rows the rules discard are filled the same way.
    """
    serve = config.serve
    n, block = serve.top_n, serve.users_per_block
    if interactions is None:
        interactions = lake.read(spark, INTERACTIONS)
    if as_of is None:
        as_of = newest_event_time(interactions)
    catalog = read_catalog(spark, config.catalog.path) if config.catalog.path is not None else None
    if users is None:
        users = interactions.select("user_id").distinct()
    users = users.select("user_id").distinct()
    mine = users_interactions if users_interactions is not None else interactions.join(users, "user_id")
    exclusions = user_exclusions(config, mine, as_of)
    if item_factors is None or user_vectors is None:
        user_factors, champion_items = champion_factors(spark, lake, champion)
        item_factors = champion_items if item_factors is None else item_factors
        user_vectors = user_factors if user_vectors is None else user_vectors
    rules = serve.max_per_category > 0 or serve.min_score is not None
    fetch = n * serve.overfetch if rules else n

    history = (
        mine.where(F.col("strength") > 0)
        .join(item_factors.select("item_id"), "item_id")
        .groupBy("user_id")
        .agg(
            F.collect_list("item_id").alias("history"),
            F.collect_list(preference(champion.settings).cast("double")).alias("history_weight"),
            F.count(F.lit(1)).alias("known"),
        )
        .where(F.col("known") >= serve.min_history)
    )
    warm = (
        users.join(history, "user_id")
        .join(user_vectors.select("user_id", "features"), "user_id")
        .join(exclusions, "user_id", "left")
    )
    eligible = available_items(spark, config, item_factors, catalog)
    personal = recommend_top_n(spark, warm, eligible, fetch, block, explain=serve.explain)
    if not serve.explain:
        personal = personal.withColumn("because_item_id", F.lit(None).cast("string"))
    if serve.min_score is not None:
        personal = personal.where(F.col("score") >= serve.min_score)
    parts = [personal.withColumn("source", F.lit("als"))]

    cold = users.join(warm.select("user_id"), "user_id", "left_anti")
    fill_users = users if rules else cold
    need_categories = catalog is not None and (serve.new_item_share > 0 or not cold.isEmpty())
    preferences = category_preferences(mine, catalog) if need_categories else None
    if not fill_users.isEmpty():
        fallback, source = fallback_popularity(spark, config, interactions, as_of, catalog)
        filler = fill_users.join(exclusions, "user_id", "left")
        parts.append(
            popular_recommendations(spark, filler, fallback, fetch, block).withColumn("source", F.lit(source))
        )
        if preferences is not None:
            popularity = available_items(spark, config, item_popularity(interactions), catalog)
            in_categories = category_popular_candidates(
                preferences.join(cold, "user_id"), popularity, catalog, exclusions, fetch
            )
            parts.append(in_categories.withColumn("source", F.lit("category_popular")))
    new_slots = 0
    if serve.new_item_share > 0 and catalog is not None and preferences is not None:
        new_slots = max(1, round(n * serve.new_item_share))
        fresh = available_items(spark, config, new_items(config, interactions, catalog, as_of), catalog)
        parts.append(
            new_item_candidates(preferences, fresh, exclusions, n).withColumn("source", F.lit("new_item"))
        )

    candidates = parts[0].select("user_id", "item_id", "rank", "score", "source", "because_item_id")
    for part in parts[1:]:
        candidates = candidates.unionByName(
            part.select("user_id", "item_id", "rank", "score", "source"), allowMissingColumns=True
        )
    if catalog is not None and serve.max_per_category:
        candidates = candidates.join(F.broadcast(catalog.select("item_id", "category")), "item_id", "left")
    else:
        candidates = candidates.withColumn("category", F.lit(None).cast("string"))
    lists = assemble_lists(candidates, n, serve.max_per_category, new_slots)
    return lists.select(
        "user_id",
        "rank",
        "item_id",
        "score",
        "source",
        F.lit(champion.version).alias("model_version"),
        F.current_timestamp().alias("generated_at"),
        "because_item_id",
    )


def similar_items(spark: SparkSession, config: Config, lake: Lake, champion: Champion) -> DataFrame:
    """For product pages: each item's nearest available items by cosine of the item factors."""
    _, item_factors = champion_factors(spark, lake, champion)
    unit = item_factors.select(
        "item_id",
        F.transform(
            "features", lambda x: x / F.sqrt(F.aggregate("features", F.lit(0.0), lambda a, v: a + v * v))
        )
        .cast("array<float>")
        .alias("features"),
    )
    items = unit.select(F.col("item_id").alias("user_id"), "features", F.array("item_id").alias("exclude"))
    pairs = recommend_top_n(
        spark,
        items,
        available_items(spark, config, unit),
        config.serve.similar_items,
        config.serve.users_per_block,
    )
    return pairs.select(
        F.col("user_id").alias("item_id"),
        "rank",
        F.col("item_id").alias("similar_item_id"),
        "score",
        F.lit(champion.version).alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )


def publish_recommendations(lake: Lake, recommendations: DataFrame) -> None:
    """Replace the whole serving table in one commit: readers see the old or the new list."""
    (
        recommendations.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "false")
        .save(lake.path(RECOMMENDATIONS.name))
    )


def published_model_version(spark: SparkSession, lake: Lake) -> str | None:
    """The model version the serving table was computed with (None when empty or absent)."""
    if not lake.exists(spark, RECOMMENDATIONS):
        return None
    row = lake.read(spark, RECOMMENDATIONS).select("model_version").limit(1).first()
    return None if row is None else row[0]


def publish_full(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion,
    gate: Gate,
    item_factors: DataFrame | None = None,
) -> int:
    """Every user's list from ``champion``, validated, then written in one commit, and the
    ``similar_items`` table with it: the one full publish of ``recommend`` and the refresh job.
    Returns the number of users served."""
    lake.ensure(spark, RECOMMENDATIONS)
    recommendations = build_recommendations(
        spark, config, lake, champion, item_factors=item_factors
    ).persist()
    try:
        # Validate before publishing, so a bad list never reaches the serving table.
        gate(
            "recommendations",
            recommendations,
            top_n=config.serve.top_n,
            unavailable_items=unavailable_item_ids(spark, config),
        )
        publish_recommendations(lake, recommendations)
    finally:
        recommendations.unpersist()
    if config.serve.similar_items:
        lake.ensure(spark, SIMILAR_ITEMS)
        similar_items(spark, config, lake, champion).write.format("delta").mode("overwrite").save(
            lake.path(SIMILAR_ITEMS.name)
        )
    users = lake.read(spark, RECOMMENDATIONS).select("user_id").distinct().count()
    log.info("recommend: %d users served by champion version %s", users, champion.version)
    return users


def recommend(spark: SparkSession, config: Config, lake: Lake, *, gate: Gate) -> int:
    """The full refresh job; returns the number of users served."""
    return publish_full(spark, config, lake, load_champion(config), gate)

"""The serving table: N rows per user from the champion, or fallback lists while there is none,
validated and published in one Delta commit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.catalog import CatalogRead, load_catalog, report_catalog
from recspark.core.config import Config
from recspark.core.config.checks import AUTO
from recspark.core.conflicts import retry_on_conflict
from recspark.core.gates import Gate
from recspark.core.privacy import forgotten_users_removed
from recspark.core.registry import champion_version, configure_mlflow, require_served_model_known
from recspark.core.tables import (
    FALLBACK_ITEMS,
    INTERACTIONS,
    RECOMMENDATIONS,
    SIMILAR_ITEMS,
    Lake,
    clustered,
    serving_table,
)
from recspark.model.candidates.lists import (
    ItemRankings,
    ListInputs,
    build_lists,
    fallback_chain,
    item_rankings,
)
from recspark.model.candidates.sources import eligible_items, newest_event_time, user_exclusions
from recspark.model.families.model import FittedModel, ModelSpec, read_model_tables
from recspark.model.scoring.als import recommend_top_n
from recspark.model.tuning.plan import read_tuned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    version: str
    model: FittedModel  # its factors and item-item weights, read from the lake

    @property
    def family(self) -> str:
        return self.model.family


def load_champion(spark: SparkSession, config: Config, lake: Lake) -> Champion | None:
    """The champion version's scoring data from the lake, or None while there is no champion
    (a registry fault raises TrackingError instead)."""
    configure_mlflow(config.mlflow)
    version = champion_version(config.mlflow)
    if version is None:
        return None
    params = mlflow.get_run(version.run_id).data.params if version.run_id else {}
    spec = ModelSpec.from_params(params, config)
    model = read_model_tables(spark, lake, spec, config.mlflow.model_name, str(version.version))
    return Champion(str(version.version), model)


def load_catalog_if_any(spark: SparkSession, config: Config) -> CatalogRead | None:
    return load_catalog(spark, config.catalog.path) if config.catalog.path is not None else None


def shop_eligible(config: Config, items: DataFrame, catalog: DataFrame | None) -> DataFrame:
    """The items of ``items`` that may be recommended at all, as configured (the catalog's
    items, ``catalog.unlisted_items``, ``serve.exclude_items``)."""
    return eligible_items(items, catalog, config.serve, config.catalog.unlisted_items)


def ineligible_items(config: Config, lists: DataFrame, catalog: DataFrame | None) -> DataFrame:
    """The items of ``lists`` that may not be recommended (item_id): what the recommendations
    gate checks for. Only the items the lists hold are looked up, so the check costs what the
    lists cost."""
    items = lists.select("item_id").distinct()
    return items.join(shop_eligible(config, items, catalog), "item_id", "left_anti")


def list_room(
    config: Config,
    lists: DataFrame,
    interactions: DataFrame,
    eligible: DataFrame,
    as_of: datetime | None = None,
) -> DataFrame | None:
    """(user_id, room) for the users of ``lists`` with fewer than ``serve.top_n`` rows: how many
    of the ``eligible`` items they may be recommended at all, after their exclusions as of
    ``as_of`` (the newest event when None). A list that short is complete: the contract's
    "unless the catalog is smaller", per user. None when every list is full (nothing is read)."""
    short = lists.groupBy("user_id").count().where(F.col("count") < config.serve.top_n).select("user_id")
    if not short.limit(1).count():
        return None
    if as_of is None:
        as_of = newest_event_time(interactions)
    theirs = interactions.join(short, "user_id")
    excluded = (
        user_exclusions(config.serve, theirs, as_of)
        .select("user_id", F.explode("exclude").alias("item_id"))
        .join(eligible.select("item_id").distinct(), "item_id")
        .groupBy("user_id")
        .agg(F.count_distinct("item_id").alias("excluded"))
    )
    total = eligible.select("item_id").distinct().count()
    return short.join(excluded, "user_id", "left").select(
        "user_id", (F.lit(total) - F.coalesce(F.col("excluded"), F.lit(0))).alias("room")
    )


def serving_checks(
    spark: SparkSession, config: Config, lake: Lake, written_since: datetime | None = None
) -> dict[str, Any]:
    """What the recommendations suite checks the serving table's rows (those generated since
    ``written_since``, or all) against: the items among them that may not be recommended, and
    the room of users whose lists are short."""
    lists = lake.read(spark, RECOMMENDATIONS)
    if written_since is not None:
        lists = lists.where(F.col("generated_at") >= F.lit(written_since))
    read = load_catalog_if_any(spark, config)
    catalog = None if read is None else read.items
    interactions = lake.read(spark, INTERACTIONS)
    eligible = shop_eligible(config, known_items(interactions, catalog), catalog)
    return {
        "unavailable_items": ineligible_items(config, lists, catalog),
        "room": list_room(config, lists, interactions, eligible),
    }


@dataclass
class ShopContext:
    """The shop-wide inputs of a build: the catalog, the fallback chain and the item rankings
    (eligible items, trending or popular, new items). A full publish builds them for its one
    build; the refresh job keeps them, persisted, for ``serve.rankings_refresh_minutes`` (and
    until the champion moves) instead of reading the catalog and ranking all interactions again
    for each batch's few users."""

    catalog: DataFrame | None
    fallbacks: tuple[str, ...]
    rankings: ItemRankings
    built_at: float = field(default_factory=time.monotonic)

    def persist(self) -> ShopContext:
        """Persist the rankings, never the catalog: Spark serves a cached frame to any frame of
        the same plan, so a cached catalog would hide every later change to the file."""
        self.rankings.persist()
        return self

    def unpersist(self) -> None:
        self.rankings.unpersist()

    def age_minutes(self) -> float:
        return (time.monotonic() - self.built_at) / 60

    def with_current_catalog(self, spark: SparkSession, config: Config) -> ShopContext:
        """This context with the catalog as it is now: eligibility is never older than the batch
        (an item out of stock, held back by a malformed line or no longer listed leaves every
        list at once); the rankings stay as built, minus what left."""
        read = load_catalog_if_any(spark, config)
        if read is None:
            return self
        before = self.rankings.eligible
        # Computed once for the batch, then dropped from every ranking.
        gone = before.join(
            shop_eligible(config, before, read.items), "item_id", "left_anti"
        ).localCheckpoint()
        return replace(self, catalog=read.items, rankings=self.rankings.without(gone))


def shop_context(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    interactions: DataFrame,
    as_of: datetime | None,
    catalog: CatalogRead | None = None,
) -> ShopContext:
    """The catalog (``catalog`` when the caller read it, else read and reported here), fallback
    chain and item rankings of all ``interactions`` as of ``as_of``."""
    if catalog is None and config.catalog.path is not None:
        catalog = load_catalog(spark, config.catalog.path)
        report_catalog(catalog, log, "shop-wide rankings")
    items = None if catalog is None else catalog.items
    fallbacks = serving_fallbacks(spark, config, lake)
    eligible = shop_eligible(config, known_items(interactions, items), items)
    rankings = item_rankings(config.serve, interactions, eligible, items, as_of, fallbacks)
    return ShopContext(items, fallbacks, rankings)


@dataclass
class PublishInputs:
    """What a build of serving rows may reuse instead of reading again (the refresh job's cache).

    ``users``: whom for (default everyone with interactions); ``users_interactions``: their rows
    of ``interactions``; ``user_vectors``: folded-in ALS vectors replacing the champion's own;
    ``context``: the shop-wide inputs the refresh job keeps (built for this build when None)."""

    users: DataFrame | None = None
    interactions: DataFrame | None = None
    users_interactions: DataFrame | None = None
    user_vectors: DataFrame | None = None
    as_of: datetime | None = None
    context: ShopContext | None = None


def serving_fallbacks(spark: SparkSession, config: Config, lake: Lake) -> tuple[str, ...]:
    """The fallback chain serving fills lists with: ``serve.fallback``, or what tuning measured."""
    plan = read_tuned(spark, config, lake) if config.serve.fallback == AUTO else None
    return fallback_chain(config.serve, plan.fallback if plan is not None else None)


def build_recommendations(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion | None,
    inputs: PublishInputs | None = None,
) -> DataFrame:
    """Serving rows (the recommendations schema) for ``inputs.users``: the champion's lists with
    the business rules, or, with no champion, the fallback chain (category popular, trending,
    popular) with a null ``model_version``. The one path of the full publish and the refresh."""
    inputs = inputs or PublishInputs()
    interactions = inputs.interactions if inputs.interactions is not None else lake.read(spark, INTERACTIONS)
    as_of = inputs.as_of if inputs.as_of is not None else newest_event_time(interactions)
    context = inputs.context or shop_context(spark, config, lake, interactions, as_of)
    users = inputs.users if inputs.users is not None else interactions.select("user_id").distinct()
    model = champion.model if champion is not None else None
    lists = build_lists(
        spark,
        config.serve,
        config.train.favourite_categories,
        ListInputs(
            users=users,
            interactions=interactions,
            eligible=context.rankings.eligible,
            as_of=as_of,
            catalog=context.catalog,
            model=model,
            user_vectors=inputs.user_vectors,
            users_interactions=inputs.users_interactions,
            fallbacks=context.fallbacks,
            rankings=context.rankings,
        ),
    )
    return lists.select(
        "user_id",
        "rank",
        "item_id",
        "score",
        "source",
        F.lit(None if champion is None else champion.version).cast("string").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
        "because_item_id",
    )


def known_items(interactions: DataFrame, catalog: DataFrame | None) -> DataFrame:
    """Every item the shop has shown us: in interactions, or in the catalog (new items have no
    interactions yet, and new-item slots exist for them)."""
    items = interactions.select("item_id")
    return items if catalog is None else items.unionByName(catalog.select("item_id"))


def similar_items(spark: SparkSession, config: Config, champion: Champion) -> DataFrame:
    """For product pages: each item's closest available items. ALS: cosine of the item factors;
    item-item families: the items each one speaks for most (largest positive weights)."""
    model, n = champion.model, config.serve.similar_items
    read = load_catalog_if_any(spark, config)
    catalog = None if read is None else read.items
    if model.similarity is not None:
        eligible = shop_eligible(
            config, model.similarity.select(F.col("similar_item_id").alias("item_id")), catalog
        )
        pairs = (
            model.similarity.where(F.col("weight") > 0)
            .join(eligible.withColumnRenamed("item_id", "similar_item_id"), "similar_item_id")
            .withColumn(
                "rank",
                F.row_number().over(
                    Window.partitionBy("item_id").orderBy(F.desc("weight"), "similar_item_id")
                ),
            )
            .where(F.col("rank") <= n)
            .select("item_id", "rank", "similar_item_id", F.col("weight").cast("double").alias("score"))
        )
    else:
        assert model.item_factors is not None
        unit = model.item_factors.select(
            "item_id",
            F.transform(
                "features", lambda x: x / F.sqrt(F.aggregate("features", F.lit(0.0), lambda a, v: a + v * v))
            )
            .cast("array<float>")
            .alias("features"),
        )
        items = unit.select(
            F.col("item_id").alias("user_id"), "features", F.array("item_id").alias("exclude")
        )
        eligible = unit.join(shop_eligible(config, unit, catalog), "item_id")
        pairs = recommend_top_n(
            spark,
            items,
            eligible,
            n,
            config.serve.users_per_block,
            items_per_block=config.serve.max_items_per_block,
        ).select(
            F.col("user_id").alias("item_id"), "rank", F.col("item_id").alias("similar_item_id"), "score"
        )
    return pairs.select(
        "item_id",
        F.col("rank").cast("int"),
        "similar_item_id",
        "score",
        F.lit(champion.version).alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )


def fallback_items(config: Config, context: ShopContext, model_version: str | None) -> DataFrame:
    """The fallback ranking lists are filled with (trending, else popular; eligible items only)
    as ``fallback_items`` rows: per catalog category, and for items without one, its best
    ``2 x api.max_n`` items (the longest list a request may ask for, with room for its filters),
    ranked over the whole shop."""
    ranking = context.rankings.fallback.select("item_id", F.col("popularity").cast("double").alias("score"))
    if context.catalog is not None:
        ranking = ranking.join(F.broadcast(context.catalog.select("item_id", "category")), "item_id", "left")
    else:
        ranking = ranking.withColumn("category", F.lit(None).cast("string"))
    best_first = (F.desc("score"), "item_id")
    in_category = F.row_number().over(Window.partitionBy("category").orderBy(*best_first))
    kept = ranking.withColumn("_n", in_category).where(F.col("_n") <= 2 * config.api.max_n)
    return kept.select(
        "item_id",
        "category",
        F.row_number().over(Window.orderBy(*best_first)).cast("int").alias("rank"),
        "score",
        F.lit(context.rankings.fallback_source).alias("source"),
        F.lit(model_version).cast("string").alias("model_version"),
        F.current_timestamp().alias("generated_at"),
    )


def publish_fallback_items(
    spark: SparkSession, config: Config, lake: Lake, context: ShopContext, champion: Champion | None
) -> None:
    """Replace ``fallback_items`` (what the lookup service gives users without a list, and fills
    filtered lists with) in one commit."""
    lake.ensure(spark, FALLBACK_ITEMS)
    rows = fallback_items(config, context, None if champion is None else champion.version)
    retry_on_conflict(
        lambda: rows.write.format("delta").mode("overwrite").save(lake.path(FALLBACK_ITEMS.name)),
        "recommend: replace fallback_items",
    )


def publish_recommendations(lake: Lake, recommendations: DataFrame, interactions_version: int) -> None:
    """Replace the whole serving table in one commit: readers see the old or the new list. The
    commit records the ``interactions`` version the lists reflect (see :func:`reflected_version`)."""
    (
        clustered(recommendations, RECOMMENDATIONS)
        .write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "false")
        .option("userMetadata", reflects(interactions_version))
        .save(lake.path(RECOMMENDATIONS.name))
    )


_REFLECTS = "reflects interactions version "


def reflects(interactions_version: int) -> str:
    """The note a serving-table commit carries: the interactions version its lists include."""
    return f"{_REFLECTS}{interactions_version}"


def reflected_version(spark: SparkSession, lake: Lake, history: int = 100) -> int | None:
    """The newest ``interactions`` version the serving table reflects, from its commits' notes
    (None when no recent commit carries one): where a refresh query without its checkpoint
    resumes, so pending changes are not skipped."""
    if not lake.exists(spark, RECOMMENDATIONS):
        return None
    notes = (
        lake.delta(spark, RECOMMENDATIONS)
        .history(history)
        .where(F.col("userMetadata").startswith(_REFLECTS))
        .orderBy(F.col("version").desc())
        .select("userMetadata")
        .first()
    )
    return None if notes is None else int(notes[0].removeprefix(_REFLECTS))


@dataclass(frozen=True)
class Published:
    """What the serving table holds: whether it has rows, and from which model version."""

    rows: bool
    model_version: str | None  # None: fallback lists (or nothing)


def published(spark: SparkSession, lake: Lake) -> Published:
    if not lake.exists(spark, RECOMMENDATIONS):
        return Published(False, None)
    row = lake.read(spark, RECOMMENDATIONS).select("model_version").limit(1).first()
    return Published(row is not None, None if row is None else row[0])


def published_model_version(spark: SparkSession, lake: Lake) -> str | None:
    """The model version the serving table was computed with (None when empty, absent, or
    holding fallback lists)."""
    return published(spark, lake).model_version


def publish_full(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion | None,
    gate: Gate,
    *,
    reset_serving: bool = False,
) -> int:
    """Every user's list (from ``champion``, or fallback lists without one), validated, then
    written in one commit, and ``similar_items`` with it: the one full publish of `recommend`
    and the refresh job. Returns the number of users served.

    The lists it replaces must come from a model the registry knows (TrackingError otherwise,
    before anything is written): a registry that does not know them is the wrong one, and its
    "no champion" must not wipe the personalised lists. ``reset_serving`` replaces them anyway."""
    if not reset_serving:
        require_served_model_known(spark, lake, config.mlflow)
    lake.ensure(spark, serving_table(config.serve.deletion_vectors))
    # Read before the lists are built: they include at least this version's interactions.
    interactions_version = lake.version(spark, INTERACTIONS)
    catalog = load_catalog_if_any(spark, config)
    if catalog is not None:
        report_catalog(catalog, log, "publish")
        gate("catalog", catalog.lines, scope=catalog.scope)  # malformed lines hold items back
    interactions = lake.read(spark, INTERACTIONS)
    as_of = newest_event_time(interactions)
    context = shop_context(spark, config, lake, interactions, as_of, catalog)
    inputs = PublishInputs(interactions=interactions, as_of=as_of, context=context)
    recommendations = build_recommendations(spark, config, lake, champion, inputs).persist()
    try:
        # Validate before publishing, so a bad list never reaches the serving table.
        gate(
            "recommendations",
            recommendations,
            top_n=config.serve.top_n,
            unavailable_items=ineligible_items(config, recommendations, context.catalog),
            room=list_room(config, recommendations, interactions, context.rankings.eligible, as_of),
        )
        retry_on_conflict(
            lambda: publish_recommendations(lake, recommendations, interactions_version),
            "recommend: replace the serving table",
        )
    finally:
        recommendations.unpersist()
    interactions = lake.read(spark, INTERACTIONS)
    context = shop_context(spark, config, lake, interactions, newest_event_time(interactions))
    publish_fallback_items(spark, config, lake, context, champion)
    if config.serve.similar_items and champion is not None:
        lake.ensure(spark, SIMILAR_ITEMS)
        pairs = similar_items(spark, config, champion)
        retry_on_conflict(
            lambda: pairs.write.format("delta").mode("overwrite").save(lake.path(SIMILAR_ITEMS.name)),
            "recommend: replace similar_items",
        )
    users = lake.read(spark, RECOMMENDATIONS).select("user_id").distinct().count()
    if champion is None:
        log.info("recommend: %d users served fallback lists (no champion model yet)", users)
    else:
        log.info(
            "recommend: %d users served by champion version %s (%s)", users, champion.version, champion.family
        )
    return users


def recommend(
    spark: SparkSession, config: Config, lake: Lake, *, gate: Gate, reset_serving: bool = False
) -> int:
    """The full publish job; returns the number of users served. Without a champion every known
    user still gets N rows (category popular, trending, popular): a shop is never left empty.
    Lists from a model the registry does not know are replaced only with ``reset_serving``."""
    champion = load_champion(spark, config, lake)
    if champion is not None:
        champion.model.persist()
    try:
        with forgotten_users_removed(spark, lake, (RECOMMENDATIONS,), "recommend"):
            return publish_full(spark, config, lake, champion, gate, reset_serving=reset_serving)
    finally:
        if champion is not None:
            champion.model.unpersist()

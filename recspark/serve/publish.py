"""The serving table: N rows per user from the champion, or fallback lists while there is none,
validated and published in one Delta commit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.catalog import read_catalog
from recspark.core.config import AUTO, Config
from recspark.core.gates import Gate
from recspark.core.registry import champion_version, configure_mlflow
from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS, SIMILAR_ITEMS, Lake, clustered, serving_table
from recspark.model.candidates.lists import (
    ItemRankings,
    ListInputs,
    build_lists,
    fallback_chain,
    item_rankings,
)
from recspark.model.candidates.sources import eligible_items, newest_event_time, unavailable_items
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


def unavailable_item_ids(spark: SparkSession, config: Config) -> DataFrame | None:
    if config.catalog.path is None:
        return None
    return unavailable_items(read_catalog(spark, config.catalog.path))


def read_catalog_if_any(spark: SparkSession, config: Config) -> DataFrame | None:
    return read_catalog(spark, config.catalog.path) if config.catalog.path is not None else None


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
        """This context with the catalog as it is now: availability is never older than the
        batch (an item out of stock leaves every list at once); the rankings stay as built."""
        catalog = read_catalog_if_any(spark, config)
        if catalog is None:
            return self
        return replace(self, catalog=catalog, rankings=self.rankings.without(unavailable_items(catalog)))


def shop_context(
    spark: SparkSession, config: Config, lake: Lake, interactions: DataFrame, as_of: datetime | None
) -> ShopContext:
    """The catalog, fallback chain and item rankings of all ``interactions`` as of ``as_of``."""
    catalog = read_catalog_if_any(spark, config)
    fallbacks = serving_fallbacks(spark, config, lake)
    eligible = eligible_items(known_items(interactions, catalog), catalog, config.serve)
    rankings = item_rankings(config.serve, interactions, eligible, catalog, as_of, fallbacks)
    return ShopContext(catalog, fallbacks, rankings)


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
    catalog = read_catalog_if_any(spark, config)
    if model.similarity is not None:
        eligible = eligible_items(
            model.similarity.select(F.col("similar_item_id").alias("item_id")), catalog, config.serve
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
        eligible = unit.join(eligible_items(unit, catalog, config.serve), "item_id")
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
) -> int:
    """Every user's list (from ``champion``, or fallback lists without one), validated, then
    written in one commit, and ``similar_items`` with it: the one full publish of `recommend`
    and the refresh job. Returns the number of users served."""
    lake.ensure(spark, serving_table(config.serve.deletion_vectors))
    # Read before the lists are built: they include at least this version's interactions.
    interactions_version = lake.version(spark, INTERACTIONS)
    recommendations = build_recommendations(spark, config, lake, champion).persist()
    try:
        # Validate before publishing, so a bad list never reaches the serving table.
        gate(
            "recommendations",
            recommendations,
            top_n=config.serve.top_n,
            unavailable_items=unavailable_item_ids(spark, config),
        )
        publish_recommendations(lake, recommendations, interactions_version)
    finally:
        recommendations.unpersist()
    if config.serve.similar_items and champion is not None:
        lake.ensure(spark, SIMILAR_ITEMS)
        similar_items(spark, config, champion).write.format("delta").mode("overwrite").save(
            lake.path(SIMILAR_ITEMS.name)
        )
    users = lake.read(spark, RECOMMENDATIONS).select("user_id").distinct().count()
    if champion is None:
        log.info("recommend: %d users served fallback lists (no champion model yet)", users)
    else:
        log.info(
            "recommend: %d users served by champion version %s (%s)", users, champion.version, champion.family
        )
    return users


def recommend(spark: SparkSession, config: Config, lake: Lake, *, gate: Gate) -> int:
    """The full publish job; returns the number of users served. Without a champion every known
    user still gets N rows (category popular, trending, popular): a shop is never left empty."""
    champion = load_champion(spark, config, lake)
    if champion is not None:
        champion.model.persist()
    try:
        return publish_full(spark, config, lake, champion, gate)
    finally:
        if champion is not None:
            champion.model.unpersist()

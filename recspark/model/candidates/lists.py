"""Each user's N rows: the model's candidates, the fallback sources, the business rules.

The one path from a model (or none) to lists: evaluation scores what this builds on the training
period, the full publish and the refresh job publish what it builds on all data. So a model is
judged by the lists users would get, rules and fallbacks included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.config.checks import AUTO
from recspark.core.config.serving import ServeConfig
from recspark.model.candidates.sources import (
    ALL_ITEMS,
    CATEGORY_POPULAR,
    NEW_ITEM,
    POPULAR,
    TRENDING,
    all_items_ranking,
    category_popular_candidates,
    category_preferences,
    fallback_popularity,
    item_popularity,
    new_item_candidates,
    new_items,
    popular_candidates,
    user_exclusions,
)
from recspark.model.families.model import ALL_FAMILIES, FittedModel

# The order sources fill a list in: the model, then popular in the user's categories, then
# trending (else popular), then every eligible item; new items take reserved slots at the end
# (an item offered by several sources keeps the first, and a new item its slot).
SEGMENTS = {
    **dict.fromkeys(ALL_FAMILIES, 0),
    CATEGORY_POPULAR: 1,
    TRENDING: 2,
    POPULAR: 2,
    NEW_ITEM: 3,
    ALL_ITEMS: 4,
}
# What fills lists after the model: the fallback chain a user without a champion gets too. Every
# chain ends with every eligible item (ALL_ITEMS), so no list is short while eligible items exist.
FALLBACK_CHAIN = (CATEGORY_POPULAR, TRENDING)


def fallback_chain(serve: ServeConfig, measured: str | None) -> tuple[str, ...]:
    """Popular in the user's categories, then trending or popular: as ``serve.fallback`` says,
    or for ``auto`` whichever the last tuning measured better (trending before any tuning)."""
    choice = serve.fallback if serve.fallback != AUTO else (measured or TRENDING)
    return (CATEGORY_POPULAR, choice)


@dataclass
class ItemRankings:
    """What lists draw on that follows the whole shop, not the users they are for: the eligible
    items, the fallback ranking (trending, else popular) and its source, popularity (for
    popular-in-your-categories), the new items and every eligible item in a fixed order (what
    fills a list last). One build computes them from all interactions; the refresh job keeps
    them for a period and reuses them for every batch's few users, so a batch's cost follows its
    users, not the shop."""

    eligible: DataFrame
    fallback: DataFrame  # item_id, popularity
    fallback_source: str  # TRENDING | POPULAR
    popularity: DataFrame  # item_id, popularity of eligible items
    new: DataFrame | None  # item_id, category, first_seen of eligible new items (None: no catalog)
    every: DataFrame  # item_id, popularity: every eligible item, a unique score each (all_items_ranking)

    def without(self, items: DataFrame) -> ItemRankings:
        """These rankings minus ``items`` (item_id): e.g. what became unavailable since."""
        gone = F.broadcast(items.select("item_id").distinct())

        def kept(frame: DataFrame) -> DataFrame:
            return frame.join(gone, "item_id", "left_anti")

        new = None if self.new is None else kept(self.new)
        return ItemRankings(
            kept(self.eligible),
            kept(self.fallback),
            self.fallback_source,
            kept(self.popularity),
            new,
            kept(self.every),
        )

    def frames(self) -> list[DataFrame]:
        return [
            f for f in (self.eligible, self.fallback, self.popularity, self.new, self.every) if f is not None
        ]

    def persist(self) -> ItemRankings:
        for name in ("eligible", "fallback", "popularity", "new", "every"):
            frame = getattr(self, name)
            if frame is not None:
                setattr(self, name, frame.persist())
        return self

    def unpersist(self) -> None:
        for frame in self.frames():
            frame.unpersist()


def item_rankings(
    serve: ServeConfig,
    interactions: DataFrame,
    eligible: DataFrame,
    catalog: DataFrame | None,
    as_of: datetime | None,
    fallbacks: tuple[str, ...],
) -> ItemRankings:
    """The shop-wide rankings of ``interactions`` (all of them) restricted to ``eligible``."""
    popularity = item_popularity(interactions).join(eligible, "item_id")
    if TRENDING in fallbacks:
        fallback, source = fallback_popularity(
            interactions, eligible, as_of, serve.trending_days, serve.top_n
        )
    else:
        fallback, source = popularity, POPULAR
    new = None
    if serve.new_item_share > 0 and catalog is not None:
        new = new_items(serve, interactions, catalog, as_of).join(eligible.select("item_id"), "item_id")
    return ItemRankings(eligible, fallback, source, popularity, new, all_items_ranking(eligible, popularity))


@dataclass
class ListInputs:
    """What lists are built from.

    ``users``: whom for (user_id). ``interactions``: all known interactions (popularity, trending,
    new items), and ``users_interactions`` the rows of ``users`` when the caller has them.
    ``as_of``: "now" for recency rules. ``catalog``: the latest catalog rows, or None.
    ``eligible``: the items that may be recommended at all (item_id). ``model``: the personal
    model, or None for fallback lists only; ``user_vectors`` (user_id, features) replace the
    model's own ALS vectors (the refresh job's fold-in). ``fallbacks``: the sources that fill
    lists after the model, in order, before every eligible item (POPULAR alone is the
    most-popular baseline). ``rankings``:
    the shop-wide rankings when the caller keeps them (computed from the rest when None).
    """

    users: DataFrame
    interactions: DataFrame
    eligible: DataFrame
    as_of: datetime | None = None
    catalog: DataFrame | None = None
    model: FittedModel | None = None
    user_vectors: DataFrame | None = None
    users_interactions: DataFrame | None = None
    fallbacks: tuple[str, ...] = FALLBACK_CHAIN
    rankings: ItemRankings | None = None


CANDIDATE_COLUMNS = ("user_id", "item_id", "rank", "score", "source", "because_item_id")


@dataclass
class Fallbacks:
    """The candidates that do not depend on the model (popular, trending, categories, new
    items, all items), and the list slots reserved for new items; computed once, they serve any
    model."""

    candidates: DataFrame
    new_item_slots: int

    def persist(self) -> Fallbacks:
        self.candidates = self.candidates.persist()
        return self

    def unpersist(self) -> None:
        self.candidates.unpersist()


@dataclass
class _Scope:
    """What every candidate source of one build needs: whom for, their rows, their exclusions."""

    users: DataFrame
    mine: DataFrame
    exclusions: DataFrame
    fetch: int


def _scope(serve: ServeConfig, inputs: ListInputs) -> _Scope:
    users = inputs.users.select("user_id").distinct()
    mine = inputs.users_interactions
    if mine is None:
        mine = inputs.interactions.join(users, "user_id")
    rules = serve.max_per_category > 0 or serve.min_score is not None
    fetch = serve.top_n * serve.overfetch if rules else serve.top_n
    return _Scope(users, mine, user_exclusions(serve, mine, inputs.as_of), fetch)


def fallback_candidates(
    spark: SparkSession, serve: ServeConfig, favourite_categories: int, inputs: ListInputs
) -> Fallbacks:
    """Candidates of ``inputs.fallbacks``, new items and every eligible item (what fills a list
    last, so it is never short while eligible items are left) for ``inputs.users``."""
    return _fallback_candidates(spark, serve, favourite_categories, inputs, _scope(serve, inputs))


def _fallback_candidates(
    spark: SparkSession, serve: ServeConfig, favourite_categories: int, inputs: ListInputs, scope: _Scope
) -> Fallbacks:
    n = serve.top_n
    rankings = inputs.rankings or item_rankings(
        serve, inputs.interactions, inputs.eligible, inputs.catalog, inputs.as_of, inputs.fallbacks
    )
    with_exclusions = scope.users.join(scope.exclusions, "user_id", "left")
    parts = [
        popular_candidates(
            spark,
            with_exclusions,
            ranking,
            scope.fetch,
            serve.users_per_block,
            items_per_block=serve.max_items_per_block,
        ).withColumn("source", F.lit(source))
        for ranking, source in ((rankings.fallback, rankings.fallback_source), (rankings.every, ALL_ITEMS))
    ]
    catalog = inputs.catalog
    wants_categories = CATEGORY_POPULAR in inputs.fallbacks or serve.new_item_share > 0
    preferences = (
        category_preferences(scope.mine, catalog, favourite_categories)
        if catalog is not None and wants_categories
        else None
    )
    if catalog is not None and preferences is not None and CATEGORY_POPULAR in inputs.fallbacks:
        in_categories = category_popular_candidates(
            preferences, rankings.popularity, catalog, scope.exclusions, scope.fetch
        )
        parts.append(in_categories.withColumn("source", F.lit(CATEGORY_POPULAR)))
    new_slots = 0
    if rankings.new is not None and preferences is not None:
        new_slots = max(1, round(n * serve.new_item_share))
        parts.append(
            new_item_candidates(preferences, rankings.new, scope.exclusions, n).withColumn(
                "source", F.lit(NEW_ITEM)
            )
        )
    return Fallbacks(_union(parts), new_slots)


def _union(parts: list[DataFrame]) -> DataFrame:
    """The parts in the candidate columns (``because_item_id`` null where a source has none)."""
    frames = [
        part.select(
            *[c if c in part.columns else F.lit(None).cast("string").alias(c) for c in CANDIDATE_COLUMNS]
        )
        for part in parts
    ]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def build_lists(
    spark: SparkSession,
    serve: ServeConfig,
    favourite_categories: int,
    inputs: ListInputs,
    fallbacks: Fallbacks | None = None,
) -> DataFrame:
    """N rows per user (user_id, rank, item_id, score, source, because_item_id), rules applied.

    Users with at least ``serve.min_history`` positive interactions with items the model knows
    (and, for ALS, a vector) get the model's rows; everyone's list is then filled from the
    fallback sources, ending with every eligible item, so a list has N rows unless fewer eligible
    items are left to the user after their exclusions (then it has all of them). ``fallbacks``:
    those candidates when the caller already has them (:func:`fallback_candidates` of the same
    inputs), e.g. to score many models on one split.
    """
    scope = _scope(serve, inputs)
    if fallbacks is None:
        fallbacks = _fallback_candidates(spark, serve, favourite_categories, inputs, scope)
    parts = [fallbacks.candidates]
    model = inputs.model
    if model is not None:
        personal = model_candidates(spark, serve, inputs, scope)
        if serve.min_score is not None:
            personal = personal.where(F.col("score") >= serve.min_score)
        parts.insert(0, personal.withColumn("source", F.lit(model.family)))
    candidates = _union(parts)
    if inputs.catalog is not None and serve.max_per_category:
        catalog = inputs.catalog.select("item_id", "category")
        candidates = candidates.join(F.broadcast(catalog), "item_id", "left")
    else:
        candidates = candidates.withColumn("category", F.lit(None).cast("string"))
    return assemble_lists(candidates, serve.top_n, serve.max_per_category, fallbacks.new_item_slots)


def model_candidates(spark: SparkSession, serve: ServeConfig, inputs: ListInputs, scope: _Scope) -> DataFrame:
    """The model's ``fetch`` best eligible items for each user with enough history it knows."""
    model = inputs.model
    assert model is not None
    history = (
        scope.mine.where(F.col("strength") > 0)
        .join(model.known_items(), "item_id")
        .groupBy("user_id")
        .agg(
            F.collect_list("item_id").alias("history"),
            F.collect_list(model.history_weight()).alias("history_weight"),
            F.count(F.lit(1)).alias("known"),
        )
        .where(F.col("known") >= serve.min_history)
    )
    warm = scope.users.join(history, "user_id").join(scope.exclusions, "user_id", "left")
    if model.spec.uses_als:
        vectors = inputs.user_vectors if inputs.user_vectors is not None else model.user_factors
        assert vectors is not None
        warm = warm.join(vectors.select("user_id", "features"), "user_id", "left")
    personal = model.recommend(
        spark,
        warm,
        inputs.eligible,
        scope.fetch,
        serve.users_per_block,
        serve.explain,
        items_per_block=serve.max_items_per_block,
    )
    if not serve.explain:
        personal = personal.withColumn("because_item_id", F.lit(None).cast("string"))
    return personal


def assemble_lists(candidates: DataFrame, n: int, max_per_category: int, new_item_slots: int) -> DataFrame:
    """Each user's final N rows from ranked candidates of several sources.

    ``candidates``: user_id, item_id, rank (within its source), score, source, category,
    because_item_id. Sources are taken in order (the model, category_popular, trending/popular,
    all_items); an item offered twice keeps its first source. With ``max_per_category``,
    candidates beyond a category's cap move behind every other candidate, so the cap holds
    whenever enough other items exist and the list is never short because of it.
    ``new_item_slots`` rows at the end go to new items when there are some (and more when
    nothing else is left). The score is kept non-increasing with rank (scores of different
    sources are not comparable; rank is the order).
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
    frame = frame.withColumns({"_over": over, "_new": F.col("source") == NEW_ITEM})
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
        F.when(F.col("source").isin(*ALL_FAMILIES), F.col("because_item_id")).alias("because_item_id"),
    )

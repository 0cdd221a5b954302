"""A split made ready to score recommenders on: its relevant items, its test users, and the
lists each recommender would serve them, scored per user: in Spark, or on the driver when the
split's training period is small enough (``train.driver_max_pairs``; the same lists and metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.model.candidates.lists import (
    FALLBACK_CHAIN,
    Fallbacks,
    ListInputs,
    build_lists,
    fallback_candidates,
)
from recspark.model.candidates.sources import CATEGORY_POPULAR, POPULAR, item_popularity, user_exclusions
from recspark.model.evaluation.bootstrap import Interval
from recspark.model.evaluation.local_scoring import LocalHoldout, LocalModel
from recspark.model.evaluation.metrics import (
    catalog_metrics,
    metrics_by_k,
    per_user_table,
    popularity_vs_frequency,
    relevant_items,
    summarise,
)
from recspark.model.evaluation.splits import Split
from recspark.model.families.data import TrainingData
from recspark.model.families.model import FittedModel

# The baselines every model is compared with, as the sources a list is built from (the category
# baseline is the fallback chain itself, whichever fill it uses).
BASELINE_SOURCES = {POPULAR: (POPULAR,), CATEGORY_POPULAR: FALLBACK_CHAIN}


@dataclass
class Scored:
    """One recommender's lists scored on the held-out events."""

    name: str
    per_user: pd.DataFrame  # user_id and each ranking metric, sorted by user_id
    metrics: dict[str, float]  # the ranking metrics' means, users, and coverage/novelty if asked
    intervals: dict[str, Interval]
    by_k: list[dict[str, float]] = field(default_factory=list)
    bands: list[dict[str, float]] = field(default_factory=list)

    def values(self, metric: str) -> pd.Series:
        """Per-user values of ``metric`` (``ndcg_at_k`` or ``ndcg``), by user_id."""
        return self.per_user.set_index("user_id")[metric.removesuffix("_at_k")]


class Holdout:
    """Everything about one split that does not depend on the recommender, computed once.

    Built from the session, config, the split and its training data, the catalog and the
    eligible items (six inputs, each needed once here), plus the keyword-only fallback chain."""

    def __init__(
        self,
        spark: SparkSession,
        config: Config,
        split: Split,
        data: TrainingData,
        catalog: DataFrame | None,
        eligible: DataFrame,
        *,
        chain: tuple[str, ...] = FALLBACK_CHAIN,
    ) -> None:
        self.spark = spark
        self.chain = chain  # what fills lists after the model (and is the category baseline)
        self.config = config
        self.split = split
        self.data = data
        self.catalog = catalog
        self.k = config.train.k
        # Lists as long as the metrics look (the serving rules apply as configured).
        self.serve = replace(config.serve, top_n=self.k)
        self.relevant = relevant_items(
            split.test_events, data.interactions, config.interactions, config.serve, split.as_of
        ).persist()
        self.users = self.relevant.select("user_id").distinct().persist()
        self.eligible = (
            eligible.select("item_id")
            .join(data.interactions.select("item_id").distinct(), "item_id")
            .persist()
        )
        # The test users' own rows, which every list built here starts from: joined once.
        self.mine = data.interactions.join(self.users, "user_id").persist()
        self.popularity = item_popularity(data.interactions).persist()
        self._fallbacks: dict[tuple[str, ...], Fallbacks] = {}
        self._local: LocalHoldout | None = None

    def _inputs(self, model: FittedModel | None, chain: tuple[str, ...]) -> ListInputs:
        return ListInputs(
            users=self.users,
            interactions=self.data.interactions,
            users_interactions=self.mine,
            eligible=self.eligible,
            as_of=self.split.as_of,
            catalog=self.catalog,
            model=model,
            fallbacks=chain,
        )

    def fallbacks(self, chain: tuple[str, ...] | None = None) -> Fallbacks:
        """The test users' model-independent candidates of ``chain`` (default: the holdout's),
        computed once per chain and kept."""
        chain = chain or self.chain
        if chain not in self._fallbacks:
            favourites = self.config.train.favourite_categories
            self._fallbacks[chain] = fallback_candidates(
                self.spark, self.serve, favourites, self._inputs(None, chain)
            ).persist()
        return self._fallbacks[chain]

    def lists(self, model: FittedModel | None, fallbacks: tuple[str, ...] | None = None) -> DataFrame:
        """What each test user would be served by ``model`` (None: the fallbacks alone). The
        model-independent candidates are computed once per fallback chain and reused."""
        chain = fallbacks or self.chain
        inputs = self._inputs(model, chain)
        favourites = self.config.train.favourite_categories
        return build_lists(self.spark, self.serve, favourites, inputs, self.fallbacks(chain))

    def score(self, name: str, lists: DataFrame, detail: bool = False) -> Scored:
        """Per-user metrics of ``lists``; ``detail`` adds coverage, novelty and the report's curves."""
        lists = lists.persist()
        try:
            per_user = per_user_table(lists, self.relevant, self.k)
            metrics, intervals = summarise(per_user)
            scored = Scored(name, per_user, metrics, intervals)
            if detail:
                catalog_size = self.data.interactions.select("item_id").distinct().count()
                scored.metrics |= catalog_metrics(lists, self.popularity, catalog_size, self.k)
                scored.by_k = metrics_by_k(lists, self.relevant, self.k)
                scored.bands = popularity_vs_frequency(lists, self.popularity, self.k)
        finally:
            lists.unpersist()
        return scored

    def score_model(self, name: str, model: FittedModel | None, detail: bool = False) -> Scored:
        """:meth:`score` of ``model``'s lists: on the driver when the split is there
        (:meth:`on_driver`), with the same result, else in Spark."""
        local = self.on_driver()
        if local is None:
            return self.score(name, self.lists(model), detail)
        lists = local.lists(None if model is None else LocalModel.of(model), self.chain)
        return scored_on_driver(local, name, lists, detail)

    def score_baseline(self, name: str, detail: bool = False) -> Scored:
        sources = self.chain if name == CATEGORY_POPULAR else BASELINE_SOURCES[name]
        local = self.on_driver(sources)
        if local is None:
            return self.score(name, self.lists(None, sources), detail)
        return scored_on_driver(local, name, local.lists(None, sources), detail)

    def on_driver(self, *chains: tuple[str, ...]) -> LocalHoldout | None:
        """This split on the driver (:class:`LocalHoldout`), with the fallback candidates of its
        chain and of ``chains``, when its training period has at most ``train.driver_max_pairs``
        positive pairs; None when it has more. Collected once; each chain when first asked."""
        if self.data.positives > self.config.train.driver_max_pairs:
            return None
        if self._local is None:
            self._local = self._collect()
        for chain in dict.fromkeys((self.chain, *chains)):
            if chain not in self._local.fallbacks:
                found = self.fallbacks(chain)
                candidates = found.candidates.select("user_id", "item_id", "rank", "source").toPandas()
                self._local.fallbacks[chain] = (candidates, found.new_item_slots)
        return self._local

    def _collect(self) -> LocalHoldout:
        serve, data = self.serve, self.data
        pairs = data.interactions.where(F.col("strength") > 0).select(
            "user_id", "item_id", F.col("strength").cast("double").alias("strength")
        )
        exclusions = user_exclusions(serve, self.mine, self.split.as_of)
        categories = None
        if self.catalog is not None and serve.max_per_category:
            catalog = self.catalog.select("item_id", "category").toPandas()
            categories = catalog.drop_duplicates("item_id").set_index("item_id")["category"]
        return LocalHoldout(
            users=np.sort(self.users.toPandas()["user_id"].to_numpy(dtype=object)),
            pairs=pairs.toPandas(),
            excluded=exclusions.select("user_id", F.explode("exclude").alias("item_id")).toPandas(),
            eligible=np.sort(self.eligible.toPandas()["item_id"].to_numpy(dtype=object)),
            fallbacks={},
            relevant=self.relevant.select("user_id", "item_id").toPandas(),
            serve=serve,
            k=self.k,
            confidence=self.config.train.confidence,
            chain=self.chain,
            catalog_size=data.interactions.select("item_id").distinct().count(),
            categories=categories,
        )

    def unpersist(self) -> None:
        for frame in (self.relevant, self.users, self.popularity, self.eligible, self.mine):
            frame.unpersist()
        for fallbacks in self._fallbacks.values():
            fallbacks.unpersist()


def scored_on_driver(local: LocalHoldout, name: str, lists: pd.DataFrame, detail: bool = False) -> Scored:
    """:meth:`Holdout.score` of lists built on the driver (user_id, rank, item_id)."""
    per_user = local.per_user(lists)
    metrics, intervals = summarise(per_user)
    scored = Scored(name, per_user, metrics, intervals)
    if detail:
        scored.metrics |= local.catalog_metrics(lists)
        scored.by_k = local.metrics_by_k(lists)
        scored.bands = local.bands(lists)
    return scored


def metrics_of(scored: Scored, prefix: str = "") -> dict[str, float]:
    """``scored``'s metrics as MLflow names (``ndcg_at_k``, ``popular_test_users``...), with the
    bootstrap interval of each ranking metric (``..._ci_low`` / ``..._ci_high``)."""
    named = {
        (f"{prefix}test_users" if key == "users" else f"{prefix}{key}_at_k"): value
        for key, value in scored.metrics.items()
    }
    for metric, interval in scored.intervals.items():
        named[f"{prefix}{metric}_at_k_ci_low"] = interval.low
        named[f"{prefix}{metric}_at_k_ci_high"] = interval.high
    return named


def test_user_count(holdout: Holdout) -> int:
    return int(holdout.users.agg(F.count(F.lit(1))).collect()[0][0])

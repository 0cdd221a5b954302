"""A split made ready to score recommenders on: its relevant items, its test users, and the
lists each recommender would serve them, scored per user."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
from recspark.model.candidates.sources import CATEGORY_POPULAR, POPULAR, item_popularity
from recspark.model.evaluation.bootstrap import Interval
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
        self.eligible = eligible.select("item_id").join(
            data.interactions.select("item_id").distinct(), "item_id"
        )
        self.popularity = item_popularity(data.interactions).persist()
        self._fallbacks: dict[tuple[str, ...], Fallbacks] = {}

    def _inputs(self, model: FittedModel | None, chain: tuple[str, ...]) -> ListInputs:
        return ListInputs(
            users=self.users,
            interactions=self.data.interactions,
            eligible=self.eligible,
            as_of=self.split.as_of,
            catalog=self.catalog,
            model=model,
            fallbacks=chain,
        )

    def lists(self, model: FittedModel | None, fallbacks: tuple[str, ...] | None = None) -> DataFrame:
        """What each test user would be served by ``model`` (None: the fallbacks alone). The
        model-independent candidates are computed once per fallback chain and reused."""
        chain = fallbacks or self.chain
        favourites = self.config.train.favourite_categories
        if chain not in self._fallbacks:
            self._fallbacks[chain] = fallback_candidates(
                self.spark, self.serve, favourites, self._inputs(None, chain)
            ).persist()
        inputs = self._inputs(model, chain)
        return build_lists(self.spark, self.serve, favourites, inputs, self._fallbacks[chain])

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
        return self.score(name, self.lists(model), detail)

    def score_baseline(self, name: str, detail: bool = False) -> Scored:
        sources = self.chain if name == CATEGORY_POPULAR else BASELINE_SOURCES[name]
        return self.score(name, self.lists(None, sources), detail)

    def unpersist(self) -> None:
        for frame in (self.relevant, self.users, self.popularity):
            frame.unpersist()
        for fallbacks in self._fallbacks.values():
            fallbacks.unpersist()


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

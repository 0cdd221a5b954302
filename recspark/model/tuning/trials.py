"""How tuning fits and scores its trials: on the driver when the validation period is small, in
Spark when it is not. Both runners offer the same steps, so the search (:mod:`recspark.model.tuning.search`)
is one algorithm whichever runs them.

- :class:`LocalTrials` (the validation holdout is on the driver: at most
  ``train.driver_max_pairs`` positive pairs in its training period): ALS by
  :mod:`recspark.model.families.local_als` (MLlib's objective; a fit can be continued, so trials are
  warm-started), EASE weights from the pairs already collected, every list scored by
  :class:`~recspark.model.evaluation.local_scoring.LocalHoldout`. No Spark job per trial.
- :class:`SparkTrials` (larger periods): MLlib's ALS, fitted from scratch per trial, and the
  Spark path's lists (:class:`~recspark.model.evaluation.holdout.Holdout`).

EASE's λ grid comes from one Gram matrix per signal in both (:meth:`ItemGram.similarity_path`).
Each runner also states what its steps cost per unit of work before any was measured (the
budget's priors): measured on 2 cores (docs/benchmarks.md) and set a few times higher.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy import sparse

from recspark.core.config import Config
from recspark.model.evaluation.holdout import Holdout, Scored, scored_on_driver
from recspark.model.evaluation.local_scoring import LocalHoldout, LocalModel, preference_of
from recspark.model.families.als import preference
from recspark.model.families.ease import ItemGram, similarity_frame
from recspark.model.families.local_als import ImplicitALS, Ratings
from recspark.model.families.model import BLEND, FittedModel, ModelSpec, fit_model
from recspark.model.scoring.weights import ItemWeights
from recspark.model.tuning.budget import Cost

# Budget priors, seconds per unit of work (see the module docstring).
LOCAL_ALS_PER_UNIT = 2e-8  # per iteration x (pairs + users + items) x rank²
EASE_FIT_PER_UNIT = 2e-10  # per modelled item³: one λ's inverse, weights and strongest
DECOMPOSITION_PER_UNIT = 7e-10  # per modelled item³: the Gram's eigendecomposition (long grids)
LOCAL_SCORE_PER_UNIT = 5e-7  # per validation user x eligible item
SPARK_ALS_PER_UNIT = 5e-9  # MLlib: per iteration x positive pairs x rank²
SPARK_SCORE_PER_UNIT = 2.5e-7  # the Spark path's lists: per validation user x eligible item
SPARK_SCORE_LEAST = 30.0  # ... and its jobs' own cost, whatever the size


class LocalTrials:
    """Trials on the driver, from what :meth:`LocalHoldout.collect` brought there once."""

    warm_starts = True

    def __init__(self, config: Config, local: LocalHoldout) -> None:
        self.config = config
        self.local = local
        pairs = local.pairs
        rows, user_ids = pd.factorize(pairs["user_id"].to_numpy(dtype=object), sort=True)
        columns, item_ids = pd.factorize(pairs["item_id"].to_numpy(dtype=object), sort=True)
        values = preference_of(pairs["strength"].to_numpy(np.float64), config.train.confidence)
        matrix = sparse.csr_matrix(
            (values.astype(np.float32), (rows, columns)), shape=(len(user_ids), len(item_ids))
        )
        self.ratings = Ratings.of(
            np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object), matrix
        )
        self._grams: dict[str, ItemGram] = {}

    # Sizes, for the budget.
    def als_cost(self, rank: int, iterations: int) -> Cost:
        ratings = self.ratings
        size = ratings.by_user.nnz + len(ratings.user_ids) + len(ratings.item_ids)
        return Cost("als fit", iterations * size * rank**2, LOCAL_ALS_PER_UNIT)

    def score_cost(self, family: str) -> Cost:
        cells = len(self.local.users) * max(len(self.local.eligible), 1)
        return Cost(f"score {family}", cells, LOCAL_SCORE_PER_UNIT)

    def score(self, name: str, model: LocalModel | None) -> Scored:
        return scored_on_driver(self.local, name, self.local.lists(model))

    def score_fallback(self, chain: tuple[str, ...]) -> Scored:
        return scored_on_driver(self.local, f"fallback-{chain[-1]}", self.local.lists(None, chain))

    def use_chain(self, chain: tuple[str, ...]) -> None:
        self.local.chain = chain

    def gram(self, signal: str) -> ItemGram:
        """The modelled items' co-occurrences with ``signal``'s weights (computed once)."""
        if signal not in self._grams:
            pairs = self.local.pairs
            weight = (
                preference_of(pairs["strength"].to_numpy(np.float64), self.config.train.confidence)
                if signal == "preference"
                else np.ones(len(pairs))
            )
            ease = self.config.ease
            self._grams[signal] = ItemGram.from_pairs(
                pairs[["user_id", "item_id"]].assign(weight=weight), ease.max_items, ease.min_item_users
            )
        return self._grams[signal]

    def ease_models(self, specs: list[ModelSpec]) -> Iterator[tuple[ModelSpec, LocalModel]]:
        """Each spec's model (one signal), in order, from one decomposition of its Gram."""
        gram = self.gram(specs[0].ease_signal)
        path = gram.similarity_path([s.ease_l2 for s in specs], self.config.ease.neighbours)
        for spec, (_, frame) in zip(specs, path, strict=True):
            yield spec, LocalModel(spec, weights=ItemWeights.from_frame(frame))

    def als_model(
        self, spec: ModelSpec, iterations: int, fit: ImplicitALS | None
    ) -> tuple[ImplicitALS, LocalModel]:
        """``spec``'s fit continued to ``iterations`` (started afresh when ``fit`` is None)."""
        settings = spec.als
        if fit is None:
            fit = ImplicitALS.start(
                self.ratings, settings.rank, settings.reg_param, settings.alpha, settings.seed
            )
        fit.run(iterations - fit.iterations)
        model = LocalModel(
            spec,
            user_ids=self.ratings.user_ids,
            user_factors=fit.user_factors,
            item_ids=self.ratings.item_ids,
            item_factors=fit.item_factors,
        )
        return fit, model

    def blend(self, spec: ModelSpec, als: LocalModel, ease: LocalModel) -> LocalModel:
        return replace(als, spec=spec, weights=ease.weights)

    def release(self, model: LocalModel | FittedModel) -> None:
        """Nothing to free: the arrays go with the last reference."""

    def close(self) -> None:
        self._grams.clear()


class SparkTrials:
    """Trials in Spark: MLlib's ALS from scratch per trial, the Spark path's lists."""

    warm_starts = False

    def __init__(self, spark: SparkSession, config: Config, holdout: Holdout) -> None:
        self.spark = spark
        self.config = config
        self.holdout = holdout

    def als_cost(self, rank: int, iterations: int) -> Cost:
        return Cost("als fit", iterations * self.holdout.data.positives * rank**2, SPARK_ALS_PER_UNIT)

    def score_cost(self, family: str) -> Cost:
        """One unit per scoring: every trial scores the same users against the same items."""
        return Cost(f"score {family}", 1, self._score_prior)

    @functools.cached_property
    def _score_prior(self) -> float:
        cells = self.holdout.split.test_users * self.holdout.eligible.count()
        return max(SPARK_SCORE_LEAST, cells * SPARK_SCORE_PER_UNIT)

    def score(self, name: str, model: FittedModel | None) -> Scored:
        return self.holdout.score_model(name, model)

    def score_fallback(self, chain: tuple[str, ...]) -> Scored:
        return self.holdout.score(f"fallback-{chain[-1]}", self.holdout.lists(None, chain))

    def use_chain(self, chain: tuple[str, ...]) -> None:
        self.holdout.chain = chain

    def gram(self, signal: str) -> ItemGram:
        weight = preference(self.config.train) if signal == "preference" else F.lit(1.0)
        return self.holdout.data.gram(self.spark, self.config.ease, weight, signal)

    def ease_models(self, specs: list[ModelSpec]) -> Iterator[tuple[ModelSpec, FittedModel]]:
        gram = self.gram(specs[0].ease_signal)
        path = gram.similarity_path([s.ease_l2 for s in specs], self.config.ease.neighbours)
        for spec, (_, frame) in zip(specs, path, strict=True):
            model = FittedModel(spec, similarity=similarity_frame(self.spark, frame), local_similarity=frame)
            yield spec, model.persist()

    def als_model(self, spec: ModelSpec, iterations: int, fit: None) -> tuple[None, FittedModel]:
        """A fresh MLlib fit of ``iterations`` (MLlib takes no initial factors)."""
        settings = replace(spec, als=replace(spec.als, max_iter=iterations))
        return None, fit_model(self.spark, settings, self.holdout.data, self.config.ease)

    def blend(self, spec: ModelSpec, als: FittedModel, ease: FittedModel) -> FittedModel:
        return FittedModel(
            spec,
            als.user_factors,
            als.item_factors,
            ease.similarity,
            local_similarity=ease.local_similarity,
            prepared_weights=ease.prepared_weights,  # built once, for every blend weight
        )

    def release(self, model: LocalModel | FittedModel) -> None:
        if isinstance(model, FittedModel) and model.family != BLEND:  # a blend's frames are its halves'
            model.unpersist()

    def close(self) -> None:
        """The holdout's data keeps the Grams; the caller releases it."""


Trials = LocalTrials | SparkTrials

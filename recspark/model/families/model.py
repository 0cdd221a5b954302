"""The model families recspark trains, one way to fit, score, store and load each.

- ``als``: MLlib implicit ALS; a user is a factor vector (folded in between retrains).
- ``ease``: item-item EASE weights; a user is their history (no fold-in needed).
- ``blend``: both, mixing each user's standardised scores by ``blend_weight`` (ALS's share).

A fitted model is a set of DataFrames (factors, item-item weights) rather than an MLlib object,
so evaluation, the full publish and the refresh job score every family through one door
(:meth:`FittedModel.recommend`), and serving reads a version's data from the lake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pandas as pd
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.config.model import EaseConfig, TrainConfig
from recspark.core.tables import (
    ALS_ITEM_FACTORS,
    ALS_USER_FACTORS,
    ITEM_SIMILARITY,
    Lake,
    TableSpec,
    model_version_rows,
)
from recspark.model.families.als import als_ratings, factor_tables, fit_als, preference
from recspark.model.families.data import TrainingData
from recspark.model.families.ease import similarity_frame
from recspark.model.scoring.als import recommend_top_n
from recspark.model.scoring.item_item import recommend_item_item
from recspark.model.scoring.weights import ItemWeights

ALS = "als"
EASE = "ease"
BLEND = "blend"
ALL_FAMILIES = (ALS, EASE, BLEND)
ALS_PARAMS = ("rank", "reg_param", "alpha", "max_iter", "confidence")


@dataclass(frozen=True)
class ModelSpec:
    """What to fit: the family and the settings it uses."""

    family: str
    als: TrainConfig = field(default_factory=TrainConfig)
    ease_l2: float = 300.0
    ease_signal: str = "preference"  # what the item-item X holds: preference | binary
    blend_weight: float = 0.5  # ALS's share of a blend

    @property
    def uses_als(self) -> bool:
        return self.family in (ALS, BLEND)

    @property
    def uses_item_item(self) -> bool:
        return self.family in (EASE, BLEND)

    def params(self) -> dict[str, str | int | float]:
        """The settings that define this model (logged, stored by tuning, compared for promotion)."""
        params: dict[str, str | int | float] = {"family": self.family}
        if self.uses_als:
            params |= {name: getattr(self.als, name) for name in ALS_PARAMS}
        if self.uses_item_item:
            params["ease_l2"] = self.ease_l2
            params["ease_signal"] = self.ease_signal
        if self.family == BLEND:
            params["blend_weight"] = self.blend_weight
        return params

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params().items())

    @classmethod
    def from_params(cls, params: Mapping[str, str | int | float], config: Config) -> ModelSpec:
        """A spec from logged or stored params (strings or numbers); the config fills the rest.

        Runs logged before model families existed have no ``family``: they were ALS."""
        family = str(params.get("family", ALS))
        if family not in ALL_FAMILIES:
            raise ValueError(f"unknown model family {family!r}")
        base = config.train
        als = replace(
            base,
            **{name: type(getattr(base, name))(params[name]) for name in ALS_PARAMS if name in params},
        )
        return cls(
            family=family,
            als=als,
            ease_l2=float(params.get("ease_l2", config.ease.l2)),
            ease_signal=str(params.get("ease_signal", config.ease.signal)),
            blend_weight=float(params.get("blend_weight", 0.5)),
        )


@dataclass
class FittedModel:
    spec: ModelSpec
    user_factors: DataFrame | None = None  # user_id, features
    item_factors: DataFrame | None = None  # item_id, features
    similarity: DataFrame | None = None  # item_id, similar_item_id, weight
    als_model: ALSModel | None = None  # right after fitting only: what MLflow logs
    # Right after fitting only: the weights on the driver, so scoring need not collect them back.
    local_similarity: pd.DataFrame | None = None
    # The weights as scoring needs them, built on the first call that scores: once per model.
    prepared_weights: ItemWeights | None = field(default=None, repr=False)

    @property
    def family(self) -> str:
        return self.spec.family

    def known_items(self) -> DataFrame:
        """Items a user's history can speak through (item_id)."""
        parts = []
        if self.item_factors is not None:
            parts.append(self.item_factors.select("item_id"))
        if self.similarity is not None:
            parts.append(self.similarity.select("item_id"))
        known = parts[0]
        for part in parts[1:]:
            known = known.unionByName(part)
        return known.distinct()

    def similarity_on_driver(self) -> pd.DataFrame:
        """The item-item weights (item_id, similar_item_id, weight) as pandas: as EASE left them
        on the driver right after fitting, else collected from ``similarity`` (a model read back
        from its tables)."""
        assert self.similarity is not None
        if self.local_similarity is not None:
            return self.local_similarity
        return self.similarity.select("item_id", "similar_item_id", "weight").toPandas()

    def item_weights(self) -> ItemWeights:
        """The weights as a sparse matrix, built on the first call and kept for the life of the
        model: a refresh stream scores with the same champion batch after batch."""
        if self.prepared_weights is None:
            self.prepared_weights = ItemWeights.from_frame(self.similarity_on_driver())
        return self.prepared_weights

    @property
    def weighted_history(self) -> bool:
        """Whether a user's history enters item-item scoring with its preference (else as 1s)."""
        return self.spec.ease_signal == "preference"

    def history_weight(self) -> F.Column:
        """What each history item weighs: the preference signal, or 1 for a binary item-item model."""
        if self.spec.uses_als or self.weighted_history:
            return preference(self.spec.als).cast("double")
        return F.lit(1.0).cast("double")

    def recommend(
        self,
        spark: SparkSession,
        users: DataFrame,
        eligible: DataFrame,
        n: int,
        users_per_block: int,
        explain: bool,
        items_per_block: int | None = None,
    ) -> DataFrame:
        """Top-n eligible items per user: ``users`` has user_id, history, history_weight,
        exclude and (for ALS and blends) the user's ``features``, null when they have none.

        ``items_per_block`` bounds the item vectors ALS and a blend's ALS half score against at
        once; item-item weights, and the items EASE scores, are bounded by ``ease.max_items``."""
        if self.family == ALS:
            assert self.item_factors is not None
            items = self.item_factors.join(eligible, "item_id")
            with_vector = users.where(F.col("features").isNotNull())
            return recommend_top_n(
                spark,
                with_vector,
                items,
                n,
                users_per_block,
                explain=explain,
                items_per_block=items_per_block,
            )
        similarity = self.item_weights()  # once per model, for both halves of a blend
        targets = eligible.select("item_id")
        if self.family == EASE:
            return recommend_item_item(
                spark,
                users,
                similarity,
                targets,
                n,
                users_per_block=users_per_block,
                explain=explain,
                weighted=self.weighted_history,
            )
        assert self.item_factors is not None
        items = self.item_factors.join(eligible, "item_id")
        blended = recommend_item_item(
            spark,
            users.where(F.col("features").isNotNull()),
            similarity,
            items,
            n,
            users_per_block=users_per_block,
            explain=explain,
            als_weight=self.spec.blend_weight,
            weighted=self.weighted_history,
            items_per_block=items_per_block,
        )
        # Users with no ALS vector yet still have a history: the item-item half speaks for them.
        history_only = recommend_item_item(
            spark,
            users.where(F.col("features").isNull()).drop("features"),
            similarity,
            targets,
            n,
            users_per_block=users_per_block,
            explain=explain,
            weighted=self.weighted_history,
        )
        return blended.unionByName(history_only)

    def persist(self) -> FittedModel:
        for frame in (self.user_factors, self.item_factors, self.similarity):
            if frame is not None:
                frame.persist()
        return self

    def unpersist(self) -> None:
        for frame in (self.user_factors, self.item_factors, self.similarity):
            if frame is not None:
                frame.unpersist()


def fit_model(spark: SparkSession, spec: ModelSpec, data: TrainingData, ease: EaseConfig) -> FittedModel:
    """Fit ``spec`` on ``data``; the returned model's DataFrames are persisted (unpersist when done)."""
    model = FittedModel(spec)
    if spec.uses_als:
        model.als_model = fit_als(
            als_ratings(data.interactions, data.user_ids, data.item_ids, spec.als), spec.als
        )
        model.user_factors, model.item_factors = factor_tables(model.als_model, data.user_ids, data.item_ids)
    if spec.uses_item_item:
        weight = preference(spec.als) if spec.ease_signal == "preference" else F.lit(1.0)
        gram = data.gram(spark, ease, weight, spec.ease_signal)
        model.local_similarity = gram.similarity(spec.ease_l2, ease.neighbours)
        model.similarity = similarity_frame(spark, model.local_similarity)
    return model.persist()


# --------------------------------------------------------------------------------------------
# A model version's data in the lake


def write_model_tables(
    spark: SparkSession, lake: Lake, model: FittedModel, model_name: str, version: str, run_id: str
) -> None:
    """Keep a model version's factors and item-item weights as Delta tables (one partition per
    version, keyed by model name too), so serving and analysts use them without MLlib."""
    frames: list[tuple[TableSpec, DataFrame | None]] = [
        (ALS_USER_FACTORS, model.user_factors),
        (ALS_ITEM_FACTORS, model.item_factors),
        (ITEM_SIMILARITY, model.similarity),
    ]
    for spec, frame in frames:
        if frame is None:
            continue
        lake.ensure(spark, spec)
        key = f"model_version = '{version}' AND (model_name IS NULL OR model_name = '{model_name}')"
        (
            frame.select(
                *frame.columns,
                F.lit(version).alias("model_version"),
                F.lit(run_id).alias("run_id"),
                F.current_timestamp().alias("created_at"),
                F.lit(model_name).alias("model_name"),
            )
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", key)
            .save(lake.path(spec.name))
        )


def read_model_tables(
    spark: SparkSession, lake: Lake, spec: ModelSpec, model_name: str, version: str
) -> FittedModel:
    """A registered version's scoring data from the lake (written by `train`)."""
    model = FittedModel(spec)

    def part(table: TableSpec, *columns: str) -> DataFrame:
        return lake.read(spark, table).where(model_version_rows(model_name, version)).select(*columns)

    if spec.uses_als:
        model.user_factors = part(ALS_USER_FACTORS, "user_id", "features")
        model.item_factors = part(ALS_ITEM_FACTORS, "item_id", "features")
    if spec.uses_item_item:
        model.similarity = part(ITEM_SIMILARITY, "item_id", "similar_item_id", "weight")
    return model

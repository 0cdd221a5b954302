"""Lists built and scored on the driver: a split's evaluation without a Spark job per model.

Every model scored on a split is scored on the same test users, and most of what their lists are
made of does not depend on the model: who the users are, what they interacted with, what they are
never shown, the fallback candidates, what counts as relevant. The Spark path
(:class:`~recspark.model.evaluation.holdout.Holdout`) computes those once and, when the split's training
period is small enough (``train.driver_max_pairs``), brings them to the driver as a
:class:`LocalHoldout`, with the period's positive pairs (what tuning's trials are fitted on). A
model's candidates are then scored by the kernels the Spark path's workers run
(:func:`~recspark.model.scoring.selection.top_n_scores`, the item-item scatter, the blend's z-scores), on the
same item columns, the lists assembled by the rules of :func:`~recspark.model.candidates.lists.assemble_lists`
and scored as :mod:`~recspark.model.evaluation.metrics` scores them (per-user metrics, coverage and
novelty, the metrics at every cutoff, the popularity bands). So the driver reports what the Spark
path would (tests/model/test_tuning.py holds the two side by side), for a few NumPy products instead
of a pipeline of Spark jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from recspark.core.config.model import RANKING_METRICS
from recspark.core.config.serving import ServeConfig
from recspark.model.candidates.lists import SEGMENTS
from recspark.model.candidates.sources import NEW_ITEM
from recspark.model.evaluation.metrics import EvaluationError
from recspark.model.families.model import BLEND, EASE, FittedModel, ModelSpec
from recspark.model.scoring.blend import blend_into
from recspark.model.scoring.factors import FactorMoments, collect_factors, row_moments
from recspark.model.scoring.item_item import scatter_scores
from recspark.model.scoring.selection import (
    ROWS_PER_PRODUCT,
    selection_width,
    single_threaded_blas,
    top_n_scores,
)
from recspark.model.scoring.weights import ItemWeights

ROW_COLUMNS = ["user_id", "rank", "item_id", "score"]


@dataclass
class LocalModel:
    """A trial's model on the driver: ALS factors (rows as the sorted id arrays), item-item
    weights, or both for a blend."""

    spec: ModelSpec
    user_ids: np.ndarray | None = None
    user_factors: np.ndarray | None = None  # float32
    item_ids: np.ndarray | None = None
    item_factors: np.ndarray | None = None  # float32
    weights: ItemWeights | None = None

    @classmethod
    def of(cls, model: FittedModel) -> LocalModel:
        """A model fitted in Spark, on the driver: its factors collected, its weights prepared."""
        local = cls(model.spec)
        if model.user_factors is not None and model.item_factors is not None:
            local.user_ids, local.user_factors = collect_factors(model.user_factors, "user_id")
            local.item_ids, local.item_factors = collect_factors(model.item_factors, "item_id")
        if model.similarity is not None:
            local.weights = model.item_weights()
        return local

    def known_items(self) -> np.ndarray:
        """Items a user's history can speak through, as :meth:`FittedModel.known_items`."""
        parts = [
            p
            for p in (self.item_ids, None if self.weights is None else self.weights.sources)
            if p is not None
        ]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=object)


def preference_of(strength: np.ndarray, confidence: str) -> np.ndarray:
    """What ALS sees for a pair (float64), as :func:`recspark.model.families.als.preference`."""
    return np.log1p(strength) if confidence == "log" else np.asarray(strength, dtype=np.float64)


@dataclass
class LocalHoldout:
    """What every model's lists on one split share, on the driver (see the module); built by
    :meth:`Holdout.on_driver`, which adds each fallback chain's candidates when first asked."""

    users: np.ndarray  # the validation users with a relevant item, sorted
    pairs: pd.DataFrame  # user_id, item_id, strength: every positive pair of the training period
    excluded: pd.DataFrame  # user_id, item_id: never recommended to that user
    eligible: np.ndarray  # item ids that may be recommended, sorted
    # fallback chain -> its candidates (user_id, item_id, rank, source) and the new-item slots
    fallbacks: dict[tuple[str, ...], tuple[pd.DataFrame, int]]
    relevant: pd.DataFrame  # user_id, item_id
    serve: ServeConfig  # with top_n = k
    k: int
    confidence: str  # train.confidence: how strength becomes preference
    chain: tuple[str, ...]  # the fallback chain lists are filled from (the holdout's)
    catalog_size: int  # items of the training period (coverage's denominator)
    categories: pd.Series | None = None  # item_id -> category, when a category cap applies
    history: pd.DataFrame = field(init=False)  # the users' rows of ``pairs``

    def __post_init__(self) -> None:
        self.history = self.pairs[self.pairs["user_id"].isin(self.users)].reset_index(drop=True)

    @property
    def fetch(self) -> int:
        """Candidates per user from the model: more than N when a rule may discard some."""
        rules = self.serve.max_per_category > 0 or self.serve.min_score is not None
        return self.serve.top_n * self.serve.overfetch if rules else self.serve.top_n

    # ----------------------------------------------------------------------------------------
    # Lists

    def lists(self, model: LocalModel | None, chain: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Each validation user's N rows (user_id, rank, item_id), as :func:`build_lists` builds
        them, filled from ``chain`` (default: :attr:`chain`)."""
        fallbacks, new_item_slots = self.fallbacks[chain or self.chain]
        parts = [fallbacks]
        if model is not None:
            personal = self.model_rows(model)
            if self.serve.min_score is not None:
                personal = personal[personal["score"] >= self.serve.min_score]
            parts.insert(0, personal.drop(columns="score").assign(source=model.spec.family))
        candidates = pd.concat(parts, ignore_index=True)
        if self.categories is not None:
            candidates["category"] = candidates["item_id"].map(self.categories)
        else:
            candidates["category"] = None
        return assemble(candidates, self.serve.top_n, self.serve.max_per_category, new_item_slots)

    def model_rows(self, model: LocalModel) -> pd.DataFrame:
        """The model's ``fetch`` best eligible items (user_id, rank, item_id, score) for each
        validation user with at least ``serve.min_history`` positive pairs with items it knows."""
        history = self.history[self.history["item_id"].isin(model.known_items())]
        counts = history.groupby("user_id").size()
        warm = np.sort(counts.index[counts >= self.serve.min_history].to_numpy(dtype=object))
        history = history[history["user_id"].isin(warm)]
        parts = []
        if model.spec.uses_als:
            assert model.user_ids is not None
            has_vector = pd.Index(warm).isin(model.user_ids)
            with_vector = warm[has_vector]
            if model.spec.family == BLEND:
                parts.append(self._blend_rows(model, with_vector, history))
                parts.append(self._item_item_rows(model, warm[~has_vector], history))
            else:
                parts.append(self._als_rows(model, with_vector))
        if model.spec.family == EASE:
            parts.append(self._item_item_rows(model, warm, history))
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ROW_COLUMNS)

    def _eligible_factors(self, model: LocalModel) -> tuple[np.ndarray, np.ndarray]:
        """The eligible items with ALS factors, sorted by id, and their factors."""
        assert model.item_ids is not None and model.item_factors is not None
        order = np.argsort(model.item_ids, kind="stable")
        ids, factors = model.item_ids[order], model.item_factors[order]
        keep = pd.Index(ids).isin(self.eligible)
        return ids[keep], factors[keep]

    def _user_vectors(self, model: LocalModel, users: np.ndarray) -> np.ndarray:
        assert model.user_ids is not None and model.user_factors is not None
        return model.user_factors[pd.Index(model.user_ids).get_indexer(pd.Index(users))]

    def _als_rows(self, model: LocalModel, users: np.ndarray) -> pd.DataFrame:
        """As :func:`recommend_top_n` scores a user's vector against the eligible items' factors."""
        item_ids, factors = self._eligible_factors(model)
        if len(users) == 0 or len(item_ids) == 0:
            return pd.DataFrame(columns=ROW_COLUMNS)
        real, width = len(item_ids), selection_width(len(item_ids), self.fetch)
        item_matrix = np.zeros((width, factors.shape[1]), dtype=np.float32)
        item_matrix[:real] = factors
        item_columns = np.ascontiguousarray(item_matrix.T)
        vectors = self._user_vectors(model, users)
        excluded = self._excluded_cells(users, item_ids)

        def scores_of(block: slice, buffer: np.ndarray) -> np.ndarray:
            scores = buffer[: block.stop - block.start]
            np.matmul(vectors[block], item_columns, out=scores)
            scores[:, real:] = -np.inf
            return scores

        return self._top_rows(users, item_ids, width, excluded, scores_of)

    def _history_matrix(
        self, users: np.ndarray, history: pd.DataFrame, sources: np.ndarray, spec: ModelSpec
    ) -> sparse.csr_matrix:
        """The users' histories over ``sources`` (users x sources), weighted by preference when
        the item-item model learned from it, else 1s (as the scorers read ``history_weight``)."""
        rows = pd.Index(users).get_indexer(pd.Index(history["user_id"]))
        columns = pd.Index(sources).get_indexer(pd.Index(history["item_id"]))
        known = (rows >= 0) & (columns >= 0)
        if spec.ease_signal == "preference":
            values = preference_of(history["strength"].to_numpy(np.float64), self.confidence).astype(
                np.float32
            )
        else:
            values = np.ones(len(history), dtype=np.float32)
        matrix = sparse.csr_matrix(
            (values[known], (rows[known], columns[known])), shape=(len(users), len(sources)), dtype=np.float32
        )
        matrix.sort_indices()
        return matrix

    def _item_item_rows(self, model: LocalModel, users: np.ndarray, history: pd.DataFrame) -> pd.DataFrame:
        """As :func:`recommend_item_item` without ALS: the history times the weights, candidates
        only where some history item has a weight."""
        weights = model.weights
        assert weights is not None
        targets = self.eligible[pd.Index(self.eligible).isin(weights.targets)]
        if len(users) == 0 or len(targets) == 0:
            return pd.DataFrame(columns=ROW_COLUMNS)
        width = selection_width(len(targets), self.fetch)
        matrix = weights.towards(targets, width)
        histories = self._history_matrix(users, history, weights.sources, model.spec)
        excluded = self._excluded_cells(users, targets)

        def scores_of(block: slice, buffer: np.ndarray) -> np.ndarray:
            scores = buffer[: block.stop - block.start]
            scatter_scores(histories[block] @ matrix, scores)
            return scores

        return self._top_rows(users, targets, width, excluded, scores_of)

    def _blend_rows(self, model: LocalModel, users: np.ndarray, history: pd.DataFrame) -> pd.DataFrame:
        """As :func:`recommend_item_item` with ALS: both halves' z-scores over every eligible item
        with factors, mixed by ``blend_weight``."""
        weights = model.weights
        assert weights is not None
        item_ids, factors = self._eligible_factors(model)
        if len(users) == 0 or len(item_ids) == 0:
            return pd.DataFrame(columns=ROW_COLUMNS)
        moments = FactorMoments.of(factors)
        real, width = len(item_ids), selection_width(len(item_ids), self.fetch)
        matrix = weights.towards(item_ids, width)
        item_columns = np.ascontiguousarray(factors.T)
        histories = self._history_matrix(users, history, weights.sources, model.spec)
        vectors = self._user_vectors(model, users)
        excluded = self._excluded_cells(users, item_ids)
        als_weight = model.spec.blend_weight

        def scores_of(block: slice, buffer: np.ndarray) -> np.ndarray:
            scores = buffer[: block.stop - block.start]
            scores.fill(0.0)
            (histories[block] @ matrix).toarray(out=scores)
            user_matrix = vectors[block]
            item_moments = row_moments(scores[:, :real], real)
            als = user_matrix @ item_columns
            blend_into(scores[:, :real], als, als_weight, moments.user_moments(user_matrix), item_moments)
            scores[:, real:] = -np.inf
            return scores

        return self._top_rows(users, item_ids, width, excluded, scores_of)

    def _excluded_cells(self, users: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row (ascending) and item column of every excluded item among ``item_ids``."""
        rows = pd.Index(users).get_indexer(pd.Index(self.excluded["user_id"]))
        columns = pd.Index(item_ids).get_indexer(pd.Index(self.excluded["item_id"]))
        known = (rows >= 0) & (columns >= 0)
        order = np.argsort(rows[known], kind="stable")
        return rows[known][order], columns[known][order]

    def _top_rows(
        self,
        users: np.ndarray,
        item_ids: np.ndarray,
        width: int,
        excluded: tuple[np.ndarray, np.ndarray],
        scores_of,
    ) -> pd.DataFrame:
        """Each user's ``fetch`` best finite scores, scored ``ROWS_PER_PRODUCT`` users at a time
        with the excluded cells at -inf, as the Spark path's workers select them."""
        step = min(ROWS_PER_PRODUCT, self.serve.users_per_block)
        buffer = np.empty((step, width), dtype=np.float32)
        excluded_rows, excluded_cols = excluded
        out = []
        with single_threaded_blas():
            for start in range(0, len(users), step):
                block = slice(start, min(start + step, len(users)))
                scores = scores_of(block, buffer)
                first, end = np.searchsorted(excluded_rows, [block.start, block.stop])
                scores[excluded_rows[first:end] - start, excluded_cols[first:end]] = -np.inf
                cols, best = top_n_scores(scores, self.fetch)
                keep = np.isfinite(best)
                rows, ranks = np.nonzero(keep)
                out.append(
                    pd.DataFrame(
                        {
                            "user_id": users[start + rows],
                            "rank": ranks.astype(np.int64) + 1,
                            "item_id": item_ids[cols[keep]],
                            "score": best[keep].astype(np.float64),
                        }
                    )
                )
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=ROW_COLUMNS)

    # ----------------------------------------------------------------------------------------
    # Metrics

    def per_user(self, lists: pd.DataFrame) -> pd.DataFrame:
        """Per-user metrics of ``lists``, as :func:`~recspark.model.evaluation.metrics.per_user_table`."""
        return per_user_table(lists, self.relevant, self.k)

    def popularity(self) -> pd.Series:
        """Users per item with a positive pair (item_popularity), by item_id."""
        return self.pairs.groupby("item_id").size().astype(np.float64)

    def catalog_metrics(self, lists: pd.DataFrame) -> dict[str, float]:
        """Coverage and novelty, as :func:`~recspark.model.evaluation.metrics.catalog_metrics`."""
        popularity = self.popularity()
        total = popularity.sum() or 1.0
        top = lists[lists["rank"] <= self.k]
        seen = top["item_id"].map(popularity).fillna(0.0).to_numpy(np.float64)
        novelty = float(np.mean(-np.log2((seen + 1.0) / (total + 1.0)))) if len(seen) else 0.0
        return {"coverage": top["item_id"].nunique() / max(self.catalog_size, 1), "novelty": novelty}

    def metrics_by_k(self, lists: pd.DataFrame) -> list[dict[str, float]]:
        """The ranking metrics at every cutoff 1..k, as
        :func:`~recspark.model.evaluation.metrics.metrics_by_k`."""
        return [
            {
                "k": float(cutoff),
                **{
                    str(m): float(v)
                    for m, v in per_user_table(lists, self.relevant, cutoff)[list(RANKING_METRICS)]
                    .mean()
                    .items()
                },
            }
            for cutoff in range(1, self.k + 1)
        ]

    def bands(self, lists: pd.DataFrame, buckets: int = 50) -> list[dict[str, float]]:
        """Shares of top-k slots per popularity band, as
        :func:`~recspark.model.evaluation.metrics.popularity_vs_frequency`."""
        popularity = self.popularity()
        if popularity.empty:
            return []
        width = max(1, -(-len(popularity) // buckets))
        ranked = popularity.rename("popularity").rename_axis("item_id").reset_index()
        ranked = ranked.sort_values(["popularity", "item_id"], ascending=[False, True], kind="stable")
        ranked["popularity_rank"] = np.arange(1, len(ranked) + 1)
        top = lists[lists["rank"] <= self.k]
        slots = len(top) or 1
        ranked["times"] = ranked["item_id"].map(top["item_id"].value_counts()).fillna(0).to_numpy()
        ranked["band"] = (ranked["popularity_rank"] - 1) // width
        grouped = ranked.groupby("band").agg(first_rank=("popularity_rank", "min"), times=("times", "sum"))
        return [
            {"first_rank": float(first), "share": float(times) / slots, "band_width": float(width)}
            for first, times in zip(
                grouped.sort_index()["first_rank"].to_numpy(np.float64),
                grouped.sort_index()["times"].to_numpy(np.float64),
                strict=True,
            )
        ]


def assemble(candidates: pd.DataFrame, n: int, max_per_category: int, new_item_slots: int) -> pd.DataFrame:
    """:func:`recspark.model.candidates.lists.assemble_lists` on the driver: each user's N rows (user_id,
    rank, item_id) from ranked candidates (user_id, item_id, rank, source, category)."""
    frame = candidates.assign(_seg=candidates["source"].map(SEGMENTS).fillna(9).astype(int))
    frame = frame.sort_values(["user_id", "item_id", "_seg", "rank"], kind="stable")
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    if max_per_category:
        in_category = frame["category"].notna()
        ordered = frame[in_category].sort_values(["user_id", "category", "_seg", "rank"], kind="stable")
        nth = ordered.groupby(["user_id", "category"], sort=False).cumcount() + 1
        frame["_over"] = False
        frame.loc[nth.index, "_over"] = (nth > max_per_category).to_numpy()
    else:
        frame["_over"] = False
    frame["_new"] = frame["source"] == NEW_ITEM
    frame = frame.sort_values(["user_id", "_new", "_over", "_seg", "rank", "item_id"], kind="stable")
    frame["_g"] = frame.groupby(["user_id", "_new"], sort=False).cumcount() + 1
    counts = frame.groupby(["user_id", "_new"]).size().unstack(fill_value=0)
    main_count = counts[False] if False in counts.columns else pd.Series(0, index=counts.index)
    new_count = counts[True] if True in counts.columns else pd.Series(0, index=counts.index)
    new_take = pd.concat([new_count, (n - main_count).clip(lower=new_item_slots)], axis=1).min(axis=1)
    main_take = pd.concat([main_count, n - new_take], axis=1).min(axis=1)
    take = np.where(frame["_new"], frame["user_id"].map(new_take), frame["user_id"].map(main_take))
    kept = frame[frame["_g"].to_numpy() <= take]
    kept = kept.sort_values(["user_id", "_new", "_g"], kind="stable")
    ranks = kept.groupby("user_id", sort=False).cumcount() + 1
    return pd.DataFrame(
        {
            "user_id": kept["user_id"].to_numpy(),
            "rank": ranks.to_numpy(),
            "item_id": kept["item_id"].to_numpy(),
        }
    )


def per_user_table(lists: pd.DataFrame, relevant: pd.DataFrame, k: int) -> pd.DataFrame:
    """:func:`recspark.model.evaluation.metrics.per_user_table` of lists on the driver: one row per user
    with a relevant item, sorted by user_id; users with no list score zero."""
    top = lists[lists["rank"] <= k][["user_id", "rank", "item_id"]]
    hits = top.merge(relevant, on=["user_id", "item_id"]).sort_values(["user_id", "rank"], kind="stable")
    hits["so_far"] = hits.groupby("user_id", sort=False).cumcount() + 1
    hits["gain"] = 1.0 / np.log2(hits["rank"].to_numpy(np.float64) + 1.0)
    hits["precision_at"] = hits["so_far"] / hits["rank"]
    per_user = hits.groupby("user_id").agg(
        hits=("rank", "size"), dcg=("gain", "sum"), ap_sum=("precision_at", "sum")
    )
    table = relevant.groupby("user_id").size().rename("n_relevant").to_frame().join(per_user, how="left")
    if table.empty:
        raise EvaluationError("no test user has a relevant item: the held-out events are empty")
    table = table.fillna({"hits": 0, "dcg": 0.0, "ap_sum": 0.0})
    n_relevant = table["n_relevant"].to_numpy(np.int64)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))])
    hits_count = table["hits"].to_numpy(np.float64)
    out = pd.DataFrame(
        {
            "user_id": table.index.to_numpy(dtype=object),
            "precision": hits_count / k,
            "recall": hits_count / n_relevant,
            "ndcg": table["dcg"].to_numpy(np.float64) / ideal[np.minimum(n_relevant, k)],
            "map": table["ap_sum"].to_numpy(np.float64) / np.minimum(n_relevant, k),
            "hit_rate": (hits_count > 0).astype(np.float64),
        }
    )
    return out.sort_values("user_id", kind="stable").reset_index(drop=True)

"""Ranking metrics on held-out events, computed in Spark, with bootstrap intervals.

A model only ever sees the events before the held-out ones (:mod:`recspark.model.evaluation.splits`).
What a user interacted with positively in the held-out events — minus what the serving stage
would exclude anyway (items already bought or rated) — is what a good top-K list should contain.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.config.ingest import InteractionsConfig
from recspark.core.config.model import RANKING_METRICS
from recspark.core.config.serving import ServeConfig
from recspark.core.interactions import aggregate_events
from recspark.model.candidates.sources import user_exclusions
from recspark.model.evaluation.bootstrap import Interval, mean_interval


class EvaluationError(ValueError):
    """The data cannot support an honest evaluation (e.g. an empty test period)."""


def relevant_items(
    test_events: DataFrame,
    train_interactions: DataFrame,
    interactions: InteractionsConfig,
    serve: ServeConfig,
    as_of: datetime | None,
) -> DataFrame:
    """(user_id, item_id) pairs a recommender should have surfaced for users it knows: positive
    pairs of the held-out events, minus what serving would never recommend to the user as of
    the end of the training period (bought or rated items, by the serving rules)."""
    positive = aggregate_events(test_events, interactions).where(F.col("strength") > 0)
    known_users = train_interactions.select("user_id").distinct()
    relevant = positive.join(known_users, "user_id").select("user_id", "item_id")
    excluded = user_exclusions(serve, train_interactions, as_of).select(
        "user_id", F.explode("exclude").alias("item_id")
    )
    return relevant.join(excluded, ["user_id", "item_id"], "left_anti")


def _ideal_dcg(n_relevant: F.Column, k: int) -> F.Column:
    return _ideal_dcg_at(n_relevant, F.lit(k))


def _ideal_dcg_at(n_relevant: F.Column, cutoff: F.Column) -> F.Column:
    return F.aggregate(
        F.sequence(F.lit(1), F.least(n_relevant, cutoff)),
        F.lit(0.0),
        lambda acc, i: acc + F.lit(1.0) / F.log2(i + 1),
    )


def per_user_metrics(recommendations: DataFrame, relevant: DataFrame, k: int) -> DataFrame:
    """One row per user with relevant items: precision, recall, ndcg, map, hit_rate at k.

    ``recommendations``: user_id, rank (1 = best), item_id. Users with no list score zero.
    """
    top = recommendations.where(F.col("rank") <= k).select("user_id", "rank", "item_id")
    hits = top.join(relevant, ["user_id", "item_id"]).withColumn(
        "hits_so_far",
        F.row_number().over(Window.partitionBy("user_id").orderBy("rank")),
    )
    per_user_hits = hits.groupBy("user_id").agg(
        F.count("*").alias("hits"),
        F.sum(F.lit(1.0) / F.log2(F.col("rank") + 1)).alias("dcg"),
        F.sum(F.col("hits_so_far") / F.col("rank")).alias("ap_sum"),
    )
    n_relevant = relevant.groupBy("user_id").agg(F.count("*").alias("n_relevant"))
    joined = n_relevant.join(per_user_hits, "user_id", "left").fillna({"hits": 0, "dcg": 0.0, "ap_sum": 0.0})
    return joined.select(
        "user_id",
        (F.col("hits") / F.lit(k)).alias("precision"),
        (F.col("hits") / F.col("n_relevant")).alias("recall"),
        (F.col("dcg") / _ideal_dcg(F.col("n_relevant"), k)).alias("ndcg"),
        (F.col("ap_sum") / F.least(F.col("n_relevant"), F.lit(k))).alias("map"),
        (F.col("hits") > 0).cast("double").alias("hit_rate"),
    )


def per_user_table(recommendations: DataFrame, relevant: DataFrame, k: int) -> pd.DataFrame:
    """:func:`per_user_metrics` on the driver, one row per user sorted by user_id, so two
    recommenders' tables line up user by user (the paired comparisons need that)."""
    table = per_user_metrics(recommendations, relevant, k).toPandas()
    if table.empty:
        raise EvaluationError("no test user has a relevant item: the held-out events are empty")
    return table.sort_values("user_id", kind="stable").reset_index(drop=True)


def summarise(table: pd.DataFrame) -> tuple[dict[str, float], dict[str, Interval]]:
    """Mean ranking metrics (plus ``users``) and each metric's bootstrap interval."""
    intervals = {m: mean_interval(table[m].to_numpy(np.float64)) for m in RANKING_METRICS}
    means = {m: interval.mean for m, interval in intervals.items()}
    return {**means, "users": float(len(table))}, intervals


def ranking_metrics(recommendations: DataFrame, relevant: DataFrame, k: int) -> dict[str, float]:
    """Mean of :func:`per_user_metrics` over all users with relevant items."""
    row = (
        per_user_metrics(recommendations, relevant, k)
        .agg(*[F.avg(m).alias(m) for m in RANKING_METRICS], F.count("*").alias("users"))
        .first()
    )
    if row is None or not row["users"]:
        raise EvaluationError("no test user has a relevant item: the test period is empty")
    return {**{m: float(row[m]) for m in RANKING_METRICS}, "users": float(row["users"])}


def catalog_metrics(
    recommendations: DataFrame, popularity: DataFrame, catalog_size: int, k: int
) -> dict[str, float]:
    """Coverage (share of the catalog recommended to anyone) and novelty (mean self-information
    of recommended items, -log2 of their share of training interactions)."""
    top = recommendations.where(F.col("rank") <= k)
    total = popularity.agg(F.sum("popularity")).collect()[0][0] or 1.0
    scored = top.join(popularity, "item_id", "left").fillna({"popularity": 0.0})
    row = scored.agg(
        F.countDistinct("item_id").alias("distinct_items"),
        F.avg(-F.log2((F.col("popularity") + 1.0) / F.lit(total + 1.0))).alias("novelty"),
    ).collect()[0]
    return {
        "coverage": float(row["distinct_items"]) / max(catalog_size, 1),
        "novelty": float(row["novelty"] or 0.0),
    }


def metrics_by_k(recommendations: DataFrame, relevant: DataFrame, k: int) -> list[dict[str, float]]:
    """The ranking metrics at every cutoff 1..k (the curves of the evaluation report).

    Same definitions as :func:`per_user_metrics`; only k small rows reach the driver. Entry
    ``j - 1`` holds the metrics at cutoff ``j``; at ``j = k`` they equal :func:`ranking_metrics`.
    """
    top = recommendations.where(F.col("rank") <= k).select("user_id", "rank", "item_id")
    hits = top.join(relevant, ["user_id", "item_id"]).withColumn(
        "hits_so_far", F.row_number().over(Window.partitionBy("user_id").orderBy("rank"))
    )
    # A hit at rank r counts for every cutoff j >= r.
    per_cutoff = (
        hits.select("user_id", "rank", "hits_so_far", F.explode(F.sequence("rank", F.lit(k))).alias("cutoff"))
        .groupBy("user_id", "cutoff")
        .agg(
            F.count("*").alias("hits"),
            F.sum(F.lit(1.0) / F.log2(F.col("rank") + 1)).alias("dcg"),
            F.sum(F.col("hits_so_far") / F.col("rank")).alias("ap_sum"),
        )
    )
    grid = (
        relevant.groupBy("user_id")
        .agg(F.count("*").alias("n_relevant"))
        .select("user_id", "n_relevant", F.explode(F.sequence(F.lit(1), F.lit(k))).alias("cutoff"))
    )
    scored = grid.join(per_cutoff, ["user_id", "cutoff"], "left").fillna(
        {"hits": 0, "dcg": 0.0, "ap_sum": 0.0}
    )
    rows = (
        scored.groupBy("cutoff")
        .agg(
            F.avg(F.col("hits") / F.col("cutoff")).alias("precision"),
            F.avg(F.col("hits") / F.col("n_relevant")).alias("recall"),
            F.avg(F.col("dcg") / _ideal_dcg_at(F.col("n_relevant"), F.col("cutoff"))).alias("ndcg"),
            F.avg(F.col("ap_sum") / F.least(F.col("n_relevant"), F.col("cutoff"))).alias("map"),
            F.avg((F.col("hits") > 0).cast("double")).alias("hit_rate"),
        )
        .orderBy("cutoff")
        .collect()
    )
    if not rows:
        raise EvaluationError("no test user has a relevant item: the test period is empty")
    return [{"k": float(r["cutoff"]), **{m: float(r[m]) for m in RANKING_METRICS}} for r in rows]


def popularity_vs_frequency(
    recommendations: DataFrame, popularity: DataFrame, k: int, buckets: int = 50
) -> list[dict[str, float]]:
    """How often items of each popularity band are recommended: items ranked by training
    popularity (1 = most popular) and cut into at most ``buckets`` equal bands; per band, the
    share of all top-k slots its items fill. A flat curve means the long tail gets shelf space.
    """
    n_items = popularity.count()
    if n_items == 0:
        return []
    width = max(1, -(-n_items // buckets))  # ceil: at most `buckets` bands
    ranked = popularity.select(
        "item_id",
        F.row_number().over(Window.orderBy(F.desc("popularity"), "item_id")).alias("popularity_rank"),
    )
    top = recommendations.where(F.col("rank") <= k)
    slots = top.count() or 1
    counts = top.groupBy("item_id").agg(F.count("*").alias("times"))
    rows = (
        ranked.join(counts, "item_id", "left")
        .fillna({"times": 0})
        .groupBy(F.floor((F.col("popularity_rank") - 1) / width).alias("band"))
        .agg(F.min("popularity_rank").alias("first_rank"), F.sum("times").alias("times"))
        .orderBy("band")
        .collect()
    )
    return [
        {"first_rank": float(r["first_rank"]), "share": float(r["times"]) / slots, "band_width": float(width)}
        for r in rows
    ]

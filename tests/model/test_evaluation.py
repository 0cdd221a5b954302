"""Ranking metrics match values worked out by hand."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import SparkSession

from recspark.model.evaluation.metrics import (
    metrics_by_k,
    popularity_vs_frequency,
    ranking_metrics,
)


def test_metrics_match_a_hand_computed_example(spark: SparkSession) -> None:
    # k = 3. User a: recs x, y, z; relevant y, w  -> one hit at rank 2.
    # User b: recs p, q, r; relevant p, r        -> hits at ranks 1 and 3.
    # User c: no recommendations; relevant s     -> zeros.
    recs = spark.createDataFrame(
        [
            ("a", 1, "x"),
            ("a", 2, "y"),
            ("a", 3, "z"),
            ("a", 4, "w"),
            ("b", 1, "p"),
            ("b", 2, "q"),
            ("b", 3, "r"),
        ],
        "user_id string, rank int, item_id string",
    )
    relevant = spark.createDataFrame(
        [("a", "y"), ("a", "w"), ("b", "p"), ("b", "r"), ("c", "s")],
        "user_id string, item_id string",
    )
    got = ranking_metrics(recs, relevant, k=3)

    # precision: a 1/3, b 2/3, c 0 -> mean 1/3
    # recall:    a 1/2, b 2/2, c 0 -> mean 1/2
    # ndcg:      a (1/log2 3) / (1 + 1/log2 3); b (1 + 1/2) / (1 + 1/log2 3); c 0
    idcg2 = 1 + 1 / math.log2(3)
    ndcg_a = (1 / math.log2(3)) / idcg2
    ndcg_b = (1 + 1 / math.log2(4)) / idcg2
    # map:       a (1/2) / 2 = 0.25; b (1/1 + 2/3) / 2 = 5/6; c 0
    # hit rate:  a 1, b 1, c 0 -> 2/3
    assert got["precision"] == pytest.approx(1 / 3)
    assert got["recall"] == pytest.approx(1 / 2)
    assert got["ndcg"] == pytest.approx((ndcg_a + ndcg_b) / 3)
    assert got["map"] == pytest.approx((0.25 + 5 / 6) / 3)
    assert got["hit_rate"] == pytest.approx(2 / 3)
    assert got["users"] == 3


def _hand_example(spark: SparkSession):
    recs = spark.createDataFrame(
        [("a", 1, "x"), ("a", 2, "y"), ("a", 3, "z"), ("b", 1, "p"), ("b", 2, "q"), ("b", 3, "r")],
        "user_id string, rank int, item_id string",
    )
    relevant = spark.createDataFrame(
        [("a", "y"), ("a", "w"), ("b", "p"), ("b", "r"), ("c", "s")], "user_id string, item_id string"
    )
    return recs, relevant


def test_metrics_by_k_are_the_metrics_at_every_cutoff(spark: SparkSession) -> None:
    recs, relevant = _hand_example(spark)
    curve = metrics_by_k(recs, relevant, k=3)
    assert [row["k"] for row in curve] == [1, 2, 3]
    # K = 1: only b's first item (p) is a hit.
    assert curve[0]["precision"] == pytest.approx(1 / 3)
    assert curve[0]["recall"] == pytest.approx((1 / 2) / 3)
    assert curve[0]["ndcg"] == pytest.approx(1 / 3)
    assert curve[0]["map"] == pytest.approx(1 / 3)
    assert curve[0]["hit_rate"] == pytest.approx(1 / 3)
    # K = 2: a's hit at rank 2 counts now: precision (1/2 + 1/2 + 0) / 3.
    assert curve[1]["precision"] == pytest.approx(1 / 3)
    assert curve[1]["hit_rate"] == pytest.approx(2 / 3)
    for j, row in enumerate(curve, start=1):
        expected = ranking_metrics(recs, relevant, k=j)
        for metric in ("precision", "recall", "ndcg", "map", "hit_rate"):
            assert row[metric] == pytest.approx(expected[metric]), (j, metric)


def test_popularity_vs_frequency_counts_slots_per_popularity_band(spark: SparkSession) -> None:
    popularity = spark.createDataFrame(
        [("p", 9.0), ("x", 7.0), ("q", 5.0), ("y", 3.0), ("r", 2.0), ("z", 1.0)],
        "item_id string, popularity double",
    )
    recs, _ = _hand_example(spark)
    # k = 2 -> slots x, y (user a), p, q (user b). Bands of 2 by popularity rank: {p, x}, {q, y}, {r, z}.
    bands = popularity_vs_frequency(recs, popularity, k=2, buckets=3)
    assert [(b["first_rank"], b["share"]) for b in bands] == [(1, 0.5), (3, 0.5), (5, 0.0)]

"""Blocked top-N gives the brute-force answer, honours exclusions and keeps N rows per user."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import SparkSession

from recspark.model.topn import CHUNK, recommend_top_n, top_n_scores


def test_top_n_scores_orders_and_skips_excluded() -> None:
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [1.0, -np.inf, -np.inf, -np.inf]])
    cols, best = top_n_scores(scores, 3)
    assert cols[0].tolist() == [1, 3, 0]
    assert best[0].tolist() == [0.9, 0.5, 0.1]
    assert cols[1][0] == 0 and np.isneginf(best[1][1:]).all()


@pytest.mark.parametrize(
    "n_items",
    [
        40,  # one chunk: the direct partial sort
        2 * 4 * 7 * CHUNK + 13,  # the two-stage selection, with padding to a multiple of CHUNK
    ],
)
def test_blocked_top_n_equals_brute_force(spark: SparkSession, n_items: int) -> None:
    rng = np.random.default_rng(3)
    n_users, rank, n = 57, 6, 7
    user_vectors = rng.normal(size=(n_users, rank)).astype(np.float32)
    item_vectors = rng.normal(size=(n_items, rank)).astype(np.float32)
    exclusions = {
        f"u{u}": [f"i{i}" for i in rng.choice(n_items, size=int(rng.integers(0, 30)), replace=False)]
        for u in range(n_users)
    }
    exclusions["u0"] = [f"i{i}" for i in range(n_items - 3)]  # only 3 eligible items left
    exclusions["u1"] = [*exclusions["u1"], "not-an-item"]
    users = spark.createDataFrame(
        [(f"u{u}", user_vectors[u].tolist(), exclusions[f"u{u}"]) for u in range(n_users)],
        "user_id string, features array<float>, exclude array<string>",
    )
    items = spark.createDataFrame(
        [(f"i{i}", item_vectors[i].tolist()) for i in range(n_items)],
        "item_id string, features array<float>",
    )
    got = recommend_top_n(spark, users, items, n, users_per_block=10).collect()

    by_user: dict[str, list[tuple[int, str, float]]] = {}
    for row in got:
        by_user.setdefault(row["user_id"], []).append((row["rank"], row["item_id"], row["score"]))
    scores = user_vectors.astype(np.float64) @ item_vectors.T.astype(np.float64)
    for u in range(n_users):
        user = f"u{u}"
        excluded = set(exclusions[user])
        expected = sorted(
            ((float(scores[u, i]), f"i{i}") for i in range(n_items) if f"i{i}" not in excluded),
            reverse=True,
        )[:n]
        rows = sorted(by_user.get(user, []))
        assert [r[0] for r in rows] == list(range(1, len(expected) + 1))
        assert [r[1] for r in rows] == [item for _, item in expected]
        np.testing.assert_allclose([r[2] for r in rows], [s for s, _ in expected], rtol=1e-4)
        assert not excluded & {r[1] for r in rows}
    assert len(by_user["u0"]) == 3
    assert all(
        len(by_user[f"u{u}"]) == n for u in range(2, n_users) if len(exclusions[f"u{u}"]) <= n_items - n
    )


def test_two_stage_selection_equals_full_partial_sort_with_masked_items() -> None:
    rng = np.random.default_rng(5)
    for trial in range(10):
        scores = rng.normal(size=(30, 16 * 24)).astype(np.float32)
        scores[rng.random(scores.shape) < rng.random()] = -np.inf  # excluded items
        scores[0, :] = -np.inf  # a user with nothing eligible
        scores[1, :] = -np.inf
        scores[1, 5] = 1.0  # ... and one with a single eligible item
        n = int(rng.integers(1, 6))
        chunked_cols, chunked = top_n_scores(scores, n, chunk=16)  # 24 chunks >= 4 n: two-stage
        direct_cols, direct = top_n_scores(scores, n, chunk=scores.shape[1] + 1)  # plain argpartition
        expected = -np.sort(-scores, axis=1)[:, :n]
        np.testing.assert_array_equal(chunked, expected, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(direct, expected)
        finite = np.isfinite(chunked)
        np.testing.assert_array_equal(chunked_cols[finite], direct_cols[finite])
        assert not finite[0].any() and finite[1].sum() == 1 and chunked_cols[1, 0] == 5

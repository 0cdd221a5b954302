"""Blocked top-N gives the brute-force answer, honours exclusions and keeps N rows per user,
whether the catalogue is scored in one pass or one item block at a time; fold-in too."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import SparkSession

from recspark.model.families.foldin import fold_in_users
from recspark.model.scoring.als import recommend_top_n
from recspark.model.scoring.blocks import item_blocks
from recspark.model.scoring.factors import collect_within
from recspark.model.scoring.selection import CHUNK, top_n_scores


def test_top_n_scores_orders_and_skips_excluded() -> None:
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [1.0, -np.inf, -np.inf, -np.inf]])
    cols, best = top_n_scores(scores, 3)
    assert cols[0].tolist() == [1, 3, 0]
    assert best[0].tolist() == [0.9, 0.5, 0.1]
    assert cols[1][0] == 0 and np.isneginf(best[1][1:]).all()


@pytest.mark.parametrize(
    ("n_items", "items_per_block"),
    [
        (40, None),  # one chunk: the direct partial sort
        (2 * 4 * 7 * CHUNK + 13, None),  # the two-stage selection, with padding to a multiple of CHUNK
        (40, 9),  # at least five item blocks, merged per user
        (2 * 4 * 7 * CHUNK + 13, 2 * 4 * 7 * CHUNK),  # two blocks, each wide enough for two stages
    ],
)
def test_blocked_top_n_equals_brute_force(
    spark: SparkSession, n_items: int, items_per_block: int | None
) -> None:
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
    exclusions["u2"] = []  # ... and given as null, below
    users = spark.createDataFrame(
        [(f"u{u}", user_vectors[u].tolist(), exclusions[f"u{u}"] or None) for u in range(n_users)],
        "user_id string, features array<float>, exclude array<string>",
    )
    items = spark.createDataFrame(
        [(f"i{i}", item_vectors[i].tolist()) for i in range(n_items)],
        "item_id string, features array<float>",
    )
    got = recommend_top_n(
        spark, users, items, n, users_per_block=10, items_per_block=items_per_block
    ).collect()

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


def test_item_blocks_stay_within_the_budget_and_hold_every_item_once(spark: SparkSession) -> None:
    items = spark.createDataFrame(
        [(f"i{i}", [float(i)]) for i in range(101)], "item_id string, features array<float>"
    )
    keyed, blocks = item_blocks(items, 10)
    sizes = [r["count"] for r in keyed.groupBy("item_block").count().collect()]
    assert blocks >= 11 and max(sizes) <= 10 and sum(sizes) == 101
    assert {r["item_id"] for r in keyed.collect()} == {f"i{i}" for i in range(101)}
    assert collect_within(items, "item_id", 100) is None  # never more than budget + 1 rows collected
    ids, matrix = collect_within(items, "item_id", 101)
    assert len(ids) == 101 and matrix.shape == (101, 1)


def test_explanations_are_the_same_whether_items_are_blocked_or_not(spark: SparkSession) -> None:
    """A pick's because_item_id is the history item with the highest weight x cosine, wherever
    that history item's block is."""
    rng = np.random.default_rng(11)
    n_users, n_items, rank, n = 30, 60, 5, 6
    user_vectors = rng.normal(size=(n_users, rank)).astype(np.float32)
    item_vectors = rng.normal(size=(n_items, rank)).astype(np.float32)
    rows = []
    for u in range(n_users):
        history = [f"i{i}" for i in rng.choice(n_items, size=int(rng.integers(0, 6)), replace=False)]
        if u == 1:
            history.append("unknown-item")  # not among the items: never an explanation
        weights = rng.uniform(0.5, 3.0, size=len(history)).tolist()
        rows.append((f"u{u}", user_vectors[u].tolist(), history, weights, history[:2]))
    rows.append(("no-history", user_vectors[0].tolist(), None, None, None))
    users = spark.createDataFrame(
        rows,
        "user_id string, features array<float>, history array<string>, history_weight array<double>, "
        "exclude array<string>",
    )
    items = spark.createDataFrame(
        [(f"i{i}", item_vectors[i].tolist()) for i in range(n_items)], "item_id string, features array<float>"
    )
    whole = recommend_top_n(spark, users, items, n, users_per_block=8, explain=True)
    blocked = recommend_top_n(spark, users, items, n, users_per_block=8, explain=True, items_per_block=13)

    def lists(frame) -> dict[tuple[str, int], tuple[str, str | None]]:
        return {(r["user_id"], r["rank"]): (r["item_id"], r["because_item_id"]) for r in frame.collect()}

    got = lists(blocked)
    assert got == lists(whole)
    unit = item_vectors / np.linalg.norm(item_vectors, axis=1, keepdims=True)
    for user_id, _, history, weights, _ in rows:
        known = [
            (int(h[1:]), w) for h, w in zip(history or [], weights or [], strict=True) if h != "unknown-item"
        ]
        for rank_ in range(1, n + 1):
            item, because = got[(user_id, rank_)]
            if not known:
                assert because is None
                continue
            fit = [w * float(unit[int(item[1:])] @ unit[h]) for h, w in known]
            assert because == f"i{known[int(np.argmax(fit))][0]}"


def test_fold_in_by_join_equals_fold_in_by_broadcast(spark: SparkSession) -> None:
    rng = np.random.default_rng(2)
    items = spark.createDataFrame(
        [(f"i{i}", rng.normal(size=4).astype(np.float32).tolist()) for i in range(50)],
        "item_id string, features array<float>",
    )
    ratings = spark.createDataFrame(
        [
            (f"u{u}", f"i{i}", float(rng.uniform(0, 3)))
            for u in range(20)
            for i in rng.choice(60, 5, replace=False)
        ]
        + [("only-unknown", "i999", 1.0), ("only-zero", "i1", 0.0)],
        "user_id string, item_id string, rating double",
    )
    broadcast = {r["user_id"]: r for r in fold_in_users(spark, ratings, items, 10.0, 0.1).collect()}
    joined = {
        r["user_id"]: r for r in fold_in_users(spark, ratings, items, 10.0, 0.1, items_per_block=7).collect()
    }
    assert set(joined) == set(broadcast) and "only-unknown" not in joined and "only-zero" not in joined
    for user, row in broadcast.items():
        assert joined[user]["known_items"] == row["known_items"]
        np.testing.assert_allclose(joined[user]["features"], row["features"], rtol=1e-5, atol=1e-6)

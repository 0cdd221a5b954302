"""The item-item family: EASE weights from Spark co-occurrences, and scoring histories with them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession

from recspark.model.families import ease
from recspark.model.families.ease import ItemGram
from recspark.model.scoring.item_item import recommend_item_item
from recspark.model.scoring.weights import ItemWeights, weighted_targets

# 6 users x 5 items, one row per user: which items they interacted with.
MATRIX = np.array(
    [
        [1, 1, 0, 0, 1],
        [1, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0],
    ],
    dtype=np.float64,
)
ITEMS = ["a", "b", "c", "d", "e"]


def brute_force_ease(x: np.ndarray, l2: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def positives(spark: SparkSession):
    rows = [(f"u{u}", ITEMS[i], 1.0) for u, i in zip(*np.nonzero(MATRIX), strict=True)]
    return spark.createDataFrame(rows, "user_id string, item_id string, weight double")


def test_ease_weights_equal_the_closed_form_on_a_tiny_example(spark: SparkSession) -> None:
    gram = ItemGram.compute(spark, positives(spark).repartition(3), max_items=10, min_item_users=1)
    assert list(gram.item_ids) == ITEMS
    np.testing.assert_allclose(gram.gram, MATRIX.T @ MATRIX)  # from three input partitions
    expected = brute_force_ease(MATRIX, 2.0)
    np.testing.assert_allclose(gram.ease_weights(2.0), expected, rtol=1e-4, atol=1e-6)

    kept = gram.similarity(2.0, neighbours=2)
    for i, item in enumerate(ITEMS):
        mine = kept[kept["item_id"] == item].set_index("similar_item_id")["weight"]
        strongest = np.argsort(-np.abs(expected[i]))[:2]
        assert set(mine.index) == {ITEMS[j] for j in strongest}
        for j in strongest:
            assert mine[ITEMS[j]] == pytest.approx(expected[i, j], rel=1e-4)


def test_co_occurrences_are_summed_over_chunks_of_users(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of about 3 pairs: the driver never holds all pairs; each user is whole in one chunk.
    monkeypatch.setattr(ease, "_PAIRS_PER_CHUNK", 3)
    weighted = MATRIX * np.arange(1, MATRIX.shape[0] + 1)[:, None] * 0.5  # each user's own weight
    rows = [(f"u{u}", ITEMS[i], float(weighted[u, i])) for u, i in zip(*np.nonzero(weighted), strict=True)]
    frame = spark.createDataFrame(rows, "user_id string, item_id string, weight double")
    gram = ItemGram.compute(spark, frame, max_items=10, min_item_users=1)
    np.testing.assert_allclose(gram.gram, weighted.T @ weighted, rtol=1e-6)


def test_only_the_most_popular_items_with_enough_users_are_modelled(spark: SparkSession) -> None:
    # Users per item: a 4, b 3, c 4, d 3, e 2.
    gram = ItemGram.compute(spark, positives(spark), max_items=3, min_item_users=3)
    assert list(gram.item_ids) == ["a", "b", "c"]  # the 3 most popular (b before d by id)
    gram = ItemGram.compute(spark, positives(spark), max_items=10, min_item_users=3)
    assert list(gram.item_ids) == ["a", "b", "c", "d"]


def test_scoring_histories_equals_history_times_weights(spark: SparkSession) -> None:
    weights = brute_force_ease(MATRIX, 1.0)
    similarity = spark.createDataFrame(
        [(ITEMS[i], ITEMS[j], float(weights[i, j])) for i in range(5) for j in range(5) if i != j],
        "item_id string, similar_item_id string, weight float",
    )
    eligible = spark.createDataFrame([(i,) for i in ITEMS if i != "d"], "item_id string")  # d unavailable
    users = spark.createDataFrame(
        [("u0", ["a", "b"], ["e"]), ("u1", ["c"], None), ("u2", ["zz"], None)],
        "user_id string, history array<string>, exclude array<string>",
    )
    got = recommend_item_item(spark, users, similarity, eligible, n=3, users_per_block=2, explain=True)
    lists: dict[str, list] = {}
    for row in got.orderBy("user_id", "rank").collect():
        lists.setdefault(row["user_id"], []).append(row)
    for user, history, excluded in (("u0", ["a", "b"], {"e", "d"}), ("u1", ["c"], {"d"})):
        rows = [ITEMS.index(i) for i in history]
        scores = weights[rows].sum(axis=0)
        order = [j for j in np.argsort(-scores, kind="stable") if ITEMS[j] not in excluded and scores[j] != 0]
        assert [r["item_id"] for r in lists[user]] == [ITEMS[j] for j in order[:3]]
        assert [r["score"] for r in lists[user]] == pytest.approx([scores[j] for j in order[:3]], rel=1e-4)
        for r in lists[user]:  # the history item with the largest weight towards it
            j = ITEMS.index(r["item_id"])
            assert r["because_item_id"] == history[int(np.argmax(weights[rows, j]))]
    assert "u2" not in lists  # a history the model does not know reaches nothing


def test_a_blend_mixes_each_users_standardised_scores(spark: SparkSession) -> None:
    weights = brute_force_ease(MATRIX, 1.0)
    similarity = spark.createDataFrame(
        [(ITEMS[i], ITEMS[j], float(weights[i, j])) for i in range(5) for j in range(5) if i != j],
        "item_id string, similar_item_id string, weight float",
    )
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(5, 3)).astype(np.float32)
    vector = rng.normal(size=3).astype(np.float32)
    items = spark.createDataFrame(
        [(ITEMS[i], factors[i].tolist()) for i in range(5)], "item_id string, features array<float>"
    )
    users = spark.createDataFrame(
        [("u0", ["a"], None, vector.tolist())],
        "user_id string, history array<string>, exclude array<string>, features array<float>",
    )
    got = recommend_item_item(spark, users, similarity, items, n=5, users_per_block=8, als_weight=0.3)
    als, item_item = factors @ vector, weights[0]

    def z(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / v.std()

    expected = 0.3 * z(als) + 0.7 * z(item_item)
    rows = got.orderBy("rank").collect()
    assert [r["item_id"] for r in rows] == [ITEMS[j] for j in np.argsort(-expected)]
    assert [r["score"] for r in rows] == pytest.approx(sorted(expected, reverse=True), rel=1e-4, abs=1e-5)


def test_weighted_histories_score_with_their_preference(spark: SparkSession) -> None:
    weights = brute_force_ease(MATRIX, 1.0)
    similarity = spark.createDataFrame(
        [(ITEMS[i], ITEMS[j], float(weights[i, j])) for i in range(5) for j in range(5) if i != j],
        "item_id string, similar_item_id string, weight float",
    )
    eligible = spark.createDataFrame([(i,) for i in ITEMS], "item_id string")
    users = spark.createDataFrame(
        [("u0", ["a", "b"], [2.0, 0.5], None)],
        "user_id string, history array<string>, history_weight array<double>, exclude array<string>",
    )
    got = (
        recommend_item_item(spark, users, similarity, eligible, n=5, weighted=True).orderBy("rank").collect()
    )
    scores = 2.0 * weights[0] + 0.5 * weights[1]
    order = [j for j in np.argsort(-scores, kind="stable") if scores[j] != 0]
    assert [r["item_id"] for r in got] == [ITEMS[j] for j in order]
    assert [r["score"] for r in got] == pytest.approx([scores[j] for j in order], rel=1e-4)


@pytest.mark.parametrize(
    ("n_items", "als_weight", "items_per_block"),
    [
        (30, 0.0, None),  # narrower than the chunks: the direct partial sort
        (2 * 4 * 3 * 64 + 13, 0.0, None),  # the two-stage selection over a width padded past the items
        (2 * 4 * 3 * 64 + 13, 0.4, None),  # a blend: the padding takes no part in the z-scores
        (2 * 4 * 3 * 64 + 13, 0.4, 600),  # a blend one item block at a time: z-scores over all items
    ],
)
def test_item_item_top_n_equals_brute_force(
    spark: SparkSession, n_items: int, als_weight: float, items_per_block: int | None
) -> None:
    rng = np.random.default_rng(5)
    n_users, rank, n = 41, 4, 3
    ids = [f"i{i}" for i in range(n_items)]
    weights = np.where(rng.random((n_items, n_items)) < 0.05, rng.normal(size=(n_items, n_items)), 0.0)
    weights = weights.astype(np.float32)
    sources, targets = np.nonzero(weights)
    similarity = spark.createDataFrame(
        [(ids[s], ids[t], float(weights[s, t])) for s, t in zip(sources, targets, strict=True)],
        "item_id string, similar_item_id string, weight float",
    )
    item_vectors = rng.normal(size=(n_items, rank)).astype(np.float32)
    user_vectors = rng.normal(size=(n_users, rank)).astype(np.float32)
    users = []
    for u in range(n_users):
        history = [ids[i] for i in rng.choice(n_items, size=int(rng.integers(0, 6)), replace=False)]
        history_weight = rng.uniform(0.5, 3.0, size=len(history)).tolist()
        if u % 5 == 1 and history:  # an item listed twice counts once, with its last weight
            history, history_weight = [*history, history[0]], [*history_weight, 2.5]
        if u % 7 == 2:
            history_weight = None  # every item weighs 1
        exclude = [ids[i] for i in rng.choice(n_items, size=int(rng.integers(0, 4)), replace=False)]
        exclude = None if u % 4 == 3 else [*exclude, "not-an-item"]
        users.append((f"u{u}", history, history_weight, exclude, user_vectors[u].tolist()))
    frame = spark.createDataFrame(
        users,
        "user_id string, history array<string>, history_weight array<double>, "
        "exclude array<string>, features array<float>",
    )
    items = spark.createDataFrame(
        [(ids[i], item_vectors[i].tolist()) for i in range(n_items)], "item_id string, features array<float>"
    )
    blend = als_weight > 0
    # Without ALS, catalogue items no weight points to are eligible but can never be picked.
    unweighted = spark.createDataFrame([(f"x{i}",) for i in range(50)], "item_id string")
    got = recommend_item_item(
        spark,
        frame if blend else frame.drop("features"),
        similarity,
        items if blend else items.select("item_id").unionByName(unweighted),
        n,
        users_per_block=16,
        als_weight=als_weight,
        weighted=True,
        items_per_block=items_per_block,
    )
    lists: dict[str, list] = {}
    for row in got.orderBy("user_id", "rank").collect():
        lists.setdefault(row["user_id"], []).append((row["item_id"], row["score"]))

    def z(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / v.std() if v.std() > 0 else np.zeros_like(v)

    for user, history, history_weight, exclude, _ in users:
        counted = dict(zip(history, history_weight or [1.0] * len(history), strict=True))
        rows = [ids.index(i) for i in counted]
        item_item = np.asarray(list(counted.values())) @ weights[rows] if rows else np.zeros(n_items)
        if blend:
            scores = als_weight * z(item_vectors @ user_vectors[int(user[1:])]) + (1 - als_weight) * z(
                item_item
            )
            candidates = np.ones(n_items, dtype=bool)
        else:
            scores, candidates = item_item, (weights[rows] != 0).any(axis=0)
        candidates &= ~np.isin(ids, exclude or [])
        order = [j for j in np.argsort(-scores, kind="stable") if candidates[j]][:n]
        expected = [(ids[j], float(scores[j])) for j in order]
        mine = lists.get(user, [])
        assert [item for item, _ in mine] == [item for item, _ in expected], user
        assert [s for _, s in mine] == pytest.approx([s for _, s in expected], rel=1e-4, abs=1e-5)


def test_a_history_weight_list_of_another_length_is_a_clear_error(spark: SparkSession) -> None:
    similarity = spark.createDataFrame(
        [("a", "b", 1.0)], "item_id string, similar_item_id string, weight float"
    )
    eligible = spark.createDataFrame([("a",), ("b",)], "item_id string")
    users = spark.createDataFrame(
        [("u0", ["a", "b"], [2.0], None)],
        "user_id string, history array<string>, history_weight array<double>, exclude array<string>",
    )
    with pytest.raises(Exception, match="history_weight must hold one weight per history item"):
        recommend_item_item(spark, users, similarity, eligible, n=2, weighted=True).collect()


def test_prepared_weights_towards_any_eligible_items_equal_the_weights_rows() -> None:
    rng = np.random.default_rng(8)
    ids = [f"i{i}" for i in range(40)]
    dense = np.where(rng.random((40, 40)) < 0.2, rng.normal(size=(40, 40)), 0.0).astype(np.float32)
    dense[3, 5] = 0.0
    rows = [(ids[s], ids[t], float(dense[s, t])) for s, t in zip(*np.nonzero(dense), strict=True)]
    rows.append((ids[3], ids[5], 0.0))  # a zero weight speaks for nothing
    frame = pd.DataFrame(rows, columns=["item_id", "similar_item_id", "weight"]).sample(
        frac=1.0, random_state=1
    )
    weights = ItemWeights.from_frame(frame)
    assert 0.0 not in weights.matrix.data

    targets = np.array([ids[7], "not-weighted", ids[0], ids[39], ids[5]], dtype=object)
    got = weights.towards(targets, width=8).toarray()  # 3 columns of padding
    assert got.shape == (len(weights.sources), 8)
    for row, source in enumerate(weights.sources):
        s = ids.index(source)
        expected = [dense[s, ids.index(t)] if t in ids else 0.0 for t in targets] + [0.0] * 3
        np.testing.assert_array_equal(got[row], np.asarray(expected, dtype=np.float32))


def test_without_als_only_eligible_items_some_weight_points_to_are_scored(spark: SparkSession) -> None:
    frame = pd.DataFrame(
        {"item_id": ["a", "a", "b"], "similar_item_id": ["b", "c", "d"], "weight": [1.0, 0.5, 2.0]}
    )
    catalogue = spark.createDataFrame([(i,) for i in ["d", "a", "b", "e", "f"]], "item_id string")
    # c is weighted but not eligible; a, e and f are eligible but nothing points to them.
    assert list(weighted_targets(spark, catalogue, ItemWeights.from_frame(frame))) == ["b", "d"]


def test_a_blend_explains_the_same_whether_items_are_blocked_or_not(spark: SparkSession) -> None:
    rng = np.random.default_rng(9)
    n_items, rank = 90, 3
    ids = [f"i{i}" for i in range(n_items)]
    weights = np.where(rng.random((n_items, n_items)) < 0.1, rng.normal(size=(n_items, n_items)), 0.0)
    similarity = spark.createDataFrame(
        [(ids[s], ids[t], float(weights[s, t])) for s, t in zip(*np.nonzero(weights), strict=True)],
        "item_id string, similar_item_id string, weight float",
    )
    items = spark.createDataFrame(
        [(i, rng.normal(size=rank).tolist()) for i in ids], "item_id string, features array<float>"
    )
    users = spark.createDataFrame(
        [
            (
                f"u{u}",
                [ids[i] for i in rng.choice(n_items, size=4, replace=False)],
                None,
                rng.normal(size=rank).tolist(),
            )
            for u in range(12)
        ],
        "user_id string, history array<string>, exclude array<string>, features array<float>",
    )

    def lists(items_per_block: int | None) -> list[tuple]:
        got = recommend_item_item(
            spark, users, similarity, items, 4, explain=True, als_weight=0.5, items_per_block=items_per_block
        )
        return sorted((r["user_id"], r["rank"], r["item_id"], r["because_item_id"]) for r in got.collect())

    assert lists(25) == lists(None)


def test_the_ease_path_equals_separate_fits_per_l2() -> None:
    rng = np.random.default_rng(5)
    x = (rng.random((300, 60)) < 0.1) * rng.integers(1, 4, (300, 60))
    gram = ItemGram(np.array([f"i{i:02d}" for i in range(60)], dtype=object), (x.T @ x).astype(np.float32))
    l2s = [3.0, 30.0, 300.0]
    for (l2, path), expected in zip(gram.ease_path(l2s), l2s, strict=True):
        assert l2 == expected
        separate = gram.ease_weights(l2)
        np.testing.assert_allclose(path, separate, rtol=1e-3, atol=1e-5 * np.abs(separate).max())
        # Each item's strongest weights too: the same neighbours with the same weights.
        strongest = gram.strongest(path, neighbours=10)
        merged = strongest.merge(gram.similarity(l2, neighbours=10), on=["item_id", "similar_item_id"])
        assert len(merged) >= 0.99 * len(strongest)  # a tie at the 10th weight may swap
        np.testing.assert_allclose(merged["weight_x"], merged["weight_y"], rtol=1e-3, atol=1e-6)
    # A grid long enough for the decomposition to pay goes through it, with the same weights.
    many = [float(v) for v in np.geomspace(1, 1000, ease.PATH_MIN_L2S)]
    for l2, frame in gram.similarity_path(many, neighbours=10):
        merged = frame.merge(gram.similarity(l2, neighbours=10), on=["item_id", "similar_item_id"])
        assert len(merged) >= 0.99 * len(frame)
        np.testing.assert_allclose(merged["weight_x"], merged["weight_y"], rtol=1e-3, atol=1e-6)


def test_the_gram_of_pairs_on_the_driver_picks_the_items_spark_picks() -> None:
    pairs = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u3", "u4"],
            "item_id": ["a", "b", "a", "c", "b", "c", "d", "e"],
            "weight": [1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0],
        }
    )
    # Users per item: a 2, b 2, c 2, d 1, e 1: the two most popular with >= 2 users, ties by id.
    gram = ItemGram.from_pairs(pairs, max_items=2, min_item_users=2)
    assert list(gram.item_ids) == ["a", "b"]
    np.testing.assert_allclose(gram.gram, [[2.0, 2.0], [2.0, 13.0]])


@pytest.mark.parametrize("rows", [0, 7, 1_203])
def test_the_similarity_frame_holds_the_drivers_rows_in_few_small_tasks(
    spark: SparkSession, rows: int
) -> None:
    """Every row once, whatever the partitions; the rows travel in a broadcast, not in the
    tasks (the plan scans a range, not local data)."""
    rng = np.random.default_rng(rows)
    weights = pd.DataFrame(
        {
            "item_id": [f"i{k % 97}" for k in range(rows)],
            "similar_item_id": [f"j{k}" for k in range(rows)],
            "weight": rng.normal(size=rows).astype(np.float32),
        }
    )
    frame = ease.similarity_frame(spark, weights)
    assert "LocalTableScan" not in frame._jdf.queryExecution().executedPlan().toString()
    got = frame.toPandas().sort_values("similar_item_id").reset_index(drop=True)
    expected = weights.sort_values("similar_item_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got["weight"].to_numpy().tobytes() == expected["weight"].to_numpy().tobytes()

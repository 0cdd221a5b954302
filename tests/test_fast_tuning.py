"""Fast tuning without Spark: the driver's ALS, successive halving and the hard budget, on
small logs held in pandas (the Spark-side equivalences are in test_tuning.py)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse

from recspark.model.local_als import ImplicitALS, Ratings, least_squares_step


def random_ratings(users: int = 60, items: int = 40, seed: int = 3) -> Ratings:
    rng = np.random.default_rng(seed)
    matrix = sparse.random(users, items, density=0.15, random_state=rng, dtype=np.float32).tocsr()
    matrix.data = np.log1p(rng.integers(1, 20, matrix.nnz)).astype(np.float32)
    return Ratings.of(
        np.array([f"u{i:03d}" for i in range(users)]), np.array([f"i{i:03d}" for i in range(items)]), matrix
    )


def test_a_continued_fit_equals_one_fit_of_as_many_iterations() -> None:
    ratings = random_ratings()
    warm = ImplicitALS.start(ratings, 6, 0.05, 2.0, seed=7).run(3).run(4)
    cold = ImplicitALS.start(ratings, 6, 0.05, 2.0, seed=7).run(7)
    assert warm.iterations == cold.iterations == 7
    np.testing.assert_array_equal(warm.user_factors, cold.user_factors)
    np.testing.assert_array_equal(warm.item_factors, cold.item_factors)


def test_each_step_solves_mllibs_normal_equations_and_lowers_its_objective() -> None:
    ratings = random_ratings()
    fit = ImplicitALS.start(ratings, 5, 0.1, 3.0, seed=1).run(1)
    y = fit.item_factors.astype(np.float64)
    x = least_squares_step(fit.item_factors, ratings.by_user, 3.0, 0.1)
    for u in range(len(ratings.user_ids)):  # brute force: every item, c = 1 + alpha r, p = [r > 0]
        r = ratings.by_user[u].toarray().ravel().astype(np.float64)
        c, p = 1.0 + 3.0 * r, (r > 0).astype(np.float64)
        a = y.T @ (c[:, None] * y) + 0.1 * (r > 0).sum() * np.eye(5)
        np.testing.assert_allclose(x[u], np.linalg.solve(a, y.T @ (c * p)), rtol=1e-4, atol=1e-6)
    losses = [fit.loss()]
    for _ in range(4):
        losses.append(fit.run(1).loss())
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in itertools.pairwise(losses))

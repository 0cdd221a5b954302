"""Implicit ALS on the driver, with MLlib's objective: tuning's trials on logs that fit in memory.

MLlib's ALS (``ml.recommendation.ALS``, implicit preferences, ``computeFactors``) alternates exact
least-squares steps. Against fixed item factors Y, a user u with ratings r_ui gets

    x_u = (YᵀY + Σ_i c_ui y_i y_iᵀ + λ n_u I)⁻¹ Σ_{i: r_ui > 0} (1 + c_ui) y_i,   c_ui = α |r_ui|

where n_u counts the user's positive ratings (the ALS-WR scaling of ``regParam``), and items are
solved the same way against the user factors. Each iteration solves the items from the users,
then the users from the items; the users start as random unit vectors. This module runs those
very steps with NumPy (float64 normal equations, float32 factors, as MLlib keeps them), so a
grid of small fits runs no Spark job, and a fit can be continued for more iterations (a warm
start), which MLlib's ALS cannot: it takes no initial factors. Only the random start differs from
MLlib's. :func:`recspark.model.families.foldin.fold_in_vector` is the user step for one user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

# Rows solved together are padded to their longest row: at most this many (row, rating) cells
# per batch, so the padded factor block stays a few MB whatever the rank.
_CELLS_PER_BATCH = 16_384


@dataclass(frozen=True)
class Ratings:
    """Positive-or-not ratings of users (rows) for items (columns), in both orientations."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    by_user: sparse.csr_matrix  # users x items, float32
    by_item: sparse.csr_matrix = field(repr=False)  # items x users

    @classmethod
    def of(cls, user_ids: np.ndarray, item_ids: np.ndarray, matrix: sparse.csr_matrix) -> Ratings:
        """Users and items without any rating are dropped: MLlib's ALS never sees them."""
        matrix = sparse.csr_matrix(matrix, dtype=np.float32)
        matrix.eliminate_zeros()
        rows = np.flatnonzero(np.diff(matrix.indptr))
        columns = np.flatnonzero(np.bincount(matrix.indices, minlength=matrix.shape[1]))
        kept = matrix[rows][:, columns].tocsr()
        kept.sort_indices()
        return cls(np.asarray(user_ids)[rows], np.asarray(item_ids)[columns], kept, kept.T.tocsr())


def least_squares_step(
    fixed: np.ndarray, ratings: sparse.csr_matrix, alpha: float, reg_param: float
) -> np.ndarray:
    """Factors for every row of ``ratings`` (each row's ratings of the rows of ``fixed``),
    solved exactly against ``fixed`` as MLlib's implicit step solves them (see the module).

    Rows are taken in order of their rating count and solved in padded batches: one batched
    product builds every row's normal equations, one batched solve answers them."""
    rank = fixed.shape[1]
    fixed64 = fixed.astype(np.float64)
    gram = fixed64.T @ fixed64
    counts = np.diff(ratings.indptr)
    solved = np.zeros((ratings.shape[0], rank), dtype=np.float32)
    order = np.argsort(counts, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * max(int(counts[order[stop]]), 1) <= _CELLS_PER_BATCH:
            stop += 1
        rows = order[start:stop]
        longest = max(int(counts[rows[-1]]), 1)
        slots = np.arange(longest)
        valid = slots[None, :] < counts[rows][:, None]
        cells = np.where(valid, ratings.indptr[rows][:, None] + slots[None, :], 0)
        vectors = fixed64[ratings.indices[cells]] * valid[:, :, None]  # rows x longest x rank
        values = np.where(valid, ratings.data[cells].astype(np.float64), 0.0)
        confidence = alpha * np.abs(values)  # c - 1
        positive = values > 0
        normal = np.matmul((vectors * confidence[:, :, None]).transpose(0, 2, 1), vectors)
        normal += gram
        diagonal = np.arange(rank)
        normal[:, diagonal, diagonal] += (reg_param * positive.sum(axis=1))[:, None]
        target = np.einsum("rl,rlk->rk", np.where(positive, 1.0 + confidence, 0.0), vectors)
        solved[rows] = np.linalg.solve(normal, target[:, :, None])[:, :, 0].astype(np.float32)
        start = stop
    return solved


def initial_factors(count: int, rank: int, seed: int) -> np.ndarray:
    """Random unit vectors (Gaussian directions), float32, as MLlib starts its factors."""
    vectors = np.random.default_rng(seed).standard_normal((count, rank))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


@dataclass
class ImplicitALS:
    """One fit in progress: ``run`` continues it, so more iterations start where it stopped."""

    ratings: Ratings
    rank: int
    reg_param: float
    alpha: float
    user_factors: np.ndarray  # float32, rows as ratings.user_ids
    item_factors: np.ndarray | None = None  # float32, rows as ratings.item_ids; None before a step
    iterations: int = 0

    @classmethod
    def start(cls, ratings: Ratings, rank: int, reg_param: float, alpha: float, seed: int) -> ImplicitALS:
        return cls(ratings, rank, reg_param, alpha, initial_factors(len(ratings.user_ids), rank, seed))

    def run(self, iterations: int) -> ImplicitALS:
        """``iterations`` more iterations (items from users, then users from items)."""
        for _ in range(iterations):
            self.item_factors = least_squares_step(
                self.user_factors, self.ratings.by_item, self.alpha, self.reg_param
            )
            self.user_factors = least_squares_step(
                self.item_factors, self.ratings.by_user, self.alpha, self.reg_param
            )
            self.iterations += 1
        return self

    def loss(self) -> float:
        """MLlib's implicit objective at the current factors: Σ over all user-item cells of
        c (p - xᵀy)² (c = 1 and p = 0 off the ratings) + λ Σ_u n_u |x_u|² + λ Σ_i n_i |y_i|²."""
        assert self.item_factors is not None
        x = self.user_factors.astype(np.float64)
        y = self.item_factors.astype(np.float64)
        by_user = self.ratings.by_user.tocoo()
        predicted = np.einsum("ij,ij->i", x[by_user.row], y[by_user.col])
        confidence = 1.0 + self.alpha * np.abs(by_user.data.astype(np.float64))
        preference = (by_user.data > 0).astype(np.float64)
        # Every cell as if unrated (sum of squares of X Yᵀ), then the rated cells corrected.
        unrated = float(np.sum((x.T @ x) * (y.T @ y)))
        rated = float(np.sum(confidence * (preference - predicted) ** 2 - predicted**2))
        users = _positive_counts(self.ratings.by_user)
        items = _positive_counts(self.ratings.by_item)
        penalty = self.reg_param * (
            float(users @ np.einsum("ij,ij->i", x, x)) + float(items @ np.einsum("ij,ij->i", y, y))
        )
        return unrated + rated + penalty


def _positive_counts(ratings: sparse.csr_matrix) -> np.ndarray:
    """Each row's count of positive ratings (n_u, n_i of the regularisation)."""
    positive = ratings.copy()
    positive.data = (positive.data > 0).astype(np.float64)
    return np.asarray(positive.sum(axis=1)).ravel()

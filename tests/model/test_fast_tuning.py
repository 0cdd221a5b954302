"""Fast tuning without Spark: the driver's ALS, EASE's λ path, successive halving and the hard
budget, on small logs held in pandas (the Spark-side equivalences are in test_tuning.py)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from recspark.core.config import Config, load_config
from recspark.core.config.serving import ServeConfig
from recspark.datasets.shop.events import generate_events
from recspark.datasets.shop.spec import ShopSpec
from recspark.model.candidates.sources import POPULAR
from recspark.model.evaluation.local_scoring import LocalHoldout, LocalModel
from recspark.model.families.local_als import ImplicitALS, Ratings, least_squares_step
from recspark.model.families.model import ALS
from recspark.model.tuning.budget import Budget, Cost
from recspark.model.tuning.search import Searcher, candidate_specs, halving_rungs
from recspark.model.tuning.trials import LocalTrials


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


def test_halving_rungs_end_at_max_iter_with_the_better_settings() -> None:
    assert halving_rungs(7, 10) == [(5, 7), (10, 4)]
    assert halving_rungs(2, 10) == [(10, 2)]  # halving two settings saves too little
    assert halving_rungs(1, 10) == [(10, 1)]
    assert halving_rungs(7, 1) == [(1, 7)]  # nothing to cut


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_starts_no_step_that_would_overrun_it() -> None:
    clock = FakeClock()
    budget = Budget(10.0, clock=clock)
    ran = []
    for step in range(6):  # each step really takes 3 s, and is estimated at 2 s before any ran
        cost = [Cost("fit", 1.0, prior=2.0)]
        if not budget.allows(f"step {step}", cost):
            continue
        with budget.measuring("fit", 1.0):
            clock.now += 3.0
        ran.append((step, clock.now))
    # 0-3, 3-6, 6-9 s; the fourth would end at 12 s (estimated from the steps measured): not started.
    assert ran == [(0, 3.0), (1, 6.0), (2, 9.0)]
    assert all(end <= budget.seconds for _, end in ran)
    assert len(budget.skipped) == 3 and "estimated 3.0s, 1.0s left" in budget.skipped[0]
    # A prior that already overruns: nothing starts.
    assert not Budget(1.0, clock=FakeClock()).allows("big", [Cost("fit", 5.0, prior=1.0)])


# --------------------------------------------------------------------------------------------
# A small log on the driver: successive halving against cold fits


def small_holdout(serve: ServeConfig) -> LocalHoldout:
    """A generated shop split per user (newest 20% held out), with the most popular items as
    the fallback: what Holdout.on_driver would bring from Spark, built in pandas."""
    _, events = generate_events(ShopSpec(users=300, items=80, categories=8, events=15_000, days=21, seed=11))
    events = events.sort_values(["user_id", "event_time", "event_id"], kind="stable")
    position = events.groupby("user_id").cumcount()
    count = events.groupby("user_id")["event_id"].transform("size")
    future = position >= count - np.floor(0.2 * count)
    past, ahead = events[~future], events[future]
    weight = past["event_type"].map(
        {"view": 1.0, "add_to_cart": 3.0, "remove_from_cart": -2.0, "purchase": 5.0}
    )
    strength = past.assign(w=weight).groupby(["user_id", "item_id"])["w"].sum().clip(lower=0)
    pairs = strength[strength > 0].rename("strength").reset_index()
    bought = past[past["event_type"] == "purchase"][["user_id", "item_id"]].drop_duplicates()
    seen = set(zip(past["user_id"], past["item_id"], strict=True))
    relevant = ahead[ahead["event_type"] != "remove_from_cart"][["user_id", "item_id"]].drop_duplicates()
    relevant = relevant[
        [(u, i) not in seen for u, i in zip(relevant["user_id"], relevant["item_id"], strict=True)]
    ]
    users = np.sort(relevant["user_id"].unique().astype(object))
    popular = pairs.groupby("item_id").size().sort_values(ascending=False, kind="stable").index[:40]
    fallbacks = pd.DataFrame(
        [(u, item, rank + 1, POPULAR) for u in users for rank, item in enumerate(popular)],
        columns=["user_id", "item_id", "rank", "source"],
    )
    return LocalHoldout(
        users=users,
        pairs=pairs,
        excluded=bought,
        eligible=np.sort(pairs["item_id"].unique().astype(object)),
        fallbacks={(POPULAR,): (fallbacks, 0)},
        relevant=relevant,
        serve=serve,
        k=10,
        confidence="log",
        chain=(POPULAR,),
        catalog_size=pairs["item_id"].nunique(),
    )


@pytest.fixture(scope="module")
def tuning_config() -> Config:
    return load_config(
        None,
        [
            "train.families=[als]",
            "train.rank=8",
            "train.max_iter=8",
            "tune.rank=[4, 8, 16]",
            "tune.reg_param=[0.01, 0.3]",
            "tune.alpha=[1, 10]",
            "tune.max_trials=7",
        ],
        environ={},
    )


def test_warm_started_halving_reaches_the_best_point_of_cold_fits(tuning_config: Config) -> None:
    config = tuning_config
    local = small_holdout(replace(config.serve, top_n=10))
    trials = LocalTrials(config, local)
    specs = candidate_specs(config)[ALS]
    assert len(specs) == 8  # the configured point and 7 of the grid

    cold = []
    for spec in specs:
        settings = spec.als
        fit = ImplicitALS.start(
            trials.ratings, settings.rank, settings.reg_param, settings.alpha, settings.seed
        )
        fit.run(config.train.max_iter)
        model = LocalModel(
            spec, trials.ratings.user_ids, fit.user_factors, trials.ratings.item_ids, fit.item_factors
        )
        cold.append(local.per_user(local.lists(model))["ndcg"].mean())
    best_cold = specs[int(np.argmax(cold))]  # the first of equal scores, as the search keeps

    logged = []
    searcher = Searcher(config, trials, Budget(600.0), log_trial=lambda *args: logged.append(args))
    searcher.als(specs)
    score, best_warm, _ = searcher.best[ALS]
    assert best_warm == best_cold
    assert score == pytest.approx(max(cold))  # the same fit: continued fits are exact
    iterations = [spec.als.max_iter for _, spec, _, _ in logged]
    assert iterations == [4] * 8 + [8] * 4  # all 8 settings to 4 iterations, the better 4 to 8

"""One batch of simulated sessions: when each happens, which category it browses, the items it
views (by popularity and the user's taste) and how far it walks the view -> cart -> purchase ->
rating funnel. What comes out are raw events, relative to each session's start."""

from __future__ import annotations

import math
from datetime import timedelta, timezone

import numpy as np

from recspark.core.contract import EVENT_TYPES
from recspark.datasets.shop.spec import DAY, ShopSpec, start_epoch
from recspark.datasets.shop.world import LATENT_DIM, World

# Indices into the contract's EVENT_TYPES (events store their type as this index).
_VIEW, _CART, _REMOVE, _PURCHASE, _RATING = (
    EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
)

_POP_WEIGHT = 0.8  # exponent a in  P(item | category) ~ popularity**a * exp(taste * affinity)
_TASTE_WEIGHT = 1.0  # how strongly the latent affinity steers item choice within a category
_SESSION_NOISE = 0.35  # per-session jitter on the user vector: tastes are stable, not frozen
MEAN_EXTRA_VIEWS = 4.0  # views per session are 1 + Poisson(MEAN_EXTRA_VIEWS)
_FIRST_SESSION_VIEWS = 3  # every user's first session has this many views: "a few events" each
_MAX_CELLS = 1 << 22  # sessions x items cells per chunk when sampling items (memory bound)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_rows(weights: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one column per entry of ``rows``, with probability proportional to that row's weights.

    One cumulative sum over the flattened matrix and one ``searchsorted`` serve all rows at once:
    a draw for row r is a uniform point inside row r's slice of the running total.
    """
    n_cols = weights.shape[1]
    flat = np.cumsum(weights.ravel(), dtype=np.float64)
    ends = flat[n_cols - 1 :: n_cols]
    begins = np.r_[0.0, ends[:-1]]
    target = begins[rows] + rng.random(rows.size) * (ends[rows] - begins[rows])
    local = np.searchsorted(flat, target, side="right") - rows * n_cols
    # Rounding can push a draw onto the next row; give it the row's last drawable column.
    for k in np.flatnonzero(local >= n_cols).tolist():
        local[k] = np.flatnonzero(weights[rows[k]] > 0)[-1]
    return local


def _pick_items(
    spec: ShopSpec,
    world: World,
    s_user: np.ndarray,
    s_day: np.ndarray,
    s_cat: np.ndarray,
    s_views: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per session, draw its views with P(item) ~ popularity^a * exp(taste * affinity).

    Items are restricted to the session's category and to what is on the shelf that day.
    The ``s_*`` arrays are the sessions' columns (user, day, category, views). Returns (item,
    affinity) per view, views grouped by session in session order.
    """
    n_sessions = s_user.size
    offsets = np.r_[0, np.cumsum(s_views)]
    v_item = np.empty(offsets[-1], dtype=np.int64)
    v_aff = np.empty(offsets[-1], dtype=np.float64)
    scale = 1.0 / math.sqrt(LATENT_DIM)
    noise = rng.standard_normal((n_sessions, LATENT_DIM)) * _SESSION_NOISE
    order = np.argsort(s_cat, kind="stable")
    bounds = np.searchsorted(s_cat[order], np.arange(spec.categories + 1))
    for c in range(spec.categories):
        sessions = order[bounds[c] : bounds[c + 1]]
        if sessions.size == 0:
            continue
        items = np.flatnonzero(world.item_category == c)
        vecs = (world.item_vec[items] * scale).T.astype(np.float32)
        logpop = (_POP_WEIGHT * world.item_logpop[items]).astype(np.float32)
        # Only late releases and discontinued items need a per-day shelf check.
        changing = np.flatnonzero((world.release_day[items] > 0) | (world.end_day[items] <= spec.days))
        release, end = world.release_day[items[changing]], world.end_day[items[changing]]
        step = max(1, _MAX_CELLS // items.size)
        for lo in range(0, sessions.size, step):
            chunk = sessions[lo : lo + step]
            taste = (world.user_vec[s_user[chunk]] + noise[chunk]).astype(np.float32)
            affinity = taste @ vecs
            # Scores are bounded (log-popularity <= 0, |affinity| small): exp cannot overflow.
            weights = np.exp(logpop + _TASTE_WEIGHT * affinity)
            if changing.size:
                day = s_day[chunk][:, None]
                weights[:, changing] *= (release <= day) & (end > day)
            # Browsing is without replacement: take the first n distinct items of an i.i.d.
            # stream of 2n + 1 draws; only if the shelf is that narrow, top up with re-views.
            n_views = s_views[chunk]
            n_cand = 2 * n_views + 1
            rows = np.repeat(np.arange(chunk.size), n_cand)
            local = _sample_rows(weights, rows, rng)
            _, first_idx = np.unique(rows * items.size + local, return_index=True)
            repeat = np.ones(rows.size, dtype=bool)
            repeat[first_idx] = False
            picked = np.lexsort((np.arange(rows.size), repeat, rows))  # rows stay grouped
            group_start = np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
            picked = picked[np.arange(rows.size) - group_start < n_views[rows]]
            dest = _ranges(offsets[chunk], n_views)
            v_item[dest] = items[local[picked]]
            v_aff[dest] = affinity[rows[picked], local[picked]]
    return v_item, v_aff


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for each start/length pair, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    group_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - group_start)


def simulate_sessions(
    spec: ShopSpec, world: World, n_sessions: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Simulate ``n_sessions`` sessions (one forced first session per user) into raw events."""
    n_users = spec.users
    extra = rng.multinomial(max(n_sessions - n_users, 0), world.user_activity)
    s_user = np.repeat(np.arange(n_users), extra + 1)
    first = np.r_[True, s_user[1:] != s_user[:-1]]
    n_s = s_user.size

    # Day: uniform-ish over the user's active window, weekends a little busier.
    start_day = spec.start.astimezone(timezone.utc).date()
    weekday = np.array([(start_day + timedelta(days=d)).weekday() for d in range(spec.days)])
    day_cdf = np.r_[0.0, np.cumsum(np.where(weekday >= 5, 1.2, 1.0))]
    join = world.user_join_day[s_user]
    u = day_cdf[join] + rng.random(n_s) * (day_cdf[spec.days] - day_cdf[join])
    s_day = np.clip(np.searchsorted(day_cdf, u, side="right") - 1, join, spec.days - 1)
    # Time of day: diurnal profile on the UTC clock (quiet nights, lunch and evening peaks).
    hourly = np.array(
        [1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0,
         3.4, 3.3, 3.0, 2.9, 3.0, 3.3, 3.8, 4.4, 4.8, 4.5, 3.4, 2.0]
    )  # fmt: skip
    hour = np.searchsorted(np.cumsum(hourly), rng.random(n_s) * hourly.sum(), side="right")
    clock = (hour * 3600 + rng.integers(0, 3600, n_s) - start_epoch(spec)) % DAY
    s_start = s_day * DAY + clock

    s_cat = _sample_rows(world.user_pref, s_user, rng)
    s_views = np.where(first, _FIRST_SESSION_VIEWS, 1 + rng.poisson(MEAN_EXTRA_VIEWS, n_s))
    v_item, v_aff = _pick_items(spec, world, s_user, s_day, s_cat, s_views, rng)
    v_sess = np.repeat(np.arange(n_s), s_views)

    # View times: seconds to minutes apart, first view at the session start.
    gaps = 5 + rng.exponential(45.0, v_sess.size).astype(np.int64)
    first_view = np.r_[0, np.cumsum(s_views)[:-1]]
    gaps[first_view] = 0
    cum = np.cumsum(gaps)
    v_t = cum - cum[first_view][v_sess]

    # Funnel: only the first view of an item in a session can lead to a cart.
    _, first_seen = np.unique(v_sess * spec.items + v_item, return_index=True)
    cand = np.sort(first_seen)
    carted = cand[rng.random(cand.size) < _sigmoid(-2.6 + 0.9 * v_aff[cand])]
    c_sess, c_item, c_aff = v_sess[carted], v_item[carted], v_aff[carted]
    c_t = v_t[carted] + rng.integers(3, 60, carted.size)
    removed = rng.random(carted.size) < _sigmoid(-1.0 - 0.5 * c_aff)
    r_t = c_t[removed] + rng.integers(10, 600, int(removed.sum()))
    kept = np.flatnonzero(~removed)
    bought = kept[rng.random(kept.size) < _sigmoid(-0.6 + 0.8 * c_aff[kept])]

    # Checkout after everything else in the session; ratings a few minutes after checkout.
    last = np.zeros(n_s, dtype=np.int64)
    np.maximum.at(last, v_sess, v_t)
    np.maximum.at(last, c_sess, c_t)
    np.maximum.at(last, c_sess[removed], r_t)
    checkout = last + rng.integers(20, 300, n_s)
    p_sess, p_item, p_aff = c_sess[bought], c_item[bought], c_aff[bought]
    p_t = checkout[p_sess] + rng.integers(0, 5, bought.size)
    quantity = 1 + rng.poisson(0.15, bought.size)
    rated = rng.random(bought.size) < 0.35
    stars = np.rint(2.7 + 0.8 * p_aff[rated] + rng.normal(0.0, 0.8, int(rated.sum())))
    rt_t = checkout[p_sess[rated]] + rng.integers(60, 900, int(rated.sum()))

    nan = np.nan
    parts = [
        (v_sess, v_item, _VIEW, v_t, np.full(v_sess.size, nan)),
        (c_sess, c_item, _CART, c_t, np.full(c_sess.size, nan)),
        (c_sess[removed], c_item[removed], _REMOVE, r_t, np.full(r_t.size, nan)),
        (p_sess, p_item, _PURCHASE, p_t, quantity.astype(np.float64)),
        (p_sess[rated], p_item[rated], _RATING, rt_t, np.clip(stars, 1, 5)),
    ]
    return {
        "s_user": s_user,
        "s_start": s_start,
        "s_first": first,
        "sess": np.concatenate([p[0] for p in parts]),
        "item": np.concatenate([p[1] for p in parts]),
        "kind": np.concatenate([np.full(p[0].size, p[2], dtype=np.int8) for p in parts]),
        "t": np.concatenate([p[3] for p in parts]).astype(np.int64),
        "value": np.concatenate([p[4] for p in parts]),
    }

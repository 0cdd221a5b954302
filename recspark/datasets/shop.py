"""Synthetic shop generator: a catalog plus a stream of JSON-lines event files.

The data follows a plain generative story rather than being tuned to any model: users have
stable hidden tastes (a Dirichlet preference over a few categories plus a latent vector matched
against item vectors), item popularity is long-tailed, and sessions walk a view -> cart ->
purchase -> rating funnel whose conversion rises with affinity. Because tastes are stable, history
predicts the future, so a collaborative-filtering model can beat "most popular" on a time-based
holdout. Ingestion noise (broken lines, producer retries) is added on top so the streaming
ingestion stage has something real to clean.

Everything is driven by one ``numpy.random.default_rng(spec.seed)`` and vectorised, so the same
spec writes byte-identical files and a million events take seconds.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from recspark.core.config.operations import GenerateConfig
from recspark.core.contract import EVENT_TYPES, REQUIRED_FIELDS

logger = logging.getLogger(__name__)

__all__ = ["EVENT_TYPES", "LandingNotEmptyError", "ShopSpec", "ShopSummary", "generate_events", "write_shop"]

# Indices into the contract's EVENT_TYPES (events store their type as this index).
_VIEW, _CART, _REMOVE, _PURCHASE, _RATING = (
    EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
)

_DAY = 86_400
_LATENT_DIM = 8
_POP_ZIPF = 1.0  # base propensity of the item with popularity rank r is (r + 1) ** -_POP_ZIPF
_POP_WEIGHT = 0.8  # exponent a in  P(item | category) ~ popularity**a * exp(taste * affinity)
_TASTE_WEIGHT = 1.0  # how strongly the latent affinity steers item choice within a category
_SESSION_NOISE = 0.35  # per-session jitter on the user vector: tastes are stable, not frozen
_EXPLORE = 0.10  # share of sessions whose category follows the shop, not the user's taste
_NON_FAVOURITE_ALPHA = 0.10  # Dirichlet mass on non-favourite categories (favourites get 2.0)
_NEW_USER_FRACTION = 0.15  # users who only show up in the second half of the window
_NEW_ITEM_FRACTION = 0.03  # items released during the window
_UNAVAILABLE_FRACTION = 0.03  # items discontinued during the window (available=false)
_MEAN_EXTRA_VIEWS = 4.0  # views per session are 1 + Poisson(_MEAN_EXTRA_VIEWS)
_FIRST_SESSION_VIEWS = 3  # every user's first session has this many views: "a few events" each
_MIN_EVENTS_PER_USER = 5  # spec validation: the event budget must cover the first sessions
_MAX_CELLS = 1 << 22  # sessions x items cells per chunk when sampling items (memory bound)
_OVERSAMPLE = 1.3  # simulate this many more sessions than needed, then thin to the budget

_CATEGORY_NAMES = (
    ("Electronics", ("Headphones", "Speaker", "Charger", "Camera")),
    ("Books", ("Novel", "Cookbook", "Biography", "Atlas")),
    ("Home & Kitchen", ("Pan", "Kettle", "Knife Set", "Blender")),
    ("Toys", ("Puzzle", "Building Set", "Plush Bear", "Kite")),
    ("Sports", ("Yoga Mat", "Dumbbell", "Racket", "Water Bottle")),
    ("Beauty", ("Face Cream", "Lipstick", "Shampoo", "Perfume")),
    ("Clothing", ("T-Shirt", "Jacket", "Jeans", "Scarf")),
    ("Shoes", ("Sneakers", "Boots", "Sandals", "Loafers")),
    ("Garden", ("Hose", "Planter", "Shears", "Seed Kit")),
    ("Grocery", ("Coffee", "Olive Oil", "Tea", "Granola")),
    ("Pet Supplies", ("Dog Bed", "Cat Toy", "Leash", "Bird Feeder")),
    ("Office", ("Notebook", "Desk Lamp", "Stapler", "Pen Set")),
    ("Automotive", ("Car Charger", "Wiper", "Seat Cover", "Tire Gauge")),
    ("Music", ("Guitar Strings", "Vinyl Record", "Ukulele", "Metronome")),
    ("Movies", ("Blu-ray", "Box Set", "Documentary", "Classic Film")),
    ("Health", ("Vitamins", "Thermometer", "First Aid Kit", "Massager")),
    ("Jewelry", ("Necklace", "Ring", "Bracelet", "Earrings")),
    ("Baby", ("Stroller", "Onesie", "Bottle", "Baby Monitor")),
    ("Tools", ("Drill", "Hammer", "Wrench Set", "Tape Measure")),
    ("Video Games", ("Controller", "Game", "Headset", "Gift Card")),
)
_ADJECTIVES = (
    "Classic", "Deluxe", "Compact", "Eco", "Pro", "Smart", "Vintage", "Ultra", "Essential",
    "Premium", "Everyday", "Travel", "Mini", "Max", "Urban", "Nordic",
)  # fmt: skip


@dataclass(frozen=True)
class ShopSpec:
    """Size, time window, seed and noise levels of a synthetic shop; invalid specs fail early."""

    users: int = 2000
    items: int = 500
    categories: int = 20
    events: int = 60_000
    days: int = 30
    seed: int = 7
    start: datetime = datetime(2026, 10, 1, tzinfo=timezone.utc)
    files_per_day: int = 1
    bad_fraction: float = 0.002
    duplicate_fraction: float = 0.01

    @classmethod
    def from_config(cls, generate: GenerateConfig, **overrides: int) -> ShopSpec:
        """The shop the ``generate`` section describes; ``overrides`` (e.g. command-line sizes)
        win over it, so every caller builds the spec the same way."""
        return cls(**{**asdict(generate), **overrides})

    def __post_init__(self) -> None:
        """Reject specs that cannot produce a sensible shop, with a one-line reason."""
        for name in ("users", "items", "categories", "events", "days", "files_per_day"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"ShopSpec.{name} must be a positive integer, got {value!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"ShopSpec.seed must be a non-negative integer, got {self.seed!r}")
        if self.items < self.categories:
            raise ValueError(f"ShopSpec.items ({self.items}) must be >= categories ({self.categories})")
        if self.events < _MIN_EVENTS_PER_USER * self.users:
            raise ValueError(
                f"ShopSpec.events ({self.events}) must be >= {_MIN_EVENTS_PER_USER} * users "
                f"({_MIN_EVENTS_PER_USER * self.users}) so every user gets a few events"
            )
        if self.files_per_day > 99:
            raise ValueError(
                f"ShopSpec.files_per_day must be <= 99 (two-digit file suffix), got {self.files_per_day}"
            )
        for name in ("bad_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"ShopSpec.{name} must be a number, got {value!r}")
            if not 0.0 <= value <= 0.5:
                raise ValueError(f"ShopSpec.{name} must be within [0, 0.5], got {value!r}")
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise ValueError(f"ShopSpec.start must be a timezone-aware datetime, got {self.start!r}")


@dataclass(frozen=True)
class ShopSummary:
    """What ``write_shop`` wrote, so callers and tests can check it without re-reading files."""

    users: int
    items: int
    events: int
    duplicates: int
    bad_lines: int
    files: int
    first_event_time: datetime
    last_event_time: datetime


@dataclass
class _Events:
    """Valid distinct events as index arrays sorted by time (cheap to format or to frame)."""

    seconds: np.ndarray  # int64 seconds since spec start
    user: np.ndarray  # int64 user index
    item: np.ndarray  # int64 item index
    kind: np.ndarray  # int8 index into EVENT_TYPES
    value: np.ndarray  # float64, NaN when absent
    session: np.ndarray  # int64 session index, numbered by session start


def _start_epoch(spec: ShopSpec) -> int:
    """Whole seconds since the Unix epoch of the window start (sub-second part dropped)."""
    return math.floor(spec.start.timestamp())


def _id_width(count: int, minimum: int) -> int:
    """Zero-padding width so ids sort lexicographically and keep a familiar look."""
    return max(minimum, len(str(max(count - 1, 0))))


def _user_ids(spec: ShopSpec) -> np.ndarray:
    width = _id_width(spec.users, 6)
    return np.array([f"u{k:0{width}d}" for k in range(spec.users)], dtype=object)


def _item_ids(spec: ShopSpec) -> np.ndarray:
    width = _id_width(spec.items, 5)
    return np.array([f"i{k:0{width}d}" for k in range(spec.items)], dtype=object)


def _iso(seconds: np.ndarray, epoch: int) -> list[str]:
    """Format epoch offsets as ISO-8601 UTC strings with a Z suffix (second precision)."""
    stamps = (np.int64(epoch) + seconds.astype(np.int64)).astype("datetime64[s]")
    return [f"{s}Z" for s in np.datetime_as_string(stamps, unit="s").tolist()]


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


@dataclass
class _World:
    """Hidden state of the shop: who likes what, what exists when."""

    item_category: np.ndarray
    item_logpop: np.ndarray
    item_vec: np.ndarray
    release_day: np.ndarray
    end_day: np.ndarray
    category_weight: np.ndarray
    user_pref: np.ndarray
    user_vec: np.ndarray
    user_join_day: np.ndarray
    user_activity: np.ndarray


def _build_world(spec: ShopSpec, rng: np.random.Generator) -> _World:
    """Draw categories, items and users with their hidden tastes."""
    n_items, n_cats, n_users = spec.items, spec.categories, spec.users
    # Uneven category sizes; every category gets at least one item.
    sizes = rng.multinomial(n_items - n_cats, rng.dirichlet(np.full(n_cats, 1.5))) + 1
    item_category = rng.permutation(np.repeat(np.arange(n_cats), sizes))
    # Long-tailed base propensity: a random global popularity rank with a power law.
    rank = rng.permutation(n_items)
    item_logpop = -_POP_ZIPF * np.log1p(rank)
    item_vec = rng.standard_normal((n_items, _LATENT_DIM))

    # Lifecycle: a few items are released late, a few are discontinued. The most popular item of
    # each category is exempt, so every category always has something on the shelf.
    release_day = np.zeros(n_items, dtype=np.int64)
    end_day = np.full(n_items, spec.days + 1, dtype=np.int64)
    anchors = np.zeros(n_items, dtype=bool)
    best = np.lexsort((rank, item_category))
    first_of_cat = np.r_[True, item_category[best][1:] != item_category[best][:-1]]
    anchors[best[first_of_cat]] = True
    candidates = rng.permutation(np.flatnonzero(~anchors))
    n_new = min(round(_NEW_ITEM_FRACTION * n_items), candidates.size) if spec.days > 1 else 0
    n_gone = min(round(_UNAVAILABLE_FRACTION * n_items), candidates.size - n_new)
    new_items, gone_items = candidates[:n_new], candidates[n_new : n_new + n_gone]
    release_day[new_items] = rng.integers(max(1, spec.days // 2), spec.days, n_new)
    end_day[gone_items] = rng.integers(max(1, spec.days // 3), spec.days + 1, n_gone)

    # Category appeal: bigger categories tend to attract more fans, with some randomness.
    category_weight = np.sqrt(sizes) * rng.lognormal(0.0, 0.5, n_cats)
    category_weight /= category_weight.sum()

    # Users: a few favourite categories (Gumbel top-k by appeal) and a Dirichlet preference that
    # puts most mass on them, blended with a little exploration of the whole shop.
    n_fav = 1 + rng.binomial(3, 0.5, n_users)
    keys = np.log(category_weight)[None, :] + rng.gumbel(size=(n_users, n_cats))
    fav_rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    alpha = np.where(fav_rank < n_fav[:, None], 2.0, _NON_FAVOURITE_ALPHA)
    pref = rng.gamma(alpha)
    pref /= pref.sum(axis=1, keepdims=True)
    pref = (1.0 - _EXPLORE) * pref + _EXPLORE * category_weight[None, :]
    user_vec = rng.standard_normal((n_users, _LATENT_DIM))

    # Activity is long-tailed; some users only join in the second half of the window.
    activity = rng.lognormal(0.0, 1.1, n_users)
    join_day = np.zeros(n_users, dtype=np.int64)
    is_new = rng.random(n_users) < _NEW_USER_FRACTION if spec.days > 1 else np.zeros(n_users, bool)
    join_day[is_new] = rng.integers(spec.days // 2, spec.days, int(is_new.sum()))
    activity *= (spec.days - join_day) / spec.days  # same daily rate over a shorter window
    return _World(
        item_category=item_category,
        item_logpop=item_logpop,
        item_vec=item_vec,
        release_day=release_day,
        end_day=end_day,
        category_weight=category_weight,
        user_pref=pref,
        user_vec=user_vec,
        user_join_day=join_day,
        user_activity=activity / activity.sum(),
    )


def _build_catalog(spec: ShopSpec, world: _World, rng: np.random.Generator) -> pd.DataFrame:
    """Titles, categories, prices and availability; ``updated_at`` tracks lifecycle changes."""
    n_cats = spec.categories
    cat_names = [
        _CATEGORY_NAMES[c][0] if c < len(_CATEGORY_NAMES) else f"Category {c + 1}" for c in range(n_cats)
    ]
    nouns = [_CATEGORY_NAMES[c][1] if c < len(_CATEGORY_NAMES) else ("Item",) for c in range(n_cats)]
    cat = world.item_category
    adjective = rng.integers(0, len(_ADJECTIVES), spec.items)
    noun_pick = rng.integers(0, 1 << 30, spec.items)
    model = rng.integers(100, 1000, spec.items)
    titles = [
        f"{_ADJECTIVES[a]} {nouns[c][n % len(nouns[c])]} {m}"
        for a, c, n, m in zip(
            adjective.tolist(), cat.tolist(), noun_pick.tolist(), model.tolist(), strict=True
        )
    ]
    base_price = np.exp(rng.normal(3.0, 0.9, n_cats))
    price = np.maximum(np.floor(base_price[cat] * rng.lognormal(0.0, 0.5, spec.items)), 0) + 0.99

    available = world.end_day > spec.days
    start = _start_epoch(spec)
    updated = start - rng.integers(_DAY, 365 * _DAY, spec.items)
    released = world.release_day > 0
    updated[released] = start + world.release_day[released] * _DAY
    updated[~available] = start + world.end_day[~available] * _DAY
    return pd.DataFrame(
        {
            "item_id": _item_ids(spec),
            "title": titles,
            "category": np.array(cat_names, dtype=object)[cat],
            "price": price.round(2),
            "available": available,
            "updated_at": pd.to_datetime(updated, unit="s", utc=True).as_unit("ns"),
        }
    )


def _pick_items(
    spec: ShopSpec,
    world: _World,
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
    scale = 1.0 / math.sqrt(_LATENT_DIM)
    noise = rng.standard_normal((n_sessions, _LATENT_DIM)) * _SESSION_NOISE
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


def _simulate_sessions(
    spec: ShopSpec, world: _World, n_sessions: int, rng: np.random.Generator
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
    clock = (hour * 3600 + rng.integers(0, 3600, n_s) - _start_epoch(spec)) % _DAY
    s_start = s_day * _DAY + clock

    s_cat = _sample_rows(world.user_pref, s_user, rng)
    s_views = np.where(first, _FIRST_SESSION_VIEWS, 1 + rng.poisson(_MEAN_EXTRA_VIEWS, n_s))
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


def _simulate(spec: ShopSpec, rng: np.random.Generator) -> tuple[pd.DataFrame, _Events]:
    """Build the world and its catalog, then simulate sessions until the event budget is met."""
    world = _build_world(spec, rng)
    catalog = _build_catalog(spec, world, rng)
    logger.info("generate: catalog of %d items in %d categories", spec.items, spec.categories)

    per_session = 1.25 * (1.0 + _MEAN_EXTRA_VIEWS)  # rough events per session, corrected below
    factor = _OVERSAMPLE
    while True:
        n_sessions = max(spec.users, math.ceil(factor * spec.events / per_session))
        raw = _simulate_sessions(spec, world, n_sessions, rng)
        counts = np.bincount(raw["sess"], minlength=raw["s_user"].size)
        if counts.sum() >= spec.events:
            break
        factor *= 1.2 * spec.events / max(int(counts.sum()), 1)
        logger.info("generate: event budget not reached, resimulating with factor %.2f", factor)

    # Thin sessions at random to hit the budget; every user's first session is always kept.
    key = rng.random(counts.size) - raw["s_first"]
    order = np.argsort(key, kind="stable")
    n_keep = int(np.searchsorted(np.cumsum(counts[order]), spec.events)) + 1
    n_keep = max(n_keep, int(raw["s_first"].sum()))
    keep = np.zeros(counts.size, dtype=bool)
    keep[order[:n_keep]] = True

    # Place kept sessions in absolute time, pulled back if they would run past the window end.
    duration = np.zeros(counts.size, dtype=np.int64)
    np.maximum.at(duration, raw["sess"], raw["t"])
    s_start = np.clip(raw["s_start"], 0, spec.days * _DAY - 1 - duration)
    kept_sessions = np.flatnonzero(keep)
    by_start = kept_sessions[np.lexsort((kept_sessions, s_start[kept_sessions]))]
    new_id = np.full(counts.size, -1, dtype=np.int64)
    new_id[by_start] = np.arange(by_start.size)

    mask = keep[raw["sess"]]
    sess = new_id[raw["sess"][mask]]
    seconds = s_start[raw["sess"][mask]] + raw["t"][mask]
    item, kind, value = raw["item"][mask], raw["kind"][mask], raw["value"][mask]
    order = np.lexsort((item, kind, sess, seconds))
    events = _Events(
        seconds=seconds[order],
        user=raw["s_user"][by_start][sess[order]],
        item=item[order],
        kind=kind[order],
        value=value[order],
        session=sess[order],
    )
    logger.info(
        "generate: %d events in %d sessions from %d users",
        events.seconds.size,
        by_start.size,
        np.unique(events.user).size,
    )
    return catalog, events


def _event_id_width(n: int) -> int:
    return _id_width(n, 9)


def generate_events(spec: ShopSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (catalog_df, events_df) of the valid distinct events, before ingestion noise.

    Same data as ``write_shop`` writes (same ids and times), handy for tests and benchmarks that
    want the ground truth without parsing files. ``value`` is NaN where the key is absent.
    """
    catalog, ev = _simulate(spec, np.random.default_rng(spec.seed))
    return catalog, _events_frame(spec, ev, ev.seconds.size)


def _events_frame(spec: ShopSpec, ev: _Events, n_ids: int) -> pd.DataFrame:
    width = _event_id_width(n_ids)
    sess_width = _id_width(int(ev.session.max()) + 1 if ev.session.size else 1, 8)
    return pd.DataFrame(
        {
            "event_id": [f"e{k:0{width}d}" for k in range(ev.seconds.size)],
            "event_time": pd.to_datetime(ev.seconds + _start_epoch(spec), unit="s", utc=True).as_unit("ns"),
            "user_id": _user_ids(spec)[ev.user],
            "item_id": _item_ids(spec)[ev.item],
            "event_type": np.array(EVENT_TYPES, dtype=object)[ev.kind],
            "value": ev.value.astype(np.float64),
            "session_id": [f"s{k:0{sess_width}d}" for k in ev.session.tolist()],
        }
    )


def _atomic_write(path: Path, text: str) -> None:
    """Write to a hidden temp file in the same directory, then rename over the target.

    A directory watcher (Spark ignores dot-files) therefore never sees a half-written file.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _event_lines(spec: ShopSpec, ev: _Events, width: int) -> list[str]:
    """Serialise valid events to compact JSON lines (ids and enums need no escaping)."""
    n = ev.seconds.size
    sess_width = _id_width(int(ev.session.max()) + 1 if n else 1, 8)
    users = _user_ids(spec)[ev.user].tolist()
    items = _item_ids(spec)[ev.item].tolist()
    kinds = np.array(EVENT_TYPES, dtype=object)[ev.kind].tolist()
    times = _iso(ev.seconds, _start_epoch(spec))
    has_value = ~np.isnan(ev.value)
    values = np.full(n, "", dtype=object)
    values[has_value] = [f',"value":{int(v)}' for v in ev.value[has_value].tolist()]
    return [
        f'{{"event_id":"e{k:0{width}d}","event_time":"{t}","user_id":"{u}","item_id":"{i}",'
        f'"event_type":"{et}"{v},"session_id":"s{s:0{sess_width}d}"}}'
        for k, t, u, i, et, v, s in zip(
            range(n),
            times,
            users,
            items,
            kinds,
            values.tolist(),
            ev.session.tolist(),
            strict=True,
        )
    ]


def _bad_line(record: dict[str, object], kind: int, cut: float, field: int) -> str:
    """Break one event record in one of six ways that violate the data contract."""
    rec = dict(record)
    if kind == 1:  # a required field is missing
        del rec[REQUIRED_FIELDS[field]]
    elif kind == 2:  # unknown event type
        rec["event_type"] = "click"
    elif kind == 3:  # unparsable time
        rec["event_time"] = "yesterday"
    elif kind == 4:  # rating out of range
        rec["event_type"], rec["value"] = "rating", 7
        rec["session_id"] = rec.pop("session_id")  # keep the usual key order
    elif kind == 5:  # empty user
        rec["user_id"] = ""
    text = json.dumps(rec, separators=(",", ":"))
    if kind == 0:  # truncated line: any proper prefix of a JSON object is invalid JSON
        text = text[: 1 + int(cut * (len(text) - 2))]
    return text


class LandingNotEmptyError(FileExistsError):
    """Event files of the same names are already in the landing folder."""


def event_file_names(spec: ShopSpec) -> list[str]:
    """``events-YYYYMMDD-NN.jsonl`` for every UTC day and time slice of the window, in order."""
    epoch = _start_epoch(spec)
    first_day = epoch // _DAY
    last_day = (epoch + spec.days * _DAY - 1) // _DAY
    return [
        f"events-{datetime.fromtimestamp(int(day) * _DAY, tz=timezone.utc):%Y%m%d}-{slot:02d}.jsonl"
        for day in range(first_day, last_day + 1)
        for slot in range(spec.files_per_day)
    ]


def _refuse_existing(events_dir: Path, names: list[str]) -> None:
    """Spark's file source tracks files by path: a replaced file that was already ingested is
    never read again, so its new content would be silently lost."""
    existing = [name for name in names if (events_dir / name).exists()]
    if existing:
        raise LandingNotEmptyError(
            f"{len(existing)} of the {len(names)} event files to write already exist in {events_dir} "
            f"(first: {existing[0]}); ingestion never re-reads a replaced file, so pick an empty folder "
            f"(ingest.path)"
        )


def write_shop(spec: ShopSpec, events_dir: Path, catalog_path: Path) -> ShopSummary:
    """Write the catalog and the event files (with ingestion noise) atomically; summarise them.

    Files are ``events-YYYYMMDD-NN.jsonl`` per UTC day and time slice, in time order. Noise:
    ``bad_fraction`` broken lines and ``duplicate_fraction`` verbatim re-emissions (producer
    retries), half in the same file after the original, half in one of the next three files.
    Refuses (:class:`LandingNotEmptyError`, before writing anything) when an event file of the same
    name exists; the catalog is replaced, since it is re-read whole.
    """
    names = event_file_names(spec)
    _refuse_existing(Path(events_dir), names)
    rng = np.random.default_rng(spec.seed)
    catalog, ev = _simulate(spec, rng)
    n = ev.seconds.size
    epoch = _start_epoch(spec)
    fpd = spec.files_per_day

    events_dir = Path(events_dir)
    catalog_path = Path(catalog_path)
    events_dir.mkdir(parents=True, exist_ok=True)
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    cat_out = catalog.assign(updated_at=catalog["updated_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    _atomic_write(
        catalog_path,
        "".join(
            json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n"
            for rec in cat_out.to_dict(orient="records")
        ),
    )
    logger.info("generate: wrote catalog %s", catalog_path)

    # File slots: UTC calendar day x equal time slices of the day.
    abs_sec = ev.seconds + epoch
    first_day = epoch // _DAY
    last_day = (epoch + spec.days * _DAY - 1) // _DAY
    n_files = int(last_day - first_day + 1) * fpd
    file_of = (abs_sec // _DAY - first_day) * fpd + (abs_sec % _DAY) * fpd // _DAY
    lo = np.searchsorted(file_of, np.arange(n_files), side="left")
    hi = np.searchsorted(file_of, np.arange(n_files), side="right")

    n_dup = round(spec.duplicate_fraction * n)
    n_bad = round(spec.bad_fraction * n)
    width = _event_id_width(n)
    lines = _event_lines(spec, ev, width)

    # Duplicates: retries land after the original in the same file or in one of the next files.
    src = np.sort(rng.choice(n, size=n_dup, replace=False)) if n_dup else np.empty(0, np.int64)
    later = rng.random(n_dup) < 0.5
    dup_file = np.minimum(file_of[src] + later * rng.integers(1, 4, n_dup), n_files - 1)
    same = dup_file == file_of[src]
    u = rng.random(n_dup)
    dup_pos = np.where(
        same,
        src + u * (hi[dup_file] - src),
        lo[dup_file] + u * (hi[dup_file] - lo[dup_file]),
    )

    # Broken lines: built from a real event's neighbourhood, placed near it.
    tmpl = rng.integers(0, n, n_bad)
    bad_kind = rng.integers(0, 6, n_bad)
    bad_cut = rng.random(n_bad)
    bad_field = rng.integers(0, len(REQUIRED_FIELDS), n_bad)
    bad_file = file_of[tmpl]
    bad_pos = lo[bad_file] + rng.random(n_bad) * (hi[bad_file] - lo[bad_file])
    bad_lines = []
    for j, (t, k, c, f) in enumerate(
        zip(tmpl.tolist(), bad_kind.tolist(), bad_cut.tolist(), bad_field.tolist(), strict=True)
    ):
        rec = json.loads(lines[t])
        rec["event_id"] = f"e{n + j:0{width}d}"
        bad_lines.append(_bad_line(rec, k, c, f))

    all_lines = lines + [lines[s] for s in src.tolist()] + bad_lines
    files = np.concatenate([file_of, dup_file, bad_file])
    pos = np.concatenate([np.arange(n, dtype=np.float64), dup_pos, bad_pos])
    tie = np.concatenate([np.zeros(n), np.ones(n_dup), np.full(n_bad, 2.0)])
    order = np.lexsort((tie, pos, files))
    cuts = np.searchsorted(files[order], np.arange(n_files + 1))
    logger.info("generate: %d duplicates and %d bad lines added", n_dup, n_bad)

    assert len(names) == n_files
    for f, name in enumerate(names):
        chunk = order[cuts[f] : cuts[f + 1]].tolist()
        _atomic_write(events_dir / name, "".join(all_lines[i] + "\n" for i in chunk))
    logger.info("generate: wrote %d event files to %s", n_files, events_dir)

    return ShopSummary(
        users=int(np.unique(ev.user).size),
        items=spec.items,
        events=n,
        duplicates=n_dup,
        bad_lines=n_bad,
        files=n_files,
        first_event_time=datetime.fromtimestamp(int(abs_sec[0]), tz=timezone.utc),
        last_event_time=datetime.fromtimestamp(int(abs_sec[-1]), tz=timezone.utc),
    )

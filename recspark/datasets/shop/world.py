"""The shop's hidden world, drawn first: each item's category, popularity, latent vector and
shelf life, and each user's category preferences, latent vector, join day and activity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recspark.datasets.shop.spec import ShopSpec

LATENT_DIM = 8
_POP_ZIPF = 1.0  # base propensity of the item with popularity rank r is (r + 1) ** -_POP_ZIPF
_EXPLORE = 0.10  # share of sessions whose category follows the shop, not the user's taste
_NON_FAVOURITE_ALPHA = 0.10  # Dirichlet mass on non-favourite categories (favourites get 2.0)
_NEW_USER_FRACTION = 0.15  # users who only show up in the second half of the window
_NEW_ITEM_FRACTION = 0.03  # items released during the window
_UNAVAILABLE_FRACTION = 0.03  # items discontinued during the window (available=false)


@dataclass
class World:
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


def build_world(spec: ShopSpec, rng: np.random.Generator) -> World:
    """Draw categories, items and users with their hidden tastes."""
    n_items, n_cats, n_users = spec.items, spec.categories, spec.users
    # Uneven category sizes; every category gets at least one item.
    sizes = rng.multinomial(n_items - n_cats, rng.dirichlet(np.full(n_cats, 1.5))) + 1
    item_category = rng.permutation(np.repeat(np.arange(n_cats), sizes))
    # Long-tailed base propensity: a random global popularity rank with a power law.
    rank = rng.permutation(n_items)
    item_logpop = -_POP_ZIPF * np.log1p(rank)
    item_vec = rng.standard_normal((n_items, LATENT_DIM))

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
    user_vec = rng.standard_normal((n_users, LATENT_DIM))

    # Activity is long-tailed; some users only join in the second half of the window.
    activity = rng.lognormal(0.0, 1.1, n_users)
    join_day = np.zeros(n_users, dtype=np.int64)
    is_new = rng.random(n_users) < _NEW_USER_FRACTION if spec.days > 1 else np.zeros(n_users, bool)
    join_day[is_new] = rng.integers(spec.days // 2, spec.days, int(is_new.sum()))
    activity *= (spec.days - join_day) / spec.days  # same daily rate over a shorter window
    return World(
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


def world_of(spec: ShopSpec) -> World:
    """The hidden world of the shop ``spec`` describes: the generator draws it first from
    ``default_rng(spec.seed)``, so this is the world behind the shop ``write_shop`` wrote (what
    simulated shoppers share with the shop's history)."""
    return build_world(spec, np.random.default_rng(spec.seed))

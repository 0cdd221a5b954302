"""What a simulated shopper does with an item they are shown: known probabilities from the shop's
hidden world (``datasets.shop.world``), the same tastes the shop's history was generated from.

A user's **taste** for an item is the log of the weight the generator's sessions browse it with,
popularity aside::

    taste(u, i) = ln user_pref[u, category(i)] + user_vec[u] . item_vec[i] / sqrt(LATENT_DIM)

An item shown at position ``p`` (1 = first) of a list is then, independently of the others:

- clicked (a ``view``) with ``P(click) = sigmoid(CLICK_BIAS + taste) / sqrt(p)``;
- added to the cart, once clicked, with ``P(cart | click) = sigmoid(CART_BIAS + taste)``;
- bought, once in the cart, with ``P(buy | cart) = sigmoid(BUY_BIAS + taste)``.

So a list of a shopper's top-taste items is clicked and bought more than a random one, by an
amount the probabilities fix in advance: the oracle tests and experiments compare outcomes with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recspark.datasets.shop.spec import ShopSpec, item_ids, user_ids
from recspark.datasets.shop.world import LATENT_DIM, World, world_of

CLICK_BIAS = -1.5
CART_BIAS = -1.0
BUY_BIAS = 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Chances:
    """Per shown item (position 1 first): P(click), P(cart | click), P(buy | cart). An item the
    shop does not have has no taste: it is never clicked (``unknown`` counts such items)."""

    click: np.ndarray
    cart: np.ndarray
    buy: np.ndarray
    unknown: int

    @property
    def purchase(self) -> np.ndarray:
        """P(bought) of each shown item: click, then cart, then buy."""
        return self.click * self.cart * self.buy


class Tastes:
    """The shop's users and items with their hidden tastes, by the shop's ids."""

    def __init__(self, spec: ShopSpec, world: World | None = None) -> None:
        self.spec = spec
        self.world = world if world is not None else world_of(spec)
        self.users: list[str] = user_ids(spec).tolist()
        self.items: list[str] = item_ids(spec).tolist()
        self._user_index = {user: k for k, user in enumerate(self.users)}
        self._item_index = {item: k for k, item in enumerate(self.items)}

    def user_index(self, user_id: str) -> int:
        return self._user_index[user_id]

    def taste(self, user: int, items: np.ndarray) -> np.ndarray:
        """taste(u, i) of user index ``user`` for the item indices ``items`` (see the module)."""
        world = self.world
        affinity = world.item_vec[items] @ world.user_vec[user] / math.sqrt(LATENT_DIM)
        return np.log(world.user_pref[user, world.item_category[items]]) + affinity

    def top_items(self, user: int, n: int) -> list[str]:
        """The user's ``n`` highest-taste items, best first (ties by item order)."""
        scores = self.taste(user, np.arange(len(self.items)))
        return [self.items[k] for k in np.argsort(-scores, kind="stable")[:n].tolist()]

    def chances(self, user_id: str, shown: Sequence[str]) -> Chances:
        """What the user would do with each item of a list shown in this order."""
        known = np.array([item in self._item_index for item in shown], dtype=bool)
        index = np.array([self._item_index.get(item, 0) for item in shown], dtype=np.int64)
        taste = self.taste(self.user_index(user_id), index)
        position = np.arange(1, len(shown) + 1, dtype=np.float64)
        return Chances(
            click=np.where(known, _sigmoid(CLICK_BIAS + taste) / np.sqrt(position), 0.0),
            cart=np.where(known, _sigmoid(CART_BIAS + taste), 0.0),
            buy=np.where(known, _sigmoid(BUY_BIAS + taste), 0.0),
            unknown=int((~known).sum()),
        )

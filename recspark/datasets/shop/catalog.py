"""The shop's catalog, drawn from its hidden world: titles, categories, prices, availability
and when each item last changed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recspark.datasets.shop.spec import DAY, ShopSpec, item_ids, start_epoch
from recspark.datasets.shop.world import World

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


def build_catalog(spec: ShopSpec, world: World, rng: np.random.Generator) -> pd.DataFrame:
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
    start = start_epoch(spec)
    updated = start - rng.integers(DAY, 365 * DAY, spec.items)
    released = world.release_day > 0
    updated[released] = start + world.release_day[released] * DAY
    updated[~available] = start + world.end_day[~available] * DAY
    return pd.DataFrame(
        {
            "item_id": item_ids(spec),
            "title": titles,
            "category": np.array(cat_names, dtype=object)[cat],
            "price": price.round(2),
            "available": available,
            "updated_at": pd.to_datetime(updated, unit="s", utc=True).as_unit("ns"),
        }
    )

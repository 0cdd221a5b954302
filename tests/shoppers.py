"""Simulated shoppers with known outcomes, and a brute-force attribution in plain Python.

:func:`simulate` serves lists (impressions, as the lookup service logs them) to shoppers who click,
add to cart and buy what they were shown with each arm's known probabilities, plus the awkward
cases: repeated clicks, clicks after the window, clicks on items the list did not hold, clicks
whose impression never arrives. :func:`brute_force` applies the attribution rules of
``recspark.ingest.outcomes`` to a set of stored events, one event at a time: the oracle the lake's
``recommendation_outcomes`` must equal exactly.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from recspark.core.recommendation_ids import SERVED_AT_TOLERANCE, new_recommendation_id, served_at

ATTRIBUTED = {"view": "clicks", "add_to_cart": "add_to_carts", "purchase": "purchases"}


@dataclass(frozen=True)
class Arm:
    """What serves a share of the lists, and how its shoppers respond (per shown item)."""

    model_version: str | None
    variant: str | None
    click: float
    cart: float  # given a click
    buy: float  # given an add-to-cart
    sources: tuple[str, ...] = ("als",)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def prices_for(items: int) -> dict[str, float]:
    """Prices that are multiples of 0.25: sums of them are exact in floating point."""
    rng = random.Random(5)
    return {f"i{k:04d}": rng.randint(1, 400) * 0.25 for k in range(items)}


def simulate(
    *,
    lists: int,
    start: datetime,
    hours: float,
    arms: list[Arm],
    items: int = 120,
    users: int = 40,
    length: int = 5,
    window: timedelta = timedelta(hours=24),
    seed: int = 1,
) -> list[dict]:
    """Events (contract dicts, times as text) of ``lists`` served lists and what followed."""
    rng = random.Random(seed)
    catalog = [f"i{k:04d}" for k in range(items)]
    events: list[dict] = []
    serial = 0

    def act(kind: str, rid: str, user: str, item: str, at: datetime, value: float | None = None) -> None:
        nonlocal serial
        serial += 1
        record: dict[str, object] = {
            "event_id": f"e{seed}-{serial}",
            "event_time": iso(at),
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            "recommendation_id": rid,
        }
        if value is not None:
            record["value"] = value
        events.append(record)

    for k in range(lists):
        arm = arms[k % len(arms)]
        shown_at = start + timedelta(seconds=rng.uniform(0, hours * 3600))
        shown_at = shown_at.replace(microsecond=shown_at.microsecond // 1000 * 1000)
        rid = new_recommendation_id(int(shown_at.timestamp() * 1000), rng.randbytes(10))
        user = f"u{rng.randrange(users):03d}"
        shown = rng.sample(catalog, length)
        kind = rng.choice(["recommendations", "recommendations", "similar_items"])
        impression = {
            "event_id": rid,
            "event_time": iso(shown_at),
            "user_id": user,
            "event_type": "impression",
            "recommendation_id": rid,
            "items": shown,
            "list": kind,
            "sources": [rng.choice(arm.sources) for _ in shown],
        }
        if kind == "similar_items":
            impression["item_id"] = rng.choice(catalog)
        if arm.model_version is not None:
            impression["model_version"] = arm.model_version
        if arm.variant is not None:
            impression["variant"] = arm.variant
        if rng.random() > 0.05:  # 5% of impressions are lost on the way: their clicks stay orphans
            events.append(impression)
        for position, item in enumerate(shown, start=1):
            if rng.random() >= arm.click / position**0.5:
                continue
            clicked_at = shown_at + timedelta(seconds=rng.uniform(1, 3600))
            act("view", rid, user, item, clicked_at)
            if rng.random() < 0.15:  # the shopper comes back to it from the same list
                act("view", rid, user, item, clicked_at + timedelta(minutes=5))
            if rng.random() < arm.cart:
                act("add_to_cart", rid, user, item, clicked_at + timedelta(minutes=2))
                if rng.random() < arm.buy:
                    act(
                        "purchase",
                        rid,
                        user,
                        item,
                        clicked_at + timedelta(minutes=9),
                        rng.choice([1, 1, 2, 3]),
                    )
        if rng.random() < 0.05:  # a view of something the list did not show, carrying its id
            act("view", rid, user, rng.choice([c for c in catalog if c not in shown]), shown_at)
        if rng.random() < 0.05:  # a purchase long after the window
            act("purchase", rid, user, shown[0], shown_at + window + timedelta(hours=2), 1)
    return events


def retried(events: list[dict], share: float, seed: int = 2) -> list[dict]:
    """``events`` plus exact copies of a ``share`` of them (producers retry)."""
    rng = random.Random(seed)
    return events + [dict(e) for e in events if rng.random() < share]


def brute_force(
    events: list[dict], prices: dict[str, float], window: timedelta
) -> tuple[dict[tuple, dict[str, float]], Counter]:
    """The outcome rows (key -> metrics) and the issue counts of a set of stored events."""
    stored = {e["event_id"]: e for e in events}.values()  # one copy of each event_id
    impressions = {e["recommendation_id"]: e for e in stored if e["event_type"] == "impression"}
    rows: dict[tuple, dict[str, float]] = defaultdict(
        lambda: {"impressions": 0, "clicks": 0, "add_to_carts": 0, "purchases": 0, "revenue": 0.0}
    )

    def key(imp: dict, position: int) -> tuple:
        sources = imp.get("sources")
        return (
            served_at(imp["recommendation_id"]).date(),
            imp.get("model_version"),
            imp.get("variant"),
            imp.get("list"),
            sources[position - 1] if sources else None,
            position,
        )

    for imp in impressions.values():
        for position in range(1, len(imp["items"]) + 1):
            rows[key(imp, position)]["impressions"] += 1
    issues: Counter = Counter()
    acted: set[tuple[str, int, str]] = set()
    for e in stored:
        if e["event_type"] not in ATTRIBUTED or e.get("recommendation_id") is None:
            continue
        rid = e["recommendation_id"]
        at = datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
        shown_at = served_at(rid)
        if not shown_at - SERVED_AT_TOLERANCE <= at <= shown_at + window:
            issues["outside the attribution window"] += 1
            continue
        imp = impressions.get(rid)
        if imp is None:
            issues["no impression (yet)"] += 1
            continue
        if e["item_id"] not in imp["items"]:
            issues["item not in the list"] += 1
            continue
        position = imp["items"].index(e["item_id"]) + 1
        metric = ATTRIBUTED[e["event_type"]]
        if (rid, position, metric) not in acted:
            acted.add((rid, position, metric))
            rows[key(imp, position)][metric] += 1
        if e["event_type"] == "purchase":
            price = prices.get(e["item_id"])
            if price is None:
                issues["purchase without a catalog price"] += 1
            else:
                rows[key(imp, position)]["revenue"] += e.get("value", 1) * price
    return dict(rows), issues

"""Simulated days of shoppers in front of the running lookup service.

Each day, ``visits_per_day`` distinct shoppers (drawn by the shop's activity weights) ask the
service for their list, one real HTTP request each, and act on every item shown with the known
probabilities of ``tastes`` (three uniform draws per shown item from ``default_rng(seed)``, so the
same lists and seed give the same outcomes). What they do becomes contract events: a ``view`` per
click, an ``add_to_cart`` and a ``purchase`` (quantity 1), each with the ``recommendation_id`` of
the list it came from, written at the end of the day as one file into the landing folder (under a
dot-name, then renamed), as a producer does. The service writes the lists' impressions itself.

Time: the service stamps each list with the real clock (its ``recommendation_id``), and
attribution counts only events within the window after that time, so a simulated day is the
stretch of real time its visits take, and each event's ``event_time`` is the real time the
shopper acted: at or after its list's time, inside its day. Bounds: ``days x visits_per_day``
lists, every request within ``request_timeout`` and nothing past ``time_limit`` seconds from the
start; a service that does not answer stops the run with :class:`LookupServiceError`, after the
events of the lists already shown are written.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recspark.core.recommendation_ids import served_at_ms
from recspark.datasets.shop.files import write_atomically
from recspark.datasets.shoppers.lookup_client import LookupClient, LookupServiceError, ServedList
from recspark.datasets.shoppers.tastes import Tastes

log = logging.getLogger(__name__)

DEFAULT_VISITS_PER_DAY = 200
ACTIONS = ("view", "add_to_cart", "purchase")  # click, add to cart, buy: what a shown item may get


@dataclass(frozen=True)
class ListSeen:
    """One list a shopper was shown, what they were expected to do with it and what they did."""

    day: int
    user_id: str
    served: ServedList
    click_chances: tuple[float, ...]  # P(click) per position
    purchase_chances: tuple[float, ...]  # P(click, cart and buy) per position
    clicked: tuple[str, ...]
    carted: tuple[str, ...]
    bought: tuple[str, ...]
    unknown_items: int  # shown items the shop does not have (never clicked)

    @property
    def expected_clicks(self) -> float:
        return float(sum(self.click_chances))

    @property
    def expected_click_rate(self) -> float:
        """The expected share of the list's items clicked (0 for an empty list)."""
        return self.expected_clicks / len(self.click_chances) if self.click_chances else 0.0

    @property
    def expected_purchases(self) -> float:
        return float(sum(self.purchase_chances))


@dataclass
class DayCounts:
    """One simulated day: lists shown, items shown, what was done, and what was expected."""

    day: int
    started_at: datetime
    ended_at: datetime | None = None
    lists: int = 0
    fallback_lists: int = 0
    shown: int = 0
    unknown_items: int = 0  # shown items the shop does not have (never clicked)
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    expected_clicks: float = 0.0
    expected_purchases: float = 0.0
    events_file: Path | None = None


@dataclass
class SimulationReport:
    """Every day's counts and every list seen, in the order they happened."""

    days: list[DayCounts] = field(default_factory=list)
    lists: list[ListSeen] = field(default_factory=list)
    requests: int = 0

    def totals(self) -> dict[str, float]:
        names = ("lists", "shown", "clicks", "add_to_carts", "purchases")
        found: dict[str, float] = {name: sum(getattr(day, name) for day in self.days) for name in names}
        found["expected_clicks"] = sum(day.expected_clicks for day in self.days)
        found["expected_purchases"] = sum(day.expected_purchases for day in self.days)
        return found

    def render(self) -> str:
        """The per-day table the command prints."""
        header = f"{'day':>4} {'lists':>6} {'shown':>7} {'clicks':>7} {'expected':>9} {'carts':>6} "
        header += f"{'purchases':>9} {'expected':>9}  events file"
        rows = [header]
        for d in self.days:
            rows.append(
                f"{d.day:>4} {d.lists:>6} {d.shown:>7} {d.clicks:>7} {d.expected_clicks:>9.1f} "
                f"{d.add_to_carts:>6} {d.purchases:>9} {d.expected_purchases:>9.2f}  "
                f"{d.events_file.name if d.events_file else '-'}"
            )
        return "\n".join(rows) + "\n"


def simulate_shoppers(
    tastes: Tastes,
    api_url: str,
    landing: Path,
    *,
    days: int,
    visits_per_day: int,
    list_size: int | None = None,
    seed: int = 0,
    time_limit: float = 300.0,
    request_timeout: float = 5.0,
) -> SimulationReport:
    """Run ``days`` simulated days against the service at ``api_url``; the events land in
    ``landing``. ValueError for settings that cannot run; LookupServiceError when the service
    gives no list in time (the events of lists already shown are written first)."""
    n_users = len(tastes.users)
    if days < 1 or visits_per_day < 1:
        raise ValueError(f"days and visits per day must be at least 1, got {days} and {visits_per_day}")
    if visits_per_day > n_users:
        raise ValueError(f"{visits_per_day} visits per day, but the shop has only {n_users} users")
    if list_size is not None and list_size < 1:
        raise ValueError(f"the list size must be at least 1, got {list_size}")
    if not time_limit > 0:
        raise ValueError(f"the time limit must be > 0 seconds, got {time_limit}")
    client = LookupClient(api_url, deadline=time.monotonic() + time_limit, request_timeout=request_timeout)
    rng = np.random.default_rng(seed)
    activity = tastes.world.user_activity
    report = SimulationReport()
    for day in range(1, days + 1):
        counts = DayCounts(day=day, started_at=datetime.now(timezone.utc))
        report.days.append(counts)
        lines: list[str] = []
        try:
            for user in rng.choice(n_users, size=visits_per_day, replace=False, p=activity).tolist():
                user_id = tastes.users[user]
                served = client.user_list(user_id, list_size)
                seen = _act(day, user_id, served, tastes, rng)
                report.lists.append(seen)
                lines.extend(_event_lines(seen))
                _count(counts, seen)
        except LookupServiceError as error:
            raise LookupServiceError(
                f"{error} (stopped on day {day} of {days} after {len(report.lists)} lists; their events "
                f"are in {landing})"
            ) from error
        finally:
            counts.events_file = _write_day(landing, day, lines)
            counts.ended_at = datetime.now(timezone.utc)
            report.requests = client.requests
        log.info(
            "simulate-shoppers: day %d: %d lists, %d clicks (%.1f expected), %d purchases",
            day,
            counts.lists,
            counts.clicks,
            counts.expected_clicks,
            counts.purchases,
        )
    return report


def _act(day: int, user_id: str, served: ServedList, tastes: Tastes, rng: np.random.Generator) -> ListSeen:
    """The shopper's clicks, carts and purchases on one list (three draws per shown item)."""
    chances = tastes.chances(user_id, served.items)
    draws = rng.random((3, len(served.items)))
    clicked = draws[0] < chances.click
    carted = clicked & (draws[1] < chances.cart)
    bought = carted & (draws[2] < chances.buy)
    items = np.array(served.items, dtype=object)
    return ListSeen(
        day=day,
        user_id=user_id,
        served=served,
        click_chances=tuple(chances.click.tolist()),
        purchase_chances=tuple(chances.purchase.tolist()),
        clicked=tuple(items[clicked].tolist()),
        carted=tuple(items[carted].tolist()),
        bought=tuple(items[bought].tolist()),
        unknown_items=chances.unknown,
    )


def _count(counts: DayCounts, seen: ListSeen) -> None:
    counts.lists += 1
    counts.fallback_lists += int(seen.served.fallback)
    counts.shown += len(seen.served.items)
    counts.unknown_items += seen.unknown_items
    counts.clicks += len(seen.clicked)
    counts.add_to_carts += len(seen.carted)
    counts.purchases += len(seen.bought)
    counts.expected_clicks += seen.expected_clicks
    counts.expected_purchases += seen.expected_purchases


def _iso(ms: int) -> str:
    at = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _event_lines(seen: ListSeen) -> list[str]:
    """The list's events in the order the shopper did them (position by position: view, then
    add-to-cart, then purchase), each a millisecond after the one before, from now (never before
    the list was served). An event's id is its list's id, the position and the action."""
    rid = seen.served.recommendation_id
    at = max(time.time_ns() // 1_000_000, served_at_ms(rid))
    done = {"view": set(seen.clicked), "add_to_cart": set(seen.carted), "purchase": set(seen.bought)}
    lines = []
    for position, item in enumerate(seen.served.items, start=1):
        for action in ACTIONS:
            if item not in done[action]:
                continue
            record = {
                "event_id": f"{rid}-{position}-{action}",
                "event_time": _iso(at),
                "user_id": seen.user_id,
                "item_id": item,
                "event_type": action,
                "recommendation_id": rid,
            }
            lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
            at += 1
    return lines


def _write_day(landing: Path, day: int, lines: list[str]) -> Path | None:
    """The day's events as one new file in the landing folder (none for a day without any)."""
    if not lines:
        return None
    landing.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = landing / f"shoppers-{stamp}-day{day:03d}-{uuid.uuid4().hex[:8]}.jsonl"
    write_atomically(path, "".join(line + "\n" for line in lines))
    return path

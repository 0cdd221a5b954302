"""Simulated shoppers in front of the real lookup service (`recspark api` in a subprocess on
127.0.0.1, over lakes written with delta-rs; no JVM): their events are contract events carrying
ids the service served and logged; a lake of each shopper's top-taste items gets the clicks and
purchases the known probabilities predict, significantly more than random lists; a service that
is down, silent or not loaded stops the run with a clear error within its time limit."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from recspark.core.contract import ATTRIBUTED_EVENT_TYPES, IMPRESSION, MAX_ID_LENGTH, REQUIRED_FIELDS
from recspark.core.recommendation_ids import SERVED_AT_TOLERANCE, is_recommendation_id, served_at
from recspark.datasets.shop.events import simulate
from recspark.datasets.shop.spec import ShopSpec, item_ids, user_ids
from recspark.datasets.shop.world import LATENT_DIM, world_of
from recspark.datasets.shoppers.lookup_client import LookupServiceError
from recspark.datasets.shoppers.simulation import SimulationReport, simulate_shoppers
from recspark.datasets.shoppers.tastes import BUY_BIAS, CART_BIAS, CLICK_BIAS, Tastes
from tests.processes import api_command, free_port, stop

ROOT = Path(__file__).resolve().parents[2]
SPEC = ShopSpec(users=300, items=200, categories=10, events=1_500, days=10, seed=3)
N = 10
AT = datetime(2026, 12, 1, tzinfo=timezone.utc)
# The contract's event_time: ISO-8601 with an offset (ingest's own pattern, recspark/ingest/parse.py).
ISO_8601_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture(scope="module")
def tastes() -> Tastes:
    return Tastes(SPEC)


class Api:
    """`recspark api` over ``lake`` in a subprocess on a free port of 127.0.0.1, its impressions
    in ``landing`` (flushed every 0.2 s); ``loaded``: wait until /health says the lists are in."""

    def __init__(self, lake: Path, landing: Path, log: Path, loaded: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = [
            f"lake.root={lake}",
            "catalog.path=null",
            f"api.port={self.port}",
            "api.poll_seconds=0.2",
            f"ingest.path={landing}",
            "impressions.flush_seconds=0.2",
        ]
        self.command = api_command(settings)
        self.log, self.loaded = log, loaded
        self.process: subprocess.Popen | None = None

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def __enter__(self) -> Api:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                status, _ = self.health()
                if status == 200 or not self.loaded:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the service did not start: {self.log.read_text()}")

    def written(self, lists: int) -> None:
        """Wait until the service has written the impressions of ``lists`` lists."""
        deadline = time.monotonic() + 30
        while self.health()[1]["impressions"]["written"] < lists:
            assert time.monotonic() < deadline, self.health()
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        stop(self.process)


def write_lake(path: Path, lists: dict[str, list[str]]) -> Path:
    """A ``recommendations`` table (delta-rs) holding each user's list in rank order."""
    rows = [(user, rank, item) for user, items in lists.items() for rank, item in enumerate(items, 1)]
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "rank": pa.array([r[1] for r in rows], pa.int32()),
            "item_id": pa.array([r[2] for r in rows], pa.string()),
            "score": pa.array([1.0 / r[1] for r in rows], pa.float64()),
            "source": pa.array(["als"] * len(rows), pa.string()),
            "model_version": pa.array(["1"] * len(rows), pa.string()),
            "generated_at": pa.array([AT] * len(rows), pa.timestamp("us", tz="UTC")),
            "because_item_id": pa.array([None] * len(rows), pa.string()),
        }
    )
    write_deltalake(str(path / "recommendations"), table)
    return path


def top_lists(tastes: Tastes) -> dict[str, list[str]]:
    return {user: tastes.top_items(k, N) for k, user in enumerate(tastes.users)}


def random_lists(tastes: Tastes, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    return {
        user: [tastes.items[k] for k in rng.choice(len(tastes.items), N, replace=False)]
        for user in tastes.users
    }


def landed(landing: Path, prefix: str) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(landing.glob(f"{prefix}-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


# --------------------------------------------------------------------------------------------
# the world and the probabilities


def test_the_shoppers_world_is_the_one_the_shop_was_generated_from() -> None:
    catalog, _ = simulate(SPEC, np.random.default_rng(SPEC.seed))
    names = sorted(set(catalog["category"]), key=list(catalog["category"]).index)
    world = world_of(SPEC)
    first_of = {c: names[k] for k, c in enumerate(dict.fromkeys(world.item_category.tolist()))}
    assert [first_of[c] for c in world.item_category.tolist()] == catalog["category"].tolist()
    assert world.user_vec.shape == (SPEC.users, LATENT_DIM)


def brute_force_chances(user: int, position: int, item: str) -> tuple[float, float, float]:
    """The documented formula, one item at a time from the world's arrays."""
    world = world_of(SPEC)
    k = list(item_ids(SPEC)).index(item)
    affinity = sum(world.user_vec[user][d] * world.item_vec[k][d] for d in range(LATENT_DIM))
    taste = math.log(world.user_pref[user][world.item_category[k]]) + affinity / math.sqrt(LATENT_DIM)

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    return (
        sigmoid(CLICK_BIAS + taste) / math.sqrt(position),
        sigmoid(CART_BIAS + taste),
        sigmoid(BUY_BIAS + taste),
    )


def test_chances_follow_the_documented_formula(tastes: Tastes) -> None:
    rng = np.random.default_rng(4)
    for user in rng.choice(SPEC.users, 5, replace=False).tolist():
        shown = [tastes.items[k] for k in rng.choice(SPEC.items, 6, replace=False)] + ["not-in-the-shop"]
        chances = tastes.chances(user_ids(SPEC)[user], shown)
        for position, item in enumerate(shown[:-1], 1):
            expected = brute_force_chances(user, position, item)
            found = (chances.click[position - 1], chances.cart[position - 1], chances.buy[position - 1])
            assert found == pytest.approx(expected, rel=1e-9)
        assert (chances.click[-1], chances.unknown) == (0.0, 1)
    # A user's top items, best first, are the list with the most expected clicks (rearrangement).
    user = user_ids(SPEC)[7]
    best = tastes.chances(user, tastes.top_items(7, N)).click.sum()
    for _ in range(50):
        other = [tastes.items[k] for k in rng.choice(SPEC.items, N, replace=False)]
        assert tastes.chances(user, other).click.sum() <= best


# --------------------------------------------------------------------------------------------
# against the running service


def test_events_are_contract_events_naming_lists_the_service_served_and_logged(
    tastes: Tastes, tmp_path: Path
) -> None:
    """Every event is a valid contract line (view / add_to_cart / purchase with a well-formed
    recommendation_id); its id is one the service answered and wrote an impression for, its item
    is in that list, its time in its day and inside the attribution window of its list; the events
    are exactly what the report says was done; files were renamed into place."""
    lake = write_lake(tmp_path / "lake", top_lists(tastes))
    landing = tmp_path / "landing"
    with Api(lake, landing, tmp_path / "api.log") as api:
        report = simulate_shoppers(tastes, api.url, landing, days=2, visits_per_day=40, list_size=N, seed=1)
        api.written(len(report.lists))
    assert [d.lists for d in report.days] == [40, 40] and report.requests == 80
    assert not list(landing.glob(".*"))  # nothing left half-written
    impressions = {
        e["recommendation_id"]: e for e in landed(landing, "impressions") if e["event_type"] == IMPRESSION
    }
    served = {seen.served.recommendation_id: seen for seen in report.lists}
    assert served.keys() == impressions.keys()
    events = landed(landing, "shoppers")
    assert sum(d.clicks + d.add_to_carts + d.purchases for d in report.days) == len(events) > 20
    assert len({e["event_id"] for e in events}) == len(events)
    days = {d.day: d for d in report.days}
    done: dict[tuple[str, str, str], int] = {}
    for event in events:
        for name in REQUIRED_FIELDS:
            assert isinstance(event[name], str) and event[name].strip(), (name, event)
            assert len(event[name]) <= MAX_ID_LENGTH
        assert event["event_type"] in ATTRIBUTED_EVENT_TYPES
        assert ISO_8601_WITH_OFFSET.match(event["event_time"]), event
        rid = event["recommendation_id"]
        assert is_recommendation_id(rid) and rid in impressions
        seen = served[rid]
        assert event["user_id"] == seen.user_id == impressions[rid]["user_id"]
        assert event["item_id"] in impressions[rid]["items"] == list(seen.served.items)
        at = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
        day = days[seen.day]
        assert day.ended_at is not None
        assert day.started_at - timedelta(milliseconds=1) <= at <= day.ended_at + timedelta(seconds=1)
        assert served_at(rid) <= at <= served_at(rid) + SERVED_AT_TOLERANCE
        done[(rid, event["item_id"], event["event_type"])] = (
            done.get((rid, event["item_id"], event["event_type"]), 0) + 1
        )
    expected = {
        (rid, item, kind): 1
        for rid, seen in served.items()
        for kind, items in (("view", seen.clicked), ("add_to_cart", seen.carted), ("purchase", seen.bought))
        for item in items
    }
    assert done == expected
    assert all(set(s.bought) <= set(s.carted) <= set(s.clicked) for s in report.lists)


def _sd(chances: list[float]) -> float:
    return math.sqrt(sum(p * (1 - p) for p in chances))


def _run(lake: Path, tastes: Tastes, tmp_path: Path, name: str) -> SimulationReport:
    with Api(lake, tmp_path / f"{name}-landing", tmp_path / f"{name}.log") as api:
        return simulate_shoppers(
            tastes, api.url, tmp_path / f"{name}-landing", days=3, visits_per_day=60, list_size=N, seed=7
        )


def test_top_taste_lists_get_the_clicks_and_purchases_the_probabilities_predict(
    tastes: Tastes, tmp_path: Path
) -> None:
    """Two lakes: each user's top-taste items, or random items. The service serves them as
    written; every list's expected clicks are the documented formula; each run's clicks and
    purchases lie within 4 standard deviations of what the probabilities predict, and the
    top-taste lists get significantly more of both (same shoppers, same seed)."""
    lists = {"top": top_lists(tastes), "random": random_lists(tastes, 5)}
    reports = {
        name: _run(write_lake(tmp_path / name, written), tastes, tmp_path, name)
        for name, written in lists.items()
    }
    for name, report in reports.items():
        assert len(report.lists) == 180
        for seen in report.lists:
            assert list(seen.served.items) == lists[name][seen.user_id] and not seen.served.fallback
        seen = report.lists[0]
        user = tastes.user_index(seen.user_id)
        assert seen.click_chances == pytest.approx(
            [brute_force_chances(user, p, item)[0] for p, item in enumerate(seen.served.items, 1)]
        )
        clicks = [p for s in report.lists for p in s.click_chances]
        purchases = [p for s in report.lists for p in s.purchase_chances]
        totals = report.totals()
        assert abs(totals["clicks"] - sum(clicks)) <= 4 * _sd(clicks) + 1, name
        assert abs(totals["purchases"] - sum(purchases)) <= 4 * _sd(purchases) + 1, name
        assert totals["expected_clicks"] == pytest.approx(sum(clicks))
    top, rand = reports["top"], reports["random"]
    assert [s.user_id for s in top.lists] == [s.user_id for s in rand.lists]  # the same visits
    for better, worse in zip(top.lists, rand.lists, strict=True):
        assert better.expected_click_rate >= worse.expected_click_rate
    for metric, chances in (("clicks", "click_chances"), ("purchases", "purchase_chances")):
        spread = math.sqrt(
            sum(_sd([p for s in r.lists for p in getattr(s, chances)]) ** 2 for r in (top, rand))
        )
        z = (top.totals()[metric] - rand.totals()[metric]) / spread
        assert z > 5, (metric, top.totals(), rand.totals())


# --------------------------------------------------------------------------------------------
# bounds


def test_a_service_that_is_down_silent_or_not_loaded_stops_the_run_within_its_time_limit(
    tastes: Tastes, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"

    def stopped(url: str, match: str, limit: float = 2.0) -> None:
        started = time.monotonic()
        with pytest.raises(LookupServiceError, match=match) as raised:
            simulate_shoppers(
                tastes, url, landing, days=3, visits_per_day=5, seed=1, time_limit=limit, request_timeout=0.5
            )
        assert time.monotonic() - started < limit + 1.5
        assert "stopped on day 1 of 3 after 0 lists" in str(raised.value)

    stopped(
        f"http://127.0.0.1:{free_port()}", r"no answer to GET /v1/users/.* within the time limit: .*refused"
    )
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        stopped(f"http://127.0.0.1:{silent.getsockname()[1]}", "within the time limit: .*timed out")
    (tmp_path / "empty-lake").mkdir()
    with Api(tmp_path / "empty-lake", tmp_path / "api-landing", tmp_path / "api.log", loaded=False) as api:
        stopped(api.url, "within the time limit: HTTP 503")
    assert not landing.exists() or not list(landing.iterdir())
    with pytest.raises(LookupServiceError, match="must be http://HOST:PORT"):
        simulate_shoppers(tastes, "127.0.0.1:80", landing, days=1, visits_per_day=1)
    with pytest.raises(ValueError, match="only 300 users"):
        simulate_shoppers(tastes, "http://127.0.0.1:1", landing, days=1, visits_per_day=301)


# --------------------------------------------------------------------------------------------
# the command


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recspark.cli", "simulate-shoppers", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_runs_days_against_the_service_and_fails_in_one_line(
    tastes: Tastes, tmp_path: Path
) -> None:
    lake = write_lake(tmp_path / "lake", top_lists(tastes))
    landing = tmp_path / "landing"
    shop = [
        f"generate.{k}={getattr(SPEC, k)}" for k in ("users", "items", "categories", "events", "days", "seed")
    ]
    settings = [a for s in [*shop, f"ingest.path={landing}"] for a in ("--set", s)]
    with Api(lake, tmp_path / "api-landing", tmp_path / "api.log") as api:
        done = _cli("--days", "2", "--visits", "15", "--api-url", api.url, "--seed", "3", *settings)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["day", "lists", "shown"]
    assert [line.split()[:3] for line in lines[1:3]] == [["1", "15", "150"], ["2", "15", "150"]]
    assert lines[3].startswith(f"30 lists from {api.url}: ")
    events = landed(landing, "shoppers")
    assert events and all(e["event_type"] in ATTRIBUTED_EVENT_TYPES for e in events)

    down = _cli("--api-url", f"http://127.0.0.1:{free_port()}", "--time-limit", "1", *settings)
    assert down.returncode == 2
    assert (
        down.stderr.strip()
        .splitlines()[-1]
        .startswith("recspark simulate-shoppers: error: the lookup service at")
    )
    wrong = _cli("--visits", "0", *settings)
    assert wrong.returncode == 2 and "visits per day must be at least 1" in wrong.stderr

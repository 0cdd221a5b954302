"""Tests for the synthetic shop generator: the file contract, the noise, and the story's shape.

Every event line is parsed and checked against the public data contract, so the ingestion stage
can rely on "valid lines are valid, broken lines are broken" without trusting the generator.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.datasets.shop.events import generate_events
from recspark.datasets.shop.files import LandingNotEmptyError, ShopSummary, write_shop
from recspark.datasets.shop.spec import ShopSpec

EVENT_TYPES = {"view", "add_to_cart", "remove_from_cart", "purchase", "rating"}
REQUIRED = ("event_id", "event_time", "user_id", "item_id", "event_type")
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
FILE_NAME = re.compile(r"^events-(\d{8})-(\d{2})\.jsonl$")

SMALL = ShopSpec(
    users=300,
    items=200,
    categories=10,
    events=20_000,
    days=10,
    seed=3,
    files_per_day=2,
    bad_fraction=0.01,
    duplicate_fraction=0.02,
)
TINY = ShopSpec(users=50, items=40, categories=5, events=1_000, days=3, seed=5)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def contract_problem(line: str) -> str | None:
    """Why ``line`` breaks the event contract, or None when it is a valid event."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "json"
    if not isinstance(rec, dict):
        return "json"
    for field in REQUIRED:
        if field not in rec:
            return "missing"
        if not isinstance(rec[field], str) or not rec[field]:
            return f"empty {field}"
    if rec["event_type"] not in EVENT_TYPES:
        return "event_type"
    if not ISO_Z.match(rec["event_time"]):
        return "event_time"
    try:
        _parse_time(rec["event_time"])
    except ValueError:
        return "event_time"
    value = rec.get("value")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if rec["event_type"] == "rating" and not (is_int and 1 <= value <= 5):
        return "value"
    if rec["event_type"] == "purchase" and "value" in rec and not (is_int and value >= 1):
        return "value"
    if rec["event_type"] not in ("rating", "purchase") and "value" in rec:
        return "value"
    if "session_id" in rec and not isinstance(rec["session_id"], str):
        return "session_id"
    return None


@dataclass
class Written:
    summary: ShopSummary
    events_dir: Path
    catalog_path: Path
    files: list[str]  # event file names in sorted (= time) order
    lines: list[tuple[int, str]]  # (file index, line text) in file order
    problems: list[str | None]


def _write(spec: ShopSpec, root: Path) -> Written:
    events_dir, catalog_path = root / "events", root / "lake" / "catalog.jsonl"
    summary = write_shop(spec, events_dir, catalog_path)
    files = sorted(p.name for p in events_dir.iterdir())
    lines = [
        (f, line)
        for f, name in enumerate(files)
        for line in (events_dir / name).read_text(encoding="utf-8").splitlines()
    ]
    return Written(summary, events_dir, catalog_path, files, lines, [contract_problem(t) for _, t in lines])


def _valid_ids(written: Written) -> set[str]:
    pairs = zip(written.lines, written.problems, strict=True)
    return {json.loads(text)["event_id"] for (_, text), problem in pairs if problem is None}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Written:
    return _write(SMALL, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def default_shop() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_events(ShopSpec())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    _write(TINY, tmp_path / "a")
    _write(TINY, tmp_path / "b")
    _write(replace(TINY, seed=6), tmp_path / "c")
    a, b, c = (_tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a != c
    assert all(a[k] != c[k] for k in a if k.startswith("events/"))


def test_existing_event_files_are_never_replaced(tmp_path: Path) -> None:
    """Spark's file source tracks files by path: a replaced, already-ingested file is lost."""
    fresh = _write(TINY, tmp_path / "fresh")
    target = tmp_path / "rerun"
    (target / "events").mkdir(parents=True)
    (target / "events" / fresh.files[1]).write_text("already ingested\n")
    (target / "lake").mkdir()
    (target / "lake" / "catalog.jsonl").write_text("old catalog\n")

    first = re.escape(fresh.files[1])
    with pytest.raises(
        LandingNotEmptyError, match=rf"^1 of the {len(fresh.files)} event files .*first: {first}"
    ):
        _write(TINY, target)

    assert [p.name for p in (target / "events").iterdir()] == [fresh.files[1]]  # nothing written
    assert (target / "events" / fresh.files[1]).read_text() == "already ingested\n"
    assert issubclass(LandingNotEmptyError, FileExistsError)
    # Without the event file, the same folder is fine: the catalog is replaced (it is re-read whole).
    (target / "events" / fresh.files[1]).unlink()
    _write(TINY, target)
    assert _tree_bytes(target) == _tree_bytes(tmp_path / "fresh")


def test_generate_command_exits_2_on_existing_event_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = ["--set", f"ingest.path={tmp_path / 'events'}", "--set", f"catalog.path={tmp_path / 'c.jsonl'}"]
    sizes = ["--users", "50", "--items", "40", "--events", "1000", "--days", "3"]
    assert main(["generate", *sizes, *paths]) == 0
    capsys.readouterr()

    assert main(["generate", *sizes, *paths]) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith("recspark generate: error: 3 of the 3 event files to write already exist")
    assert "pick an empty folder" in err


def test_file_names_slots_and_no_temporary_files(small: Written) -> None:
    assert len(small.files) == small.summary.files == SMALL.days * SMALL.files_per_day
    assert not [p for p in small.events_dir.iterdir() if p.name.startswith(".")]
    assert not [p for p in small.catalog_path.parent.iterdir() if p.name.startswith(".")]
    first = SMALL.start.strftime("%Y%m%d")
    assert small.files[0] == f"events-{first}-00.jsonl"
    seen: set[str] = set()
    for (f, text), problem in zip(small.lines, small.problems, strict=True):
        rec = json.loads(text) if problem is None else None
        if rec is None or rec["event_id"] in seen:
            continue
        seen.add(rec["event_id"])
        # The first copy of every event sits in the file of its own day and time slice.
        when = _parse_time(rec["event_time"])
        day, slot = FILE_NAME.match(small.files[f]).groups()
        assert when.strftime("%Y%m%d") == day
        seconds = when.hour * 3600 + when.minute * 60 + when.second
        assert seconds * SMALL.files_per_day // 86_400 == int(slot)


def test_every_valid_line_follows_the_contract(small: Written) -> None:
    s = small.summary
    valid = [text for (_, text), p in zip(small.lines, small.problems, strict=True) if p is None]
    assert len(valid) == s.events + s.duplicates
    end = SMALL.start + timedelta(days=SMALL.days)
    types: Counter[str] = Counter()
    for text in valid:
        rec = json.loads(text)
        assert set(rec) <= {*REQUIRED, "value", "session_id"}
        assert isinstance(rec["session_id"], str) and rec["session_id"]
        assert SMALL.start <= _parse_time(rec["event_time"]) < end
        types[rec["event_type"]] += 1
    assert set(types) == EVENT_TYPES
    assert types["view"] > types["add_to_cart"] > types["purchase"] > types["rating"]
    assert s.first_event_time >= SMALL.start and s.last_event_time < end


def test_bad_lines_are_broken_in_every_documented_way(small: Written) -> None:
    s = small.summary
    bad = [p for p in small.problems if p is not None]
    assert len(bad) == s.bad_lines == round(SMALL.bad_fraction * s.events)
    assert 0.5 * SMALL.bad_fraction < len(bad) / len(small.lines) < 1.5 * SMALL.bad_fraction
    assert set(bad) == {"json", "missing", "event_type", "event_time", "value", "empty user_id"}
    # Bad lines never reuse the id of a real event.
    valid_ids = _valid_ids(small)
    for (_, text), problem in zip(small.lines, small.problems, strict=True):
        if problem not in (None, "json", "missing"):
            assert json.loads(text)["event_id"] not in valid_ids


def test_duplicates_are_verbatim_in_the_same_or_a_later_file(small: Written) -> None:
    copies: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (f, text), problem in zip(small.lines, small.problems, strict=True):
        if problem is None:
            copies[json.loads(text)["event_id"]].append((f, text))
    assert len(copies) == small.summary.events
    extra = sum(len(c) - 1 for c in copies.values())
    assert extra == small.summary.duplicates == round(SMALL.duplicate_fraction * len(copies))
    same_file = later_file = 0
    for group in copies.values():
        first_file, first_text = group[0]
        for f, text in group[1:]:
            assert text == first_text
            assert f >= first_file
            same_file += f == first_file
            later_file += f > first_file
    assert same_file > 0.2 * extra and later_file > 0.2 * extra


def test_event_budget_users_and_generate_events_agree(small: Written) -> None:
    catalog, events = generate_events(SMALL)
    s = small.summary
    assert abs(s.events - SMALL.events) <= 0.05 * SMALL.events
    assert len(events) == s.events and s.users == events["user_id"].nunique() == SMALL.users
    assert events["user_id"].value_counts().min() >= 3
    assert events["event_id"].is_unique
    assert _valid_ids(small) == set(events["event_id"])
    assert list(events.columns) == [
        "event_id", "event_time", "user_id", "item_id", "event_type", "value", "session_id",
    ]  # fmt: skip
    assert isinstance(events["event_time"].dtype, pd.DatetimeTZDtype)
    assert str(events["event_time"].dt.tz) == "UTC"
    assert events["value"].dtype == np.float64
    assert events["event_time"].is_monotonic_increasing
    assert events["event_time"].min() == pd.Timestamp(s.first_event_time)
    assert events["event_time"].max() == pd.Timestamp(s.last_event_time)
    has_value = events["value"].notna()
    assert set(events.loc[has_value, "event_type"]) == {"purchase", "rating"}
    assert events.loc[events["event_type"] == "rating", "value"].between(1, 5).all()
    assert len(catalog) == s.items == SMALL.items


def test_sessions_follow_the_funnel_in_time_order() -> None:
    _, events = generate_events(TINY)
    rank = {"view": 0, "add_to_cart": 1, "remove_from_cart": 2, "purchase": 2, "rating": 3}
    for _, session in events.groupby("session_id", sort=False):
        assert session["user_id"].nunique() == 1
        assert session["event_time"].is_monotonic_increasing
        assert session["event_type"].iloc[0] == "view"
        first: dict[tuple[str, str], pd.Timestamp] = {}
        columns = (session["event_time"], session["event_type"], session["item_id"])
        for t, kind, item in zip(*columns, strict=True):
            first.setdefault((kind, item), t)
        for (kind, item), t in first.items():
            needs = {"add_to_cart": "view", "remove_from_cart": "add_to_cart"}.get(kind)
            needs = needs or {"purchase": "add_to_cart", "rating": "purchase"}.get(kind)
            if needs:
                assert first[(needs, item)] <= t, (kind, item)
                assert rank[needs] < rank[kind]
    duration = events.groupby("session_id")["event_time"].agg(lambda t: t.max() - t.min())
    assert duration.max() < pd.Timedelta(hours=6)


def test_catalog_contract_and_unavailable_share(small: Written) -> None:
    records = [json.loads(line) for line in small.catalog_path.read_text().splitlines()]
    assert len(records) == SMALL.items
    for rec in records:
        assert set(rec) == {"item_id", "title", "category", "price", "available", "updated_at"}
        assert isinstance(rec["item_id"], str) and isinstance(rec["title"], str)
        assert isinstance(rec["category"], str) and isinstance(rec["available"], bool)
        assert isinstance(rec["price"], float) and rec["price"] > 0
        assert ISO_Z.match(rec["updated_at"])
    assert len({r["item_id"] for r in records}) == SMALL.items
    assert len({r["category"] for r in records}) == SMALL.categories
    catalog, events = generate_events(ShopSpec())
    unavailable = 1 - catalog["available"].mean()
    assert 0.02 <= unavailable <= 0.04
    assert set(events["item_id"]) <= set(catalog["item_id"])


def test_popularity_is_long_tailed(default_shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    catalog, events = default_shop
    views = events.loc[events["event_type"] == "view", "item_id"].value_counts()
    top = views.iloc[: len(catalog) // 10].sum() / views.sum()
    assert top > 0.30


def test_users_have_concentrated_category_tastes(
    default_shop: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    catalog, events = default_shop
    category = events["item_id"].map(catalog.set_index("item_id")["category"])
    active = events["user_id"].map(events["user_id"].value_counts()) >= 30

    def top3_share(cats: pd.Series) -> float:
        counts = pd.crosstab(events.loc[active, "user_id"], cats[active])
        top = np.sort(counts.to_numpy(), axis=1)[:, -3:].sum(axis=1)
        return float((top / counts.to_numpy().sum(axis=1)).mean())

    real = top3_share(category)
    shuffled = top3_share(
        pd.Series(np.random.default_rng(0).permutation(category.to_numpy()), index=events.index)
    )
    assert real > 0.7
    assert real > shuffled + 0.3


def test_new_users_and_new_items_appear_late(
    default_shop: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    catalog, events = default_shop
    spec = ShopSpec()
    half = pd.Timestamp(spec.start + timedelta(days=spec.days / 2))
    first_user = events.groupby("user_id")["event_time"].min()
    assert 0.05 < (first_user >= half).mean() < 0.3
    released = catalog[catalog["updated_at"] > pd.Timestamp(spec.start)]
    released = released[released["available"]]
    assert len(released) > 0
    first_item = events.groupby("item_id")["event_time"].min()
    for item_id, released_at in zip(released["item_id"], released["updated_at"], strict=True):
        if item_id in first_item.index:
            assert first_item[item_id] >= released_at


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"users": 0}, "users must be a positive integer"),
        ({"items": -5}, "items must be a positive integer"),
        ({"events": 2.5}, "events must be a positive integer"),
        ({"days": 0}, "days must be a positive integer"),
        ({"files_per_day": 0}, "files_per_day must be a positive integer"),
        ({"files_per_day": 100}, "files_per_day must be <= 99"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"items": 5, "categories": 10}, r"items \(5\) must be >= categories \(10\)"),
        ({"users": 1000, "events": 4000}, r"events \(4000\) must be >= 5 \* users"),
        ({"bad_fraction": 0.6}, r"bad_fraction must be within \[0, 0.5\]"),
        ({"duplicate_fraction": -0.1}, r"duplicate_fraction must be within \[0, 0.5\]"),
        ({"duplicate_fraction": float("nan")}, "duplicate_fraction must be within"),
        ({"start": datetime(2026, 10, 1)}, "start must be a timezone-aware datetime"),
    ],
)
def test_spec_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShopSpec(**changes)


def test_zero_noise_and_offset_start(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    spec = replace(TINY, bad_fraction=0.0, duplicate_fraction=0.0, start=start, files_per_day=3)
    written = _write(spec, tmp_path)
    assert written.summary.bad_lines == written.summary.duplicates == 0
    assert all(p is None for p in written.problems)
    assert len(written.lines) == written.summary.events
    times = [_parse_time(json.loads(t)["event_time"]) for _, t in written.lines]
    assert times == sorted(times)
    assert start <= times[0] and times[-1] < start + timedelta(days=spec.days)
    # The window spans four UTC dates (10:30Z on day one to 10:30Z on day four).
    assert written.summary.files == len(written.files) == 4 * 3

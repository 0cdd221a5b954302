"""Operator jobs beside running streams: maintain and forget-user while ingest and refresh write.

A shop left running for a month has its weekly ``maintain`` (OPTIMIZE, REORG ... PURGE, VACUUM)
and erasure requests land while both streams commit every few seconds. Delta refuses a commit
whose reads were changed under it; recspark must ride that out: no stream dies, no event is
lost or counted twice, every user keeps N rows and a forgotten user is gone from every table.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.interactions import aggregate_events
from recspark.core.tables import (
    ALS_USER_FACTORS,
    EVENTS,
    INTERACTIONS,
    QUARANTINE,
    RECOMMENDATIONS,
    USER_IDS,
    Lake,
)
from recspark.ingest import writer as writer_module
from recspark.ingest.stream import run_ingest, start_ingest
from recspark.model.training import train as train_module
from recspark.model.training.train import TrainResult
from recspark.ops.forget import forget_user
from recspark.ops.maintenance import maintain
from recspark.serve import refresh as refresh_module
from recspark.serve.refresh import run_refresh, start_refresh
from tests.conftest import SHOP_TOP_N, copy_shop

ROUNDS = 2  # a maintain and an erasure landing twice beside both streams
EVENTS_PER_FILE = 60
# What the two streams write: the tables a maintain beside them races (the others wait for it).
STREAM_TABLES = (EVENTS.name, QUARANTINE.name, INTERACTIONS.name, RECOMMENDATIONS.name)


def _land(folder: Path, name: str, lines: list[str]) -> None:
    """A producer's file: written under a dot-name, then renamed into the landing folder."""
    staging = folder / f".{name}"
    staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
    staging.rename(folder / name)


@pytest.mark.slow
def test_maintain_and_forget_user_beside_both_running_streams(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config = copy_shop(trained_shop[0], tmp_path, "ingest.trigger_seconds=1")
    lake = Lake.at(config.lake.root)
    pairs = lake.read(spark, INTERACTIONS).select("user_id", "item_id").collect()
    users = sorted({r["user_id"] for r in pairs})
    items = sorted({r["item_id"] for r in pairs})
    rng = random.Random(5)
    forgotten = rng.sample(users, ROUNDS)
    others = [u for u in users if u not in forgotten]
    landed: dict[str, str] = {}  # event_id -> user_id
    before = datetime.now(timezone.utc) - timedelta(hours=1)  # dated before every forget

    def land_file(name: str, who: list[str]) -> None:
        lines = []
        for n in range(EVENTS_PER_FILE):
            event_id = f"{name}-{n}"
            user = rng.choice(who)
            landed[event_id] = user
            when = (before + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
            kind = rng.choice(["view", "view", "add_to_cart", "purchase"])
            lines.append(
                json.dumps(
                    {
                        "event_id": event_id,
                        "event_time": when,
                        "user_id": user,
                        "item_id": rng.choice(items),
                        "event_type": kind,
                    }
                )
            )
        lines.append(lines[0])  # a producer's retry: stored once
        _land(Path(config.ingest.path), f"{name}.jsonl", lines)

    ingest = start_ingest(spark, config, lake, once=False)
    refresh = start_refresh(spark, config, lake, once=False, gate=no_gate)
    try:
        for round_ in range(ROUNDS):
            # The user about to be forgotten is active too: the streams hold their rows in flight.
            land_file(f"a{round_}", [*others, forgotten[round_]])
            maintain(spark, lake, config.maintenance.vacuum_retention_hours, STREAM_TABLES)
            forget_user(spark, lake, forgotten[round_])
            land_file(f"b{round_}", others)
        ingest.processAllAvailable()
        refresh.processAllAvailable()
        assert ingest.exception() is None and ingest.isActive, "the ingest stream died"
        assert refresh.exception() is None and refresh.isActive, "the refresh stream died"
    finally:
        for query in (ingest, refresh):
            query.stop()

    gone = F.col("user_id").isin(*forgotten)
    events = lake.read(spark, EVENTS)
    ids = [r["event_id"] for r in events.where(F.col("event_id").isin(*landed)).select("event_id").collect()]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert set(ids) == {e for e, user in landed.items() if user not in forgotten}
    for spec in (EVENTS, INTERACTIONS, RECOMMENDATIONS):
        assert lake.read(spark, spec).where(gone).count() == 0, f"a forgotten user is back in {spec.name}"
    # What the folds left equals a rebuild from the events that remain.
    compared = ["user_id", "item_id", "view_count", "add_to_cart_count", "purchase_count"]
    assert_df_equality(
        lake.read(spark, INTERACTIONS).select(*compared),
        aggregate_events(events, config.interactions).select(*compared),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    lengths = lake.read(spark, RECOMMENDATIONS).groupBy("user_id").count()
    assert lengths.where(F.col("count") != SHOP_TOP_N).count() == 0
    served = {r["user_id"] for r in lengths.collect()}
    assert served == set(others)


def _event(event_id: str, user: str, item: str, kind: str = "view") -> str:
    when = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(
        {"event_id": event_id, "event_time": when, "user_id": user, "item_id": item, "event_type": kind}
    )


def _a_user_and_items(spark: SparkSession, lake: Lake) -> tuple[str, list[str]]:
    pairs = (
        lake.read(spark, INTERACTIONS).select("user_id", "item_id").orderBy("user_id", "item_id").collect()
    )
    return pairs[0]["user_id"], sorted({r["item_id"] for r in pairs})[:3]


def test_an_erasure_landing_inside_an_ingest_batch_leaves_nothing_of_the_user(
    spark: SparkSession,
    trained_shop: tuple[Config, TrainResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch read the tombstones and aggregated its events before the erasure, and folds
    them into interactions after the erasure's DELETEs (as a forget-user run by another process
    would interleave: nothing in this process's caches notices it)."""
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    user, items = _a_user_and_items(spark, lake)
    fold = writer_module.fold_increments

    def erasure_then_fold(*args, **kwargs):
        forget_user(spark, lake, user)
        return fold(*args, **kwargs)

    monkeypatch.setattr(writer_module, "fold_increments", erasure_then_fold)
    _land(
        Path(config.ingest.path), "mid.jsonl", [_event(f"m{n}", user, item) for n, item in enumerate(items)]
    )
    run_ingest(spark, config, lake, once=True)
    for spec in (EVENTS, INTERACTIONS):
        assert lake.read(spark, spec).where(F.col("user_id") == user).count() == 0, spec.name


def _a_change_waiting_for_refresh(
    spark: SparkSession, shop: Config, tmp_path: Path
) -> tuple[Config, Lake, str]:
    """A copy of the shop whose refresh follows the change feed, and a user whose new event
    ingest folded in since: the next refresh batch sees them active."""
    config = copy_shop(shop, tmp_path)
    lake = Lake.at(config.lake.root)
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    user, items = _a_user_and_items(spark, lake)
    _land(Path(config.ingest.path), "active.jsonl", [_event("a0", user, items[0])])
    run_ingest(spark, config, lake, once=True)
    return config, lake, user


@pytest.mark.slow
def test_an_erasure_landing_inside_a_refresh_batch_leaves_no_list(
    spark: SparkSession,
    trained_shop: tuple[Config, TrainResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch built the user's list from their interactions before the erasure deleted them."""
    config, lake, user = _a_change_waiting_for_refresh(spark, trained_shop[0], tmp_path)
    merge = refresh_module.merge_user_rows

    def erasure_then_merge(*args, **kwargs):
        forget_user(spark, lake, user)
        merge(*args, **kwargs)

    monkeypatch.setattr(refresh_module, "merge_user_rows", erasure_then_merge)
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    assert lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).count() == 0


@pytest.mark.slow
def test_an_erasure_landing_inside_a_train_leaves_no_factors_or_index_of_the_user(
    spark: SparkSession,
    trained_shop: tuple[Config, TrainResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The nightly train read interactions before the erasure and writes the id map and the new
    version's factors after it (as a forget-user run by another process during a long fit)."""
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    user, _ = _a_user_and_items(spark, lake)
    fit = train_module.fit_model
    erased: list[str] = []

    def erasure_then_fit(*args, **kwargs):
        if not erased:
            forget_user(spark, lake, user)
            erased.append(user)
        return fit(*args, **kwargs)

    monkeypatch.setattr(train_module, "fit_model", erasure_then_fit)
    result = train_module.train(spark, config, lake, gate=no_gate)
    assert erased and result.model_version
    for spec in (USER_IDS, ALS_USER_FACTORS, INTERACTIONS):
        assert lake.read(spark, spec).where(F.col("user_id") == user).count() == 0, spec.name


@pytest.mark.slow
def test_a_user_forgotten_after_their_events_were_folded_in_gets_no_list_from_the_next_refresh(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    """The change feed still holds the user's new interactions when the refresh batch reads it,
    after forget-user deleted them and their list: the batch must not serve them a cold-start
    list (found by the stress test above, the erasure landing between the two streams)."""
    config, lake, user = _a_change_waiting_for_refresh(spark, trained_shop[0], tmp_path)
    forget_user(spark, lake, user)
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    assert lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).count() == 0

"""Held-out periods that work on real logs: adaptive, per user when time cannot, clear refusals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from pyspark.sql import DataFrame, SparkSession

from recspark.model.evaluation.splits import PER_USER, TIME, SplitError, SplitPolicy, choose_split

END = datetime(2026, 11, 30)


def events(spark: SparkSession, rows: Sequence[tuple[str, str, float]]) -> DataFrame:
    """(user, item, days before END) -> events in the contract's columns, one per row."""
    return spark.createDataFrame(
        [(f"e{n:04d}", END - timedelta(days=ago), u, i, "view") for n, (u, i, ago) in enumerate(rows)],
        "event_id string, event_time timestamp, user_id string, item_id string, event_type string",
    )


def ids(frame: DataFrame) -> set[str]:
    return {r["event_id"] for r in frame.select("event_id").collect()}


def test_a_fixed_number_of_days_still_works_and_refuses_clearly(spark: SparkSession) -> None:
    log = events(spark, [("a", "x", 30), ("a", "y", 2), ("b", "x", 20), ("b", "z", 1)])
    split = choose_split(log, SplitPolicy(days=3.0))
    # The newest event is a day before END: the period is the 3 days before it.
    assert split.policy == TIME and split.cutoff == END - timedelta(days=4) and split.test_users == 2
    assert ids(split.test_events) == {"e0001", "e0003"}
    with pytest.raises(SplitError, match=r"train\.test_days=40 .*lower train\.test_days or set it to auto"):
        choose_split(log, SplitPolicy(days=40.0))
    with pytest.raises(SplitError, match=r"no user who was active before.*raise train\.test_days"):
        choose_split(events(spark, [("a", "x", 30), ("b", "y", 1)]), SplitPolicy(days=3.0))


def test_auto_takes_the_shortest_newest_period_with_enough_test_users(spark: SparkSession) -> None:
    # 10 background users long ago; user k (k = 0..5) comes back with a new item k + 1 days ago.
    rows: list[tuple[str, str, float]] = [(f"old{n}", "x", 100 + n) for n in range(10)]
    rows += [(f"u{k}", "x", 50) for k in range(6)] + [(f"u{k}", f"new{k}", k + 0.5) for k in range(6)]
    log = events(spark, rows)
    split = choose_split(log, SplitPolicy(min_test_users=4, max_test_share=0.5))
    # The newest 3 days (from u0's new item) hold u0..u3's: the shortest period with 4 test users.
    assert split.policy == TIME and split.days == 3 and split.test_users == 4
    assert {r["user_id"] for r in split.test_events.collect()} == {"u0", "u1", "u2", "u3"}
    assert split.as_of == split.cutoff


def test_a_log_without_such_a_period_falls_back_to_each_users_newest_events(spark: SparkSession) -> None:
    # Users rate in bursts years apart: no global cutoff has two users on both sides of it.
    rows = []
    for u in range(5):
        rows += [(f"u{u}", f"i{j}", 1000 * (u + 1) - j) for j in range(10)]  # 10 events each
    log = events(spark, rows)
    policy = SplitPolicy(min_test_users=3, test_fraction=0.2)
    split = choose_split(log, policy)
    assert split.policy == PER_USER and split.test_users == 5
    held = split.test_events.collect()
    # Each user's newest 2 of 10 events (j = 9 and 8 are the newest).
    assert sorted((r["user_id"], r["item_id"]) for r in held) == sorted(
        (f"u{u}", f"i{j}") for u in range(5) for j in (8, 9)
    )
    assert ids(split.train_events) | ids(split.test_events) == ids(log)
    assert not ids(split.train_events) & ids(split.test_events)
    with pytest.raises(
        SplitError, match=r"train\.split=time: no newest period .* has 3 users .*train\.split=per_user"
    ):
        choose_split(log, SplitPolicy(split="time", min_test_users=3))


def test_per_user_refuses_when_no_user_has_enough_events(spark: SparkSession) -> None:
    log = events(spark, [("a", "x", 3), ("a", "y", 2), ("b", "x", 1)])
    with pytest.raises(SplitError, match=r"no user has 5 or more events .*train\.test_fraction"):
        choose_split(log, SplitPolicy(split="per_user"))

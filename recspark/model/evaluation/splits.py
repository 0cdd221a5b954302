"""Where the past ends and the held-out future begins, chosen so that real logs can be evaluated.

A single global time cutoff is the honest production split, but real logs are slow and bursty:
the last week of a 22-year ratings log holds two users. So the test period is chosen by how much
evidence it holds: ``auto`` takes the shortest newest period with at least ``min_test_users``
users who were active before it and interact with an item new to them in it. When no period
does (users of a slow catalogue come and go in bursts), a per-user split holds out each user's
newest ``test_fraction`` of events instead. Every refusal names the setting to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.tables import Lake
from recspark.model.families.data import TrainingData, training_data

log = logging.getLogger(__name__)

TIME = "time"
PER_USER = "per_user"
AUTO = "auto"
SPLITS = (AUTO, TIME, PER_USER)
SECONDS_PER_DAY = 86_400


class SplitError(ValueError):
    """The events cannot be split as configured; the message names the setting to change."""


@dataclass(frozen=True)
class SplitPolicy:
    """How to hold out a future (the ``train`` or ``tune`` settings, under their own names)."""

    split: str = AUTO  # auto | time | per_user
    days: float | str = AUTO  # the time split's period: "auto" or a number of days
    min_test_users: int = 200
    max_test_share: float = 0.25  # auto periods may hold at most this share of the events
    test_fraction: float = 0.2  # per-user split: each user's newest share of events
    days_key: str = "train.test_days"  # the setting that names ``days``, for messages


@dataclass(frozen=True)
class Split:
    train_events: DataFrame
    test_events: DataFrame
    policy: str  # TIME | PER_USER
    as_of: datetime  # "now" for the training period (time decay): the cutoff or its newest event
    cutoff: datetime | None  # TIME only
    days: float | None  # TIME only: the length of the held-out period
    test_users: int  # users with a new item in the held-out events (as counted to choose it)
    held: DataFrame | None = field(default=None, compare=False)  # what the split persisted

    def unpersist(self) -> None:
        """Release what the split cached (a long-lived session would hold it otherwise)."""
        if self.held is not None:
            self.held.unpersist()

    def describe(self) -> str:
        if self.policy == TIME:
            assert self.cutoff is not None and self.days is not None
            return (
                f"the newest {self.days:g} days (from {self.cutoff:%Y-%m-%d %H:%M}, {self.test_users} users)"
            )
        return f"each user's newest events ({self.test_users} users)"

    def tags(self, prefix: str) -> dict[str, str]:
        tags = {f"{prefix}_split": self.policy, f"{prefix}_period": self.describe()}
        if self.cutoff is not None:
            tags[f"{prefix}_cutoff"] = self.cutoff.isoformat()
        return tags


@dataclass(frozen=True)
class _Histograms:
    """Counts by how many days (rounded up) before the newest event: events, users' first events,
    and users' newest first-time pairs. A period of ``d`` days holds what is at most ``d`` days
    old, so every question below is an exact sum over these buckets."""

    last: datetime
    span_days: float
    events: np.ndarray  # events[d]: events d days before the newest one
    first_seen: np.ndarray  # users whose first event is d days before the newest one
    newest_new_item: np.ndarray  # users whose newest first-time pair is d days before

    def test_users(self, days: int) -> int:
        """Users active before ``last - days`` with a first-time pair at or after it (a user's
        first event is never after their newest first-time pair, so this is a difference)."""
        return int(self.first_seen[days + 1 :].sum() - self.newest_new_item[days + 1 :].sum())

    def test_share(self, days: int) -> float:
        return float(self.events[: days + 1].sum() / max(self.events.sum(), 1))


def _histograms(events: DataFrame) -> _Histograms:
    bounds = events.agg(F.min("event_time"), F.max("event_time"), F.count(F.lit(1))).first()
    if bounds is None or bounds[1] is None:
        raise SplitError("no events to split: ingest events first")
    first, last, _ = bounds
    last_seconds = F.lit(last).cast("timestamp").cast("double")

    def days_before(column: str) -> F.Column:
        return F.ceil((last_seconds - F.col(column).cast("double")) / SECONDS_PER_DAY).cast("int")

    span = int(np.ceil((last - first).total_seconds() / SECONDS_PER_DAY)) + 1
    # Removals never make an item relevant; every other event type can.
    pairs = (
        events.where(F.col("event_type") != "remove_from_cart")
        .groupBy("user_id", "item_id")
        .agg(F.min("event_time").alias("pair_first"))
    )
    users = pairs.groupBy("user_id").agg(
        F.min("pair_first").alias("first_seen"), F.max("pair_first").alias("newest_new_item")
    )

    def histogram(frame: DataFrame, column: str) -> np.ndarray:
        counts = np.zeros(span + 1, dtype=np.int64)
        for row in frame.groupBy(days_before(column).alias("d")).count().collect():
            counts[min(max(int(row["d"]), 0), span)] += int(row["count"])
        return counts

    return _Histograms(
        last=last,
        span_days=(last - first).total_seconds() / SECONDS_PER_DAY,
        events=histogram(events, "event_time"),
        first_seen=histogram(users, "first_seen"),
        newest_new_item=histogram(users, "newest_new_item"),
    )


def _time_split(events: DataFrame, last: datetime, days: float, test_users: int) -> Split:
    cutoff = last - timedelta(days=days)
    return Split(
        train_events=events.where(F.col("event_time") < F.lit(cutoff)),
        test_events=events.where(F.col("event_time") >= F.lit(cutoff)),
        policy=TIME,
        as_of=cutoff,
        cutoff=cutoff,
        days=float(days),
        test_users=test_users,
    )


def _fixed_time_split(events: DataFrame, policy: SplitPolicy) -> Split:
    days = float(policy.days)
    bounds = events.agg(F.min("event_time"), F.max("event_time")).first()
    if bounds is None or bounds[1] is None:
        raise SplitError("no events to split: ingest events first")
    first, last = bounds
    if last - timedelta(days=days) <= first:
        raise SplitError(
            f"events span {first} to {last}, not more than {policy.days_key}={days:g} days: no training "
            f"period left before the held-out period; lower {policy.days_key} or set it to auto"
        )
    histograms = _histograms(events)
    users = histograms.test_users(int(np.floor(days)))
    if users == 0:
        raise SplitError(
            f"the newest {days:g} days hold no user who was active before them and interacted with a "
            f"new item: raise {policy.days_key} or set it to auto"
        )
    return _time_split(events, last, days, users)


def _auto_time_split(events: DataFrame, policy: SplitPolicy) -> Split | str:
    """The shortest newest period with enough test users, or why there is none."""
    histograms = _histograms(events)
    best_users, best_days = 0, 0
    for days in range(1, int(histograms.span_days) + 1):
        if histograms.test_share(days) > policy.max_test_share:
            break
        users = histograms.test_users(days)
        if users > best_users:
            best_users, best_days = users, days
        if users >= policy.min_test_users:
            return _time_split(events, histograms.last, days, users)
    return (
        f"no newest period holding at most {policy.max_test_share:.0%} of the events has "
        f"{policy.min_test_users} users with a new item (the most: {best_users} users, in the newest "
        f"{best_days} days)"
    )


def _per_user_split(events: DataFrame, policy: SplitPolicy) -> Split:
    """Each user's newest ``test_fraction`` of events (rounded down) is held out."""
    newest_first = Window.partitionBy("user_id").orderBy(F.desc("event_time"), F.desc("event_id"))
    ranked = events.withColumns(
        {
            "_n": F.row_number().over(newest_first),
            "_held": F.floor(F.count(F.lit(1)).over(Window.partitionBy("user_id")) * policy.test_fraction),
        }
    ).persist()
    held_out = F.col("_n") <= F.col("_held")
    train = ranked.where(~held_out).drop("_n", "_held")
    test = ranked.where(held_out).drop("_n", "_held")
    row = train.agg(F.max("event_time")).first()
    users = test.select("user_id").distinct().count()
    if users == 0 or row is None or row[0] is None:
        least = int(np.ceil(1 / policy.test_fraction))
        raise SplitError(
            f"no user has {least} or more events to hold out a share of (train.test_fraction="
            f"{policy.test_fraction:g}): add data, or raise train.test_fraction"
        )
    return Split(
        train_events=train,
        test_events=test,
        policy=PER_USER,
        as_of=row[0],
        cutoff=None,
        days=None,
        test_users=users,
        held=ranked,
    )


def choose_split(events: DataFrame, policy: SplitPolicy) -> Split:
    """Split ``events`` by ``policy``; raises SplitError naming the setting to change."""
    if policy.split == PER_USER:
        split = _per_user_split(events, policy)
    elif policy.days != AUTO:
        if policy.split not in (TIME, AUTO):
            raise SplitError(f"unknown split {policy.split!r}; use one of {', '.join(SPLITS)}")
        split = _fixed_time_split(events, policy)
    else:
        found = _auto_time_split(events, policy)
        if isinstance(found, Split):
            split = found
        elif policy.split == TIME:
            raise SplitError(
                f"train.split=time: {found}; lower train.min_test_users, raise train.max_test_share "
                "or set train.split=per_user"
            )
        else:
            log.info("split: %s: holding out each user's newest events instead", found)
            split = _per_user_split(events, policy)
    log.info("split: held out %s", split.describe())
    return split


def split_period(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    split: Split,
    *,
    all_interactions: DataFrame,
    period: str,
) -> TrainingData:
    """The training side of ``split``: its events before the held-out ones, aggregated and
    decayed to the split's cutoff (see :func:`training_data`)."""
    aggregated = aggregate_events(split.train_events, config.interactions)
    return training_data(
        spark, config, lake, aggregated, as_of=split.as_of, all_interactions=all_interactions, period=period
    )

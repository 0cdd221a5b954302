"""One user at a glance (``recspark show``): their current list and what they did lately.

Debugging a recommendation starts with "what does this user see, and why": the list as the
website reads it from ``recommendations`` next to the newest ``events``, without a notebook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.tables import EVENTS, RECOMMENDATIONS, Lake, TableSpec

log = logging.getLogger(__name__)

HISTORY_EVENTS = 10


@dataclass(frozen=True)
class Recommendation:
    rank: int
    item_id: str
    score: float
    source: str
    because_item_id: str | None


@dataclass(frozen=True)
class Event:
    event_time: float  # epoch seconds, UTC
    event_type: str
    item_id: str
    value: float | None


@dataclass(frozen=True)
class UserLookup:
    """A user's list (with the model version and time it was generated) and newest events."""

    user_id: str
    recommendations: list[Recommendation]
    history: list[Event]
    model_version: str | None
    generated_at: float | None  # epoch seconds, UTC

    @property
    def known(self) -> bool:
        """The lake has heard of this user: a list or at least one event."""
        return bool(self.recommendations or self.history)


def _rows_of(spark: SparkSession, lake: Lake, spec: TableSpec, user_id: str) -> DataFrame | None:
    """The user's rows of ``spec``, or None when the table has not been written yet."""
    if not lake.exists(spark, spec):
        return None
    return lake.read(spark, spec).where(F.col("user_id") == user_id)


def _current_list(spark: SparkSession, lake: Lake, user_id: str) -> list[Any]:
    rows = _rows_of(spark, lake, RECOMMENDATIONS, user_id)
    if rows is None:
        return []
    return (
        rows.select(
            "rank",
            "item_id",
            "score",
            "source",
            "because_item_id",
            "model_version",
            # As epoch seconds: collect() would turn timestamps into the driver's local time.
            F.col("generated_at").cast("double").alias("generated_at"),
        )
        .orderBy("rank")
        .collect()
    )


def _recent_events(spark: SparkSession, lake: Lake, user_id: str, limit: int) -> list[Event]:
    rows = _rows_of(spark, lake, EVENTS, user_id)
    if rows is None:
        return []
    newest = (
        rows.orderBy(F.col("event_time").desc(), F.col("event_id"))
        .limit(limit)
        .select(F.col("event_time").cast("double").alias("event_time"), "event_type", "item_id", "value")
        .collect()
    )
    return [Event(**r.asDict()) for r in newest]


def lookup_user(spark: SparkSession, lake: Lake, user_id: str, history: int = HISTORY_EVENTS) -> UserLookup:
    """The user's current list in rank order and their ``history`` newest events, newest first.

    A list is written in one commit per user, so its rows share one model version and time;
    should they ever differ, the newest row's are reported."""
    listed = _current_list(spark, lake, user_id)
    newest = max(listed, key=lambda r: r["generated_at"], default=None)
    return UserLookup(
        user_id=user_id,
        recommendations=[
            Recommendation(r["rank"], r["item_id"], r["score"], r["source"], r["because_item_id"])
            for r in listed
        ],
        history=_recent_events(spark, lake, user_id, history),
        model_version=None if newest is None else newest["model_version"],
        generated_at=None if newest is None else newest["generated_at"],
    )


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def lookup_json(found: UserLookup) -> dict[str, Any]:
    """The lookup as one JSON-ready object (times ISO 8601 UTC)."""
    return {
        "user_id": found.user_id,
        "model_version": found.model_version,
        "generated_at": _iso(found.generated_at),
        "recommendations": [
            {
                "rank": r.rank,
                "item_id": r.item_id,
                "score": r.score,
                "source": r.source,
                "because_item_id": r.because_item_id,
            }
            for r in found.recommendations
        ],
        "history": [
            {
                "event_time": _iso(e.event_time),
                "event_type": e.event_type,
                "item_id": e.item_id,
                "value": e.value,
            }
            for e in found.history
        ],
    }


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned plain-text columns, two spaces apart."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(values: tuple[str, ...]) -> str:
        return ("  " + "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def render_lookup(found: UserLookup) -> str:
    """The lookup for a person: the list, then the history, newest first."""
    lines = [f"User {found.user_id}"]
    if found.recommendations:
        lines.append(
            f"Recommendations (model version {found.model_version or '-'}, "
            f"generated {_utc(found.generated_at)} UTC)"
        )
        rows = [
            (str(r.rank), r.item_id, f"{r.score:.4f}", r.source, r.because_item_id or "-")
            for r in found.recommendations
        ]
        lines += _table(("rank", "item", "score", "source", "because"), rows)
    else:
        lines.append("Recommendations: none (the next `recspark refresh` or `recommend` writes them)")
    lines += ["", "Recent history (newest first)" if found.history else "Recent history: no events"]
    events = [
        (_utc(e.event_time), e.event_type, e.item_id, "-" if e.value is None else f"{e.value:g}")
        for e in found.history
    ]
    if events:
        lines += _table(("time (UTC)", "type", "item", "value"), events)
    return "\n".join(lines) + "\n"

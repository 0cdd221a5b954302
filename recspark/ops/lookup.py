"""One user at a glance (``recspark show``): their current list and what they did lately.

Debugging a recommendation starts with "what does this user see, and why": the list as the
website reads it from ``recommendations`` next to the newest ``events``, without a notebook.
Both are read with delta-rs (``core/lake_reader.py``, the reader the lookup service uses), not
Spark: no JVM starts, and the answer comes back in well under a second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recspark.core import table_names
from recspark.core.lake_reader import TABLE, open_table, query, records, text_literal
from recspark.core.text import iso_text, utc_text

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


def _user_rows(
    root: str, name: str, user_id: str, columns: str, order: str, limit: int | None = None
) -> list[dict[str, Any]]:
    """The user's rows of table ``name`` (``columns``, in ``order``, at most ``limit``); none when
    the table has not been written yet. Times come as epoch seconds (``date_part('epoch', ...)``)."""
    table = open_table(table_names.table_path(root, name))
    if table is None:
        return []
    sql = f"SELECT {columns} FROM {TABLE} WHERE user_id = {text_literal(user_id)} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return records(query(table, sql))


def _current_list(root: str, user_id: str) -> list[dict[str, Any]]:
    return _user_rows(
        root,
        table_names.RECOMMENDATIONS,
        user_id,
        "rank, item_id, score, source, because_item_id, model_version, "
        "date_part('epoch', generated_at) AS generated_at",
        "rank",
    )


def _recent_events(root: str, user_id: str, limit: int) -> list[Event]:
    rows = _user_rows(
        root,
        table_names.EVENTS,
        user_id,
        "date_part('epoch', event_time) AS event_time, event_type, item_id, value",
        "event_time DESC, event_id",
        limit,
    )
    return [Event(**row) for row in rows]


def lookup_user(root: str, user_id: str, history: int = HISTORY_EVENTS) -> UserLookup:
    """The user's current list in rank order and their ``history`` newest events, newest first,
    from the lake at ``root`` (resolved: ``table_names.lake_root``).

    A list is written in one commit per user, so its rows share one model version and time;
    should they ever differ, the newest row's are reported."""
    listed = _current_list(root, user_id)
    newest = max(listed, key=lambda r: r["generated_at"], default=None)
    return UserLookup(
        user_id=user_id,
        recommendations=[
            Recommendation(r["rank"], r["item_id"], r["score"], r["source"], r["because_item_id"])
            for r in listed
        ],
        history=_recent_events(root, user_id, history),
        model_version=None if newest is None else newest["model_version"],
        generated_at=None if newest is None else newest["generated_at"],
    )


def lookup_json(found: UserLookup) -> dict[str, Any]:
    """The lookup as one JSON-ready object (times ISO 8601 UTC)."""
    return {
        "user_id": found.user_id,
        "model_version": found.model_version,
        "generated_at": iso_text(found.generated_at),
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
                "event_time": iso_text(e.event_time),
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
            f"generated {utc_text(found.generated_at)} UTC)"
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
        (utc_text(e.event_time), e.event_type, e.item_id, "-" if e.value is None else f"{e.value:g}")
        for e in found.history
    ]
    if events:
        lines += _table(("time (UTC)", "type", "item", "value"), events)
    return "\n".join(lines) + "\n"

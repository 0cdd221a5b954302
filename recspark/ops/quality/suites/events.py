"""The ``events`` suite: ids, times and types as ingest accepts them, ratings with a value."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pyspark.sql import DataFrame

from recspark.core.contract import EVENT_TYPES

EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)  # ingest.min_event_time default
# Clocks drift and producers buffer; more than this ahead of now is a broken timestamp.
MAX_EVENT_TIME_AHEAD = timedelta(days=1)


def build_expectations() -> list[Any]:
    from great_expectations import expectations as E
    from great_expectations.expectations.row_conditions import Column

    is_rating = Column("event_type") == "rating"
    expectations: list[Any] = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
        for c in ("event_id", "user_id", "item_id", "event_time")
    ]
    expectations += [
        E.ExpectColumnValuesToBeInSet(
            column="event_type",
            value_set=list(EVENT_TYPES),
            description="event_type is one of " + ", ".join(EVENT_TYPES),
        ),
        E.ExpectColumnValuesToBeUnique(column="event_id", description="event_id is unique"),
        E.ExpectColumnValuesToBeBetween(
            column="event_time",
            min_value={"$PARAMETER": "min_event_time"},
            max_value={"$PARAMETER": "max_event_time"},
            description="event_time is within ingest.min_event_time and ingest.max_future_minutes",
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="value", row_condition=is_rating, description="ratings have a value"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="value",
            min_value=1,
            max_value=5,
            row_condition=is_rating,
            description="rating values are between 1 and 5",
        ),
    ]
    return expectations


def validated_frame(
    df: DataFrame,
    now: datetime | None = None,
    earliest: datetime = EARLIEST_EVENT_TIME,
    ahead: timedelta = MAX_EVENT_TIME_AHEAD,
) -> tuple[DataFrame, dict[str, Any]]:
    """``earliest`` and ``ahead``: the bounds ingest enforces (a gate must not fail on events
    ingest accepted, e.g. a 22-year history)."""
    now = now or datetime.now(timezone.utc)
    frame = df.select("event_id", "user_id", "item_id", "event_time", "event_type", "value")
    return frame, {"min_event_time": earliest, "max_event_time": now + ahead}

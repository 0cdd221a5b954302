"""The one format of a ``recommendation_id``: the id of one served list, made by the lookup service
and carried back by the website on the clicks, add-to-carts and purchases that followed.

A UUID version 7 (RFC 9562) in its lowercase text form, e.g. ``0192a4c3-7b1e-7f3a-9c2d-5e6f7a8b9c0d``:
the first 48 bits are the Unix time in milliseconds when the list was served, the rest is random
(74 bits). So an id says when its list was served without a look-up: ingest knows which day a
click counts for, and whether it falls in the attribution window, before (or without) seeing the
impression; and ids sort by time, so Delta's per-file min/max statistics skip most files when
the lake is searched for a few ids. Any UUID v7 generator makes valid ids.

Pure Python (the service imports it without Spark); :func:`served_at_column` is the same
decoding as a Spark expression, imported lazily.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

# Lowercase only, so one list has one spelling (the id is a join key).
RECOMMENDATION_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_ID = re.compile(RECOMMENDATION_ID_PATTERN)
RECOMMENDATION_ID_LENGTH = 36
# Clocks disagree a little: an impression's event_time may lie this far from its id's time (more
# is quarantined), and an attributed event may carry a time this much before it.
SERVED_AT_TOLERANCE = timedelta(hours=1)


def new_recommendation_id(served_at_ms: int | None = None, entropy: bytes | None = None) -> str:
    """A fresh id for a list served at ``served_at_ms`` (Unix milliseconds; now by default).
    ``entropy``: 10 bytes to use instead of fresh random ones (reproducible simulations)."""
    ms = time.time_ns() // 1_000_000 if served_at_ms is None else served_at_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"served_at_ms out of range: {ms}")
    rand = int.from_bytes(entropy if entropy is not None else os.urandom(10), "big")  # 74 bits used
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_recommendation_id(text: object) -> bool:
    return isinstance(text, str) and _ID.match(text) is not None


def served_at_ms(recommendation_id: str) -> int:
    """When the id's list was served, in Unix milliseconds; ValueError for a malformed id."""
    if not is_recommendation_id(recommendation_id):
        raise ValueError(f"not a recommendation_id: {recommendation_id!r}")
    return int(recommendation_id[:8] + recommendation_id[9:13], 16)


def served_at(recommendation_id: str) -> datetime:
    """When the id's list was served (UTC)."""
    return datetime.fromtimestamp(served_at_ms(recommendation_id) / 1000, timezone.utc)


def served_at_column(recommendation_id: Column) -> Column:
    """:func:`served_at` as a Spark expression (a timestamp; null for a null id). Assumes the id
    matched :data:`RECOMMENDATION_ID_PATTERN`."""
    from pyspark.sql import functions as F

    hex_ms = F.concat(F.substring(recommendation_id, 1, 8), F.substring(recommendation_id, 10, 4))
    return F.timestamp_millis(F.conv(hex_ms, 16, 10).cast("long"))

"""Delta commit conflicts between jobs that share a table, and how recspark rides them out.

Streams (ingest's MERGE into ``interactions``, the refresh's MERGE into ``recommendations``) run
beside ``maintain`` (OPTIMIZE, REORG ... PURGE) and ``forget-user`` (DELETE). Delta lets each
commit only if nothing it read was changed under it, and otherwise raises a concurrent
modification error: nothing of the losing transaction is committed, so running it again is
safe (recspark's writes are idempotent per batch). :func:`retry_on_conflict` does that, with a
growing pause, and logs every conflict it rides out, so an operator sees what happened.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a retry can resolve: another writer won the race for the same files or metadata. Not
# ConcurrentTransactionException: that one means two queries share a checkpoint, which no
# retry mends.
CONFLICTS: tuple[type[BaseException], ...] = (
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
    DeltaConcurrentModificationException,
)


class ConflictsExhaustedError(RuntimeError):
    """A write lost every race it was allowed: the message names the table work and the conflict."""


def retry_on_conflict(
    action: Callable[[], T],
    what: str,
    *,
    attempts: int = 8,
    first_pause: float = 1.0,
    max_pause: float = 30.0,
) -> T:
    """``action()``, run again after a pause while it loses a commit race (at most ``attempts``
    runs; pauses double from ``first_pause`` up to ``max_pause``, with jitter so two retrying
    jobs do not collide again). ``what`` names the work in the log (``"maintain: OPTIMIZE
    interactions"``). Any other error propagates at once."""
    pause = first_pause
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CONFLICTS as exc:
            kind = type(exc).__name__
            if attempt == attempts:
                raise ConflictsExhaustedError(
                    f"{what}: lost {attempts} commit races to concurrent writers (last: {kind}); "
                    "run it again when the table is quieter"
                ) from exc
            wait = min(pause, max_pause) * random.uniform(0.5, 1.0)
            log.warning(
                "%s: a concurrent write changed the table (%s); retrying in %.1fs (attempt %d of %d)",
                what,
                kind,
                wait,
                attempt + 1,
                attempts,
            )
            time.sleep(wait)
            pause *= 2
    raise AssertionError("unreachable")

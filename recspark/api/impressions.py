"""The lookup service's impression log: each list it serves becomes one ``impression`` event in the
ingest source (the landing folder ``ingest.path`` or the topic ``ingest.kafka.topic``), written
in batches by a background thread, never on the request path.

:meth:`ImpressionSink.offer` only appends the served list to a bounded buffer: it never blocks
and never raises. When the buffer is full (the disk or broker is slow or gone), the list is dropped
and counted; a batch that cannot be written is dropped and counted too. A batch is written when it
holds ``impressions.batch_size`` lists or its oldest is ``impressions.flush_seconds`` old, and
what is queued is written on :meth:`ImpressionSink.close` (within its timeout; the rest is counted
as dropped). :meth:`ImpressionSink.counters` are what the service's health and metrics report.

Files follow the producer contract (docs/how-it-works.md): written under a temporary dot-name in
the landing folder (Spark's file source ignores dot-files) and renamed into place when complete.
Kafka goes through confluent-kafka (librdkafka: a producer with its own bounded buffer and
per-message delivery reports, maintained by Confluent with the broker's releases). A message the client
retries may land twice: the impression's event_id makes the second a duplicate ingest drops.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from recspark.core.config import Config
from recspark.core.contract import IMPRESSION
from recspark.core.recommendation_ids import served_at

log = logging.getLogger(__name__)

# report(written, dropped, error): how a writer tells the sink what became of the lines it took.
Report = Callable[[int, int, str | None], None]


@dataclass(frozen=True)
class ServedList:
    """One list the service answered with: what its impression event records."""

    recommendation_id: str  # from recspark.core.recommendation_ids.new_recommendation_id
    user_id: str
    items: Sequence[str]  # position 1 first
    list: str = "recommendations"  # or "similar_items"
    model_version: str | None = None
    variant: str | None = None
    sources: Sequence[str] | None = None  # per position: als, ease, blend, popular...
    item_id: str = ""  # similar_items: the item whose similar items were shown
    session_id: str | None = None


def impression_line(served: ServedList) -> str:
    """The served list as one contract line: an ``impression`` whose event_id is its
    recommendation_id (a retried write is then a duplicate ingest drops) and whose event_time is
    the id's time."""
    at = served_at(served.recommendation_id)
    record: dict[str, Any] = {
        "event_id": served.recommendation_id,
        "event_time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        "user_id": served.user_id,
        "item_id": served.item_id,
        "event_type": IMPRESSION,
        "recommendation_id": served.recommendation_id,
        "items": list(served.items),
        "list": served.list,
    }
    optional = {
        "model_version": served.model_version,
        "variant": served.variant,
        "sources": None if served.sources is None else list(served.sources),
        "session_id": served.session_id,
    }
    record.update({k: v for k, v in optional.items() if v is not None})
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


class ImpressionWriter(Protocol):
    def write(self, lines: list[str], report: Report) -> None:
        """Write the lines, then report what became of each (or raise: all dropped)."""

    def close(self, timeout: float, report: Report) -> None: ...


class LandingFolder:
    """Each batch a new file in ``folder``: written as a dot-file, synced, renamed into place."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def write(self, lines: list[str], report: Report) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"impressions-{stamp}-{uuid.uuid4().hex[:12]}.jsonl"
        temporary = self.folder / f".{name}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                file.write("\n".join(lines) + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.rename(temporary, self.folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        report(len(lines), 0, None)

    def close(self, timeout: float, report: Report) -> None:
        return None


class KafkaTopic:
    """Each line one message on ``topic``; delivery is reported by the client's callbacks."""

    def __init__(self, bootstrap_servers: str, topic: str, delivery_timeout_seconds: float, buffered: int):
        from confluent_kafka import Producer

        self.topic = topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": "recspark-impressions",
                "linger.ms": 50,
                "message.timeout.ms": int(delivery_timeout_seconds * 1000),
                "queue.buffering.max.messages": max(buffered, 1000),
            }
        )
        self.delivery_timeout = delivery_timeout_seconds

    def write(self, lines: list[str], report: Report) -> None:
        def delivered(error: Any, _message: Any) -> None:
            if error is None:
                report(1, 0, None)
            else:
                report(0, 1, str(error))

        for k, line in enumerate(lines):
            try:
                self.producer.produce(self.topic, line.encode("utf-8"), on_delivery=delivered)
            except BufferError as exc:  # the client's own buffer is full: the broker is behind
                report(0, len(lines) - k, f"client buffer full: {exc}")
                break
            self.producer.poll(0)
        # Wait for this batch's delivery reports (bounded): a stalled broker holds this thread,
        # never a request; the reports of what is still in flight arrive with later polls.
        self.producer.flush(self.delivery_timeout)

    def close(self, timeout: float, report: Report) -> None:
        left = self.producer.flush(timeout)
        if left:
            report(0, left, f"{left} messages undelivered at shutdown")


_COUNTERS = (
    "offered",
    "written",
    "dropped_queue_full",
    "dropped_write_failed",
    "dropped_at_close",
    "batches",
    "failed_batches",
)


class ImpressionSink:
    """Impressions off the request path: a bounded buffer in front of a writer thread.

    The request path only appends to a deque (no lock, no wake-up): a thread woken per list would
    take the interpreter lock from the event loop thousands of times a second. The writer wakes
    when a batch is full or after ``flush_seconds``, and encodes in small chunks, yielding the
    interpreter lock between them, so a request waits at most one chunk's encoding."""

    ENCODE_CHUNK = 64

    def __init__(
        self,
        writer: ImpressionWriter,
        *,
        queue_size: int = 10_000,
        batch_size: int = 1_000,
        flush_seconds: float = 1.0,
    ) -> None:
        self.writer = writer
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._pending: collections.deque[ServedList] = collections.deque()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._last_error: str | None = None
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impression-sink", daemon=True)
        self._thread.start()

    def offer(self, served: ServedList) -> bool:
        """Buffer one served list for writing; False (and counted) when it had to be dropped.
        Never blocks, never raises."""
        try:
            self._count("offered")
            if self._closing.is_set():
                self._count("dropped_at_close")
                return False
            pending = self._pending
            if len(pending) >= self.queue_size:
                self._count("dropped_queue_full")
                return False
            pending.append(served)
            if len(pending) == self.batch_size:
                self._wake.set()
            return True
        except Exception:  # the request must never pay for the log
            self._count("dropped_write_failed")
            return False

    def counters(self) -> dict[str, Any]:
        """Totals since start (what health and metrics report): offered, written, the drops by
        cause, batches written and failed, lists queued now, the last write error."""
        with self._lock:
            counts: dict[str, Any] = dict(self._counts)
            counts["last_error"] = self._last_error
        counts["queued"] = len(self._pending)
        return counts

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within ``timeout``), then stop; what is left is counted as dropped."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        left = 0
        while True:
            try:
                self._pending.popleft()
                left += 1
            except IndexError:
                break
        if left:
            self._count("dropped_at_close", left)
        if not self._thread.is_alive():
            try:
                self.writer.close(max(timeout, 0.1), self._report)
            except Exception as exc:
                self._note_error(exc)

    def __enter__(self) -> ImpressionSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        waiting_since: float | None = None  # when the writer first saw a partial batch waiting
        while True:
            closing = self._closing.is_set()
            queued = len(self._pending)
            now = time.monotonic()
            if queued and waiting_since is None:
                waiting_since = now
            if queued and (
                queued >= self.batch_size or closing or now - (waiting_since or now) >= self.flush_seconds
            ):
                self._write(self._take(self.batch_size))
                waiting_since = None
                continue
            if closing:
                return
            wait = self.flush_seconds if waiting_since is None else waiting_since + self.flush_seconds - now
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()

    def _take(self, most: int) -> list[ServedList]:
        batch: list[ServedList] = []
        pending = self._pending
        with contextlib.suppress(IndexError):
            while len(batch) < most:
                batch.append(pending.popleft())
        return batch

    def _write(self, batch: list[ServedList]) -> None:
        try:
            lines: list[str] = []
            for start in range(0, len(batch), self.ENCODE_CHUNK):
                lines.extend(impression_line(served) for served in batch[start : start + self.ENCODE_CHUNK])
                time.sleep(0)  # let a waiting request have the interpreter lock
            self.writer.write(lines, self._report)
            self._count("batches")
        except Exception as exc:
            self._count("failed_batches")
            self._report(0, len(batch), f"{type(exc).__name__}: {exc}")

    def _report(self, written: int, dropped: int, error: str | None) -> None:
        with self._lock:
            self._counts["written"] += written
            self._counts["dropped_write_failed"] += dropped
            if error is not None:
                first = self._last_error is None
                self._last_error = error
        if error is not None and first:
            log.warning("impressions: %d dropped: %s (further errors only counted)", dropped, error)

    def _note_error(self, exc: Exception) -> None:
        with self._lock:
            self._last_error = f"{type(exc).__name__}: {exc}"

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n


class NoSink:
    """``impressions.enabled: false``: every list offered is counted, none written."""

    def __init__(self) -> None:
        self._offered = 0

    def offer(self, served: ServedList) -> bool:
        self._offered += 1
        return False

    def counters(self) -> dict[str, Any]:
        return {**dict.fromkeys(_COUNTERS, 0), "offered": self._offered, "queued": 0, "last_error": None}

    def close(self, timeout: float = 10.0) -> None:
        return None


def sink_for(config: Config) -> ImpressionSink | NoSink:
    """The sink the service uses: into the ingest source the configuration names."""
    settings = config.impressions
    if not settings.enabled:
        return NoSink()
    if config.ingest.source == "kafka":
        kafka = config.ingest.kafka
        assert kafka.bootstrap_servers and kafka.topic  # IngestConfig checks it
        writer: ImpressionWriter = KafkaTopic(
            kafka.bootstrap_servers, kafka.topic, settings.delivery_timeout_seconds, settings.queue_size
        )
    else:
        writer = LandingFolder(config.ingest.path)
    return ImpressionSink(
        writer,
        queue_size=settings.queue_size,
        batch_size=settings.batch_size,
        flush_seconds=settings.flush_seconds,
    )

"""The service's impression sink, standalone: real files, a real Kafka broker, and sinks that cannot
write (an unwritable folder, a frozen broker) never slowing ``offer``."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recspark.api.impressions import (
    ImpressionSink,
    LandingFolder,
    NoSink,
    ServedList,
    impression_line,
    sink_for,
)
from recspark.core.recommendation_ids import new_recommendation_id, served_at
from tests.conftest import config_under
from tests.kafka_broker import KAFKA_VERSION, BrokerUnavailable, KafkaBroker


def served(k: int) -> ServedList:
    return ServedList(
        recommendation_id=new_recommendation_id(),
        user_id=f"u{k}",
        items=[f"i{k}", f"i{k + 1}", f"i{k + 2}"],
        model_version="4",
        variant="challenger" if k % 2 else None,
        sources=["als", "als", "popular"],
    )


def settled(sink: ImpressionSink | NoSink) -> dict:
    """The counters once every offered list is written or dropped."""
    counts = sink.counters()
    accounted = sum(counts[k] for k in counts if k.startswith("dropped_")) + counts["written"]
    assert accounted + counts["queued"] <= counts["offered"]
    return counts


def test_an_impression_line_is_the_contract_impression_of_the_list() -> None:
    shown = served(1)
    record = json.loads(impression_line(shown))
    assert record == {
        "event_id": shown.recommendation_id,
        "event_time": served_at(shown.recommendation_id).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "user_id": "u1",
        "item_id": "",
        "event_type": "impression",
        "recommendation_id": shown.recommendation_id,
        "items": ["i1", "i2", "i3"],
        "list": "recommendations",
        "model_version": "4",
        "variant": "challenger",
        "sources": ["als", "als", "popular"],
    }


def landed(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_lists_land_as_renamed_files_in_batches_by_size_time_and_shutdown(tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    sink = ImpressionSink(LandingFolder(folder), queue_size=1000, batch_size=50, flush_seconds=0.3)
    lists = [served(k) for k in range(120)]
    for shown in lists:
        assert sink.offer(shown)
    deadline = time.monotonic() + 10
    while len(landed(folder)) < 100 and time.monotonic() < deadline:  # two full batches
        time.sleep(0.05)
    assert len(landed(folder)) >= 100
    deadline = time.monotonic() + 10
    while len(landed(folder)) < 120 and time.monotonic() < deadline:  # the rest, by time
        time.sleep(0.05)
    assert len(landed(folder)) == 120
    assert sink.offer(served(500))
    sink.close()  # the last one, on shutdown
    assert [r["recommendation_id"] for r in landed(folder)][:120] == [s.recommendation_id for s in lists]
    assert len(landed(folder)) == 121
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
    counts = settled(sink)
    assert (counts["offered"], counts["written"], counts["batches"]) == (121, 121, 4)
    assert counts["dropped_queue_full"] == counts["dropped_write_failed"] == 0
    assert not sink.offer(served(501))  # closed: counted, not written
    assert sink.counters()["dropped_at_close"] == 1


def test_a_folder_that_cannot_be_written_never_slows_offer_and_every_drop_is_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the landing folder should be\n")
    sink = ImpressionSink(
        LandingFolder(blocker / "landing"), queue_size=100, batch_size=10, flush_seconds=0.05
    )
    slowest = 0.0
    for k in range(5000):
        began = time.perf_counter()
        sink.offer(served(k))
        slowest = max(slowest, time.perf_counter() - began)
    sink.close(timeout=5)
    counts = settled(sink)
    assert slowest < 0.05, f"an offer took {slowest:.3f}s"
    assert counts["written"] == 0 and counts["offered"] == 5000
    assert counts["dropped_queue_full"] > 0 and counts["dropped_write_failed"] > 0
    assert counts["dropped_queue_full"] + counts["dropped_write_failed"] + counts["dropped_at_close"] == 5000
    assert "NotADirectoryError" in counts["last_error"] or "FileExistsError" in counts["last_error"]


def test_a_disabled_sink_counts_and_writes_nothing(tmp_path: Path) -> None:
    sink = sink_for(config_under(tmp_path, "impressions.enabled=false"))
    assert isinstance(sink, NoSink) and not sink.offer(served(1))
    assert sink.counters()["offered"] == 1 and not (tmp_path / "incoming").exists()


# --------------------------------------------------------------------------------------------
# Kafka: a real broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    node = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        node.start()
    except BrokerUnavailable as exc:
        node.stop()
        pytest.skip(f"cannot run a Kafka {KAFKA_VERSION} broker here: {exc}")
    yield node
    node.stop()


def consumed(broker: KafkaBroker, topic: str, expected: int, timeout: float = 60.0) -> list[dict]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                records.append(json.loads(message.value()))
    finally:
        consumer.close()
    return records


def kafka_config(tmp_path: Path, broker: KafkaBroker, topic: str, *overrides: str):
    return config_under(
        tmp_path,
        "ingest.source=kafka",
        f"ingest.kafka.bootstrap_servers={broker.bootstrap_servers}",
        f"ingest.kafka.topic={topic}",
        *overrides,
    )


def test_lists_reach_the_topic_as_contract_lines(tmp_path: Path, broker: KafkaBroker) -> None:
    broker.create_topic("shown")
    sink = sink_for(kafka_config(tmp_path, broker, "shown", "impressions.flush_seconds=0.2"))
    lists = [served(k) for k in range(200)]
    for shown in lists:
        assert sink.offer(shown)
    sink.close(timeout=30)
    assert settled(sink)["written"] == 200
    records = consumed(broker, "shown", 200)
    assert sorted(r["recommendation_id"] for r in records) == sorted(s.recommendation_id for s in lists)
    assert all(r["event_type"] == "impression" and r["event_id"] == r["recommendation_id"] for r in records)


def test_a_frozen_broker_never_slows_offer_and_every_drop_is_counted(
    tmp_path: Path, broker: KafkaBroker
) -> None:
    broker.create_topic("frozen")
    config = kafka_config(
        tmp_path,
        broker,
        "frozen",
        "impressions.queue_size=200",
        "impressions.batch_size=50",
        "impressions.flush_seconds=0.05",
        "impressions.delivery_timeout_seconds=2",
    )
    sink = sink_for(config)
    assert sink.offer(served(0))
    deadline = time.monotonic() + 30
    while sink.counters()["written"] < 1 and time.monotonic() < deadline:  # connected and delivering
        time.sleep(0.05)
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)  # the broker stops answering; connections stay open
    try:
        slowest = 0.0
        began_all = time.monotonic()
        while time.monotonic() - began_all < 4:  # past the delivery timeout
            began = time.perf_counter()
            sink.offer(served(1))
            slowest = max(slowest, time.perf_counter() - began)
            time.sleep(0.0005)
        counts = sink.counters()
        assert slowest < 0.05, f"an offer took {slowest:.3f}s"
        assert counts["dropped_queue_full"] > 0  # the writer thread waits on the broker, not the requests
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    sink.close(timeout=10)
    counts = settled(sink)
    assert counts["dropped_write_failed"] > 0  # messages the frozen broker never acknowledged in time
    dropped = counts["dropped_queue_full"] + counts["dropped_write_failed"] + counts["dropped_at_close"]
    assert counts["written"] + dropped == counts["offered"]

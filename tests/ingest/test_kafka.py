"""Kafka ingestion end to end against a real broker: no mocks, real offsets, real checkpoints.

The broker is a single KRaft node started from Maven jars (tests/kafka_broker.py); on a machine
that cannot run one (no Java, jars unreachable) the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.tables import EVENTS, INGEST_METRICS, INTERACTIONS, QUARANTINE, Lake
from recspark.ingest.stream import start_ingest
from tests.conftest import config_under
from tests.ingest.test_ingest import event
from tests.kafka_broker import KAFKA_VERSION, BrokerUnavailable, KafkaBroker

pytestmark = pytest.mark.kafka

TOPIC = "shop-events"
INGEST_TIMEOUT_SECONDS = 300


def has_kafka_connector(spark: SparkSession) -> bool:
    conf = spark.sparkContext.getConf()
    loaded = conf.get("spark.jars.packages", "") + "," + conf.get("spark.jars", "")
    return "spark-sql-kafka-0-10" in loaded


@pytest.fixture(scope="module")
def kafka_spark(spark: SparkSession) -> SparkSession:
    if not has_kafka_connector(spark):
        pytest.skip(
            "the shared Spark session has no Kafka connector "
            "(tests/conftest.py must add spark_packages(kafka=True) to spark.jars.packages)"
        )
    return spark


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    node = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    started = time.monotonic()
    try:
        node.start()
        node.create_topic(TOPIC, partitions=2)
    except BrokerUnavailable as exc:
        node.stop()
        pytest.skip(f"cannot run a Kafka {KAFKA_VERSION} broker here: {exc}")
    print(
        f"\n[kafka] broker {KAFKA_VERSION} at {node.bootstrap_servers}: listening after "
        f"{node.startup_seconds}s, topic ready after {time.monotonic() - started:.1f}s"
    )
    yield node
    node.stop()


@pytest.fixture(scope="module")
def producers_closed(kafka_spark: SparkSession, broker: KafkaBroker) -> Iterator[None]:
    """After the module, close the Kafka producers Spark's sink caches (for 10 minutes), before
    the broker stops: otherwise they keep reconnecting to it and flood the log with warnings."""
    yield
    with contextlib.suppress(Exception):  # a private API; failing only means noisier logs
        pool = getattr(kafka_spark._jvm.org.apache.spark.sql.kafka010.producer, "InternalKafkaProducerPool$")
        getattr(pool, "MODULE$").reset()


def produce(spark: SparkSession, broker: KafkaBroker, messages: list[tuple[int, str]]) -> None:
    """Write (partition, value) messages to the topic, in order within each partition."""
    (
        spark.createDataFrame(messages, "partition int, value string")
        .coalesce(1)
        .write.format("kafka")
        .option("kafka.bootstrap.servers", broker.bootstrap_servers)
        .option("topic", TOPIC)
        .save()
    )


def topic_coordinates(spark: SparkSession, broker: KafkaBroker) -> dict[str, list[str]]:
    """Every message value on the topic -> its ``topic:partition:offset`` locations."""
    rows = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", broker.bootstrap_servers)
        .option("subscribe", TOPIC)
        .option("startingOffsets", "earliest")
        .load()
        .select(F.col("value").cast("string").alias("value"), "topic", "partition", "offset")
        .collect()
    )
    where: dict[str, list[str]] = {}
    for r in rows:
        where.setdefault(r["value"], []).append(f"{r['topic']}:{r['partition']}:{r['offset']}")
    return where


def ingest(spark: SparkSession, config: Config) -> float:
    started = time.monotonic()
    query = start_ingest(spark, config, Lake.at(config.lake.root), once=True)
    try:
        finished = query.awaitTermination(INGEST_TIMEOUT_SECONDS)
    finally:
        if query.isActive:
            query.stop()
    assert finished, f"ingestion did not finish within {INGEST_TIMEOUT_SECONDS}s"
    assert query.exception() is None, query.exception()
    return time.monotonic() - started


def table(spark: SparkSession, config: Config, spec) -> DataFrame:
    return Lake.at(config.lake.root).read(spark, spec)


def stored_events(spark: SparkSession, config: Config) -> set[tuple]:
    return {
        (r["event_id"], r["user_id"], r["item_id"], r["event_type"], r["value"])
        for r in table(spark, config, EVENTS).collect()
    }


def counts(spark: SparkSession, config: Config) -> dict[tuple[str, str], tuple]:
    """(user, item) -> (view, add_to_cart, remove_from_cart, purchase, rating counts, last_rating)."""
    return {
        (r["user_id"], r["item_id"]): (
            r["view_count"],
            r["add_to_cart_count"],
            r["remove_from_cart_count"],
            r["purchase_count"],
            r["rating_count"],
            r["last_rating"],
        )
        for r in table(spark, config, INTERACTIONS).collect()
    }


E1 = event("e1", "2026-11-01T10:00:00Z", "u1", "i1", "view")
E2 = event("e2", "2026-11-01T10:05:00Z", "u1", "i1", "add_to_cart")
E3 = event("e3", "2026-11-01T10:06:00Z", "u1", "i1", "purchase", 1)
E4 = event("e4", "2026-11-02T09:00:00+01:00", "u2", "i2", "rating", 4)
E5 = event("e5", "2026-11-03T12:00:00Z", "u2", "i1", "view")
E6 = event("e6", "2026-11-04T08:00:00Z", "u3", "i3", "view")
E7 = event("e7", "2026-11-04T08:30:00Z", "u2", "i2", "purchase", 2)

BROKEN_1 = {
    '{"event_id": "b1", "event_time": ': "malformed JSON: not a JSON object",
    event("b2", "2026-11-01T10:00:00Z", "u1", "i1", "click"): "unknown event_type 'click'",
}
BROKEN_2 = {
    event("b3", "2026-11-04T08:00:00Z", "u3", "i3", "rating", 9): "rating value 9 outside 1-5",
}
b1, b2 = BROKEN_1
(b3,) = BROKEN_2

ROUND_1 = [
    (0, E1),
    (0, E2),
    (0, b1),
    (0, E3),
    (1, E4),
    (1, E3),  # the producer retried e3, and the retry landed on the other partition
    (1, b2),
    (1, ""),  # an empty message carries nothing: neither an event nor quarantined
    (1, E5),
]
ROUND_2 = [
    (0, E6),
    (0, E2),  # a retry of an event stored in the first run
    (0, b3),
    (1, E7),
    (1, E4),  # likewise
]


def test_kafka_events_are_ingested_exactly_once_across_runs(
    kafka_spark: SparkSession, broker: KafkaBroker, producers_closed: None, tmp_path: Path
) -> None:
    spark = kafka_spark
    kafka = (
        "ingest.source=kafka",
        f"ingest.kafka.bootstrap_servers={broker.bootstrap_servers}",
        f"ingest.kafka.topic={TOPIC}",
    )
    config = config_under(tmp_path, *kafka)

    produce(spark, broker, ROUND_1)
    first = ingest(spark, config)

    assert stored_events(spark, config) == {
        ("e1", "u1", "i1", "view", None),
        ("e2", "u1", "i1", "add_to_cart", None),
        ("e3", "u1", "i1", "purchase", 1.0),
        ("e4", "u2", "i2", "rating", 4.0),
        ("e5", "u2", "i1", "view", None),
    }
    where = topic_coordinates(spark, broker)
    quarantine = {r["raw"]: (r["reason"], r["source"]) for r in table(spark, config, QUARANTINE).collect()}
    assert quarantine == {raw: (reason, where[raw][0]) for raw, reason in BROKEN_1.items()}
    assert {source.rsplit(":", 2)[1] for _, source in quarantine.values()} == {"0", "1"}
    assert counts(spark, config) == {
        ("u1", "i1"): (1, 1, 0, 1, 0, None),
        ("u2", "i2"): (0, 0, 0, 0, 1, 4.0),
        ("u2", "i1"): (1, 0, 0, 0, 0, None),
    }
    [metrics] = table(spark, config, INGEST_METRICS).collect()
    assert (metrics["input_rows"], metrics["quarantined_rows"]) == (8, 2)
    assert (metrics["duplicate_rows"], metrics["events_written"]) == (1, 5)

    # More messages, two of them retries of stored events; restart on the same checkpoint, now
    # at most 3 offsets per micro-batch so the new messages span more than one batch.
    produce(spark, broker, ROUND_2)
    again = config_under(tmp_path, *kafka, "ingest.kafka.max_offsets_per_trigger=3")
    second = ingest(spark, again)

    events = table(spark, config, EVENTS)
    assert events.count() == events.select("event_id").distinct().count() == 7
    assert stored_events(spark, config) >= {
        ("e6", "u3", "i3", "view", None),
        ("e7", "u2", "i2", "purchase", 2.0),
    }
    quarantine = {r["raw"]: r["reason"] for r in table(spark, config, QUARANTINE).collect()}
    assert quarantine == {**BROKEN_1, **BROKEN_2}
    assert counts(spark, config) == {
        ("u1", "i1"): (1, 1, 0, 1, 0, None),  # e2's retry is not counted again
        ("u2", "i2"): (0, 0, 0, 1, 1, 4.0),  # nor e4's
        ("u2", "i1"): (1, 0, 0, 0, 0, None),
        ("u3", "i3"): (1, 0, 0, 0, 0, None),
    }
    later = table(spark, config, INGEST_METRICS).where(F.col("batch_id") > metrics["batch_id"]).collect()
    assert len(later) >= 2
    totals = [sum(m[c] for m in later) for c in ("input_rows", "quarantined_rows", "duplicate_rows")]
    assert totals == [5, 1, 2]  # only the new offsets were read
    assert sum(m["events_written"] for m in later) == 2
    print(f"[kafka] first run {first:.1f}s, restart ({len(later)} batches) {second:.1f}s")

"""What ingest reads and keeps (``ingest.*``, ``ingest.kafka.*``), how the events it keeps become
the interaction signal (``interactions.*``), and how it attributes them to served lists
(``outcomes.*``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from recspark.core.config.checks import ConfigError, require
from recspark.core.contract import IMPRESSION, INTEREST_EVENT_TYPES

# Bounds on the ingest's event-time settings, so that every date it derives (an event's date ±
# the allowed lateness, now + the future allowance, the watermark) stays far inside the range
# Python's datetime and Spark's DATE/TIMESTAMP can hold (years 1 to 9999): year 1, or a future
# allowance of 1e12 minutes, overflowed the dedup window's date arithmetic in every batch.
EARLIEST_MIN_EVENT_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE_MINUTES = 366 * 24 * 60
MAX_LATENESS_HOURS = 366 * 24
# The file source's maxFileAge reaches Spark in milliseconds (a long): a century is more than any
# landing folder holds, and far from an overflow.
MAX_FILE_AGE_DAYS = 36_500.0


@dataclass(frozen=True)
class KafkaConfig:
    """The Kafka source, read when `ingest.source` is `kafka`."""

    bootstrap_servers: str | None = None
    """The brokers (`host:port,...`); required with `ingest.source: kafka`."""
    topic: str | None = None
    """The topic events are read from; required with `ingest.source: kafka`."""
    starting_offsets: str = "earliest"
    """Where a new query starts reading (Spark's `startingOffsets`)."""
    max_offsets_per_trigger: int | None = None
    """Cap on records per micro-batch; null: no cap."""
    fail_on_data_loss: bool = True
    """Spark's `failOnDataLoss`: stop when offsets the checkpoint expects are gone (retention ran out, the
    topic was recreated); false: log it (Spark warns) and go on from what is there."""


@dataclass(frozen=True)
class IngestConfig:
    """The ingest job: where events come from, how they are batched, which are kept."""

    source: str = "files"
    """`files` (JSON lines under `ingest.path`) or `kafka` (`ingest.kafka.*`)."""
    path: str = ".recspark/incoming/events"
    """Directory of JSON-lines event files."""
    trigger_seconds: float = 5.0
    """Micro-batch interval of the running ingest job (`ingest` without `--once`)."""
    max_files_per_trigger: int | None = 1000
    """Files per micro-batch, so a backlog (a new checkpoint over a landing history) arrives in batches of
    this many files instead of one batch of everything; null: no cap. A low cap costs throughput: each
    batch's MERGE scans the key columns of the whole `interactions` table."""
    max_file_age_days: float = 36_500.0
    """The file source's `maxFileAge`: files this much older than the newest one seen are skipped (Spark's
    default of 7 days silently skips a backfill copied with its old mtimes). Passed in milliseconds, so
    0.5 is half a day; more than 0, at most 36500."""
    allowed_lateness_hours: float = 72.0
    """The event-time watermark: events older than the newest event time seen minus this are flagged late
    in `ingest_metrics.late_rows`, and still stored, deduplicated and counted; dedup looks for earlier
    copies of an `event_id` within this window around the event's date. 0 to 8784 (366 days)."""
    min_event_time: str = "1970-01-01T00:00:00Z"
    """Earlier event times are a broken clock (year 1): quarantined with a reason. ISO 8601 with a time
    zone, from 1900-01-01T00:00:00Z to now."""
    max_future_minutes: float = 1440.0
    """Event times further ahead of the ingest clock are quarantined too (year 9999 never becomes "now").
    0 to 527040 (366 days). These bounds keep every date the ingest derives (an event's date ± the
    lateness, now + this allowance) far inside what Python and Spark hold: loading refuses others."""
    deletion_vectors: bool = True
    """Deletion vectors on `interactions`: a batch's MERGE marks the updated pairs' old rows deleted
    instead of rewriting every file they sit in. false for readers without them (delta-rs' `to_pandas`):
    the feature is dropped from an existing table on the next ingest, and every MERGE rewrites files."""
    kafka: KafkaConfig = field(default_factory=KafkaConfig)

    def __post_init__(self) -> None:
        require(self.source in ("files", "kafka"), "ingest.source must be 'files' or 'kafka'")
        require(self.trigger_seconds > 0, "ingest.trigger_seconds must be > 0")
        require(
            self.max_files_per_trigger is None or self.max_files_per_trigger > 0,
            "ingest.max_files_per_trigger must be > 0 (or null for no cap)",
        )
        require(
            0 < self.max_file_age_days <= MAX_FILE_AGE_DAYS,
            f"ingest.max_file_age_days must be > 0 and at most {MAX_FILE_AGE_DAYS:g} (100 years), "
            f"got {self.max_file_age_days!r}",
        )
        require(
            0 <= self.allowed_lateness_hours <= MAX_LATENESS_HOURS,
            f"ingest.allowed_lateness_hours must be between 0 and {MAX_LATENESS_HOURS} (366 days), "
            f"got {self.allowed_lateness_hours!r}",
        )
        require(
            0 <= self.max_future_minutes <= MAX_FUTURE_MINUTES,
            f"ingest.max_future_minutes must be between 0 and {MAX_FUTURE_MINUTES} (366 days), "
            f"got {self.max_future_minutes!r}",
        )
        try:
            earliest = datetime.fromisoformat(self.min_event_time.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"ingest.min_event_time must be an ISO 8601 time, got {self.min_event_time!r}"
            ) from None
        require(earliest.tzinfo is not None, "ingest.min_event_time needs a time zone, e.g. ...Z")
        require(
            earliest >= EARLIEST_MIN_EVENT_TIME,
            f"ingest.min_event_time must be at or after {EARLIEST_MIN_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ}, "
            f"got {self.min_event_time!r}",
        )
        require(
            earliest <= datetime.now(timezone.utc),
            f"ingest.min_event_time must not be in the future, got {self.min_event_time!r}",
        )
        if self.source == "kafka":
            require(
                bool(self.kafka.bootstrap_servers and self.kafka.topic),
                "ingest.source is 'kafka' but ingest.kafka.bootstrap_servers or "
                "ingest.kafka.topic is not set",
            )

    @property
    def earliest_event_time(self) -> datetime:
        """``min_event_time`` in UTC, without a time zone (as Spark's session time zone is UTC)."""
        earliest = datetime.fromisoformat(self.min_event_time.replace("Z", "+00:00"))
        return earliest.astimezone(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class InteractionsConfig:
    """How events become the implicit-feedback signal ALS trains on."""

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "view": 1.0,
            "add_to_cart": 3.0,
            "remove_from_cart": -2.0,
            "purchase": 5.0,
            "rating": 1.0,
        }
    )
    """What each event type adds to a pair's signal (every event type, and only those)."""
    rating_center: float = 0.0
    """A rating adds `weights.rating * (value - rating_center) / (5 - rating_center)`: with the default
    centre 0 a 5-star rating counts fully and a 1-star one a fifth."""
    half_life_days: float | None = None
    """Exponential time decay of old evidence; null: none."""

    def __post_init__(self) -> None:
        require(
            IMPRESSION not in self.weights,
            "interactions.weights cannot weigh impressions: a list shown is never interest in an item",
        )
        unknown = sorted(set(self.weights) - set(INTEREST_EVENT_TYPES))
        require(not unknown, f"interactions.weights has unknown event types: {unknown}")
        missing = sorted(set(INTEREST_EVENT_TYPES) - set(self.weights))
        require(not missing, f"interactions.weights misses event types: {missing}")
        require(0 <= self.rating_center < 5, "interactions.rating_center must be in [0, 5)")
        require(
            self.half_life_days is None or self.half_life_days > 0,
            "interactions.half_life_days must be > 0 (or null for no decay)",
        )


@dataclass(frozen=True)
class OutcomesConfig:
    """How ingest attributes shoppers' events to the lists they were shown (recommendation_outcomes)."""

    attribution_window_hours: float = 24.0
    """A view, add-to-cart or purchase carrying a `recommendation_id` counts for that list when it
    happens within this many hours after the list was served (and at most an hour before, for
    clocks that disagree)."""

    def __post_init__(self) -> None:
        require(self.attribution_window_hours > 0, "outcomes.attribution_window_hours must be > 0")

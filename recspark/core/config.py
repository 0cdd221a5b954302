"""Typed configuration: YAML in ``conf/``, then environment overrides, then ``--set key=value``.

Every job reads its settings through :func:`load_config`, so an operator's mistake (a typo in a
key, a word where a number belongs) stops the job before Spark starts, with one clear line.
Environment overrides look like ``RECSPARK__TRAIN__RANK=64`` (double underscores separate levels).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "RECSPARK__"
# The event types that say something about a user's interest in an item (what interactions fold).
INTEREST_EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
# A served list shown to a user: never interest in an item (data contract §1).
IMPRESSION = "impression"
EVENT_TYPES = (*INTEREST_EVENT_TYPES, IMPRESSION)
# The fields every event must carry (data contract §1); an impression may leave item_id empty.
REQUIRED_FIELDS = ("event_id", "event_time", "user_id", "item_id", "event_type")
# Longer ids are quarantined by ingest, so no table holds one (and the lookup service refuses them).
MAX_ID_LENGTH = 256
# How a catalog may spell `available` (data contract §2; case and surrounding spaces aside): read
# by the Spark catalog reader (core/catalog.py) and the lookup service's (api/catalog.py).
TRUE_WORDS = ("true", "1", "yes", "y")
FALSE_WORDS = ("false", "0", "no", "n")
IMPRESSION_REQUIRED_FIELDS = ("recommendation_id", "items")
# The events an impression's recommendation_id attributes to it: a click (a view), an add-to-cart,
# a purchase of one of its items (recommendation_outcomes' clicks, add_to_carts, purchases).
ATTRIBUTED_EVENT_TYPES = ("view", "add_to_cart", "purchase")
# Which list an impression shows (its optional ``list`` field): a user's recommendations, or an
# item's similar items (the serving tables' names).
SERVED_LISTS = ("recommendations", "similar_items")


class ConfigError(ValueError):
    """A configuration problem an operator can fix; the message is one line."""


AUTO = "auto"

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


def _auto_or_days(value: str | float, key: str) -> str | float:
    """``auto`` or a positive number of days (YAML may hand over either as text)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        days = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be 'auto' or a number of days, got {value!r}") from None
    _require(days > 0, f"{key} must be > 0 (or 'auto'), got {value!r}")
    return days


@dataclass(frozen=True)
class SparkConfig:
    """The Spark session every job builds (recspark.core.session)."""

    master: str | None = "local[2]"
    """Spark master; null on a cluster (spark-submit decides). Under spark-submit its `--master` always
    wins; `deploy/submit.sh` passes this value as `--master` when `SPARK_MASTER` is unset."""
    app_name: str = "recspark"
    """Spark application name (the job name is appended: `recspark-train`)."""
    shuffle_partitions: int = 8
    """`spark.sql.shuffle.partitions`."""
    driver_memory: str | None = "4g"
    """Driver memory when recspark starts the JVM itself."""
    conf: dict[str, str] = field(default_factory=dict)
    """Any further Spark settings (`spark.conf.<name>`), passed to the session builder as they are."""


@dataclass(frozen=True)
class LakeConfig:
    """Where the Delta tables and streaming checkpoints live."""

    root: str = ".recspark/lake"
    """Directory or URI under which every table and checkpoint lives."""
    database: str | None = None
    """When set, every table is also registered in the Spark catalog under this database."""


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
        _require(self.source in ("files", "kafka"), "ingest.source must be 'files' or 'kafka'")
        _require(self.trigger_seconds > 0, "ingest.trigger_seconds must be > 0")
        _require(
            self.max_files_per_trigger is None or self.max_files_per_trigger > 0,
            "ingest.max_files_per_trigger must be > 0 (or null for no cap)",
        )
        _require(
            0 < self.max_file_age_days <= MAX_FILE_AGE_DAYS,
            f"ingest.max_file_age_days must be > 0 and at most {MAX_FILE_AGE_DAYS:g} (100 years), "
            f"got {self.max_file_age_days!r}",
        )
        _require(
            0 <= self.allowed_lateness_hours <= MAX_LATENESS_HOURS,
            f"ingest.allowed_lateness_hours must be between 0 and {MAX_LATENESS_HOURS} (366 days), "
            f"got {self.allowed_lateness_hours!r}",
        )
        _require(
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
        _require(earliest.tzinfo is not None, "ingest.min_event_time needs a time zone, e.g. ...Z")
        _require(
            earliest >= EARLIEST_MIN_EVENT_TIME,
            f"ingest.min_event_time must be at or after {EARLIEST_MIN_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ}, "
            f"got {self.min_event_time!r}",
        )
        _require(
            earliest <= datetime.now(timezone.utc),
            f"ingest.min_event_time must not be in the future, got {self.min_event_time!r}",
        )
        if self.source == "kafka":
            _require(
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
        _require(
            IMPRESSION not in self.weights,
            "interactions.weights cannot weigh impressions: a list shown is never interest in an item",
        )
        unknown = sorted(set(self.weights) - set(INTEREST_EVENT_TYPES))
        _require(not unknown, f"interactions.weights has unknown event types: {unknown}")
        missing = sorted(set(INTEREST_EVENT_TYPES) - set(self.weights))
        _require(not missing, f"interactions.weights misses event types: {missing}")
        _require(0 <= self.rating_center < 5, "interactions.rating_center must be in [0, 5)")
        _require(
            self.half_life_days is None or self.half_life_days > 0,
            "interactions.half_life_days must be > 0 (or null for no decay)",
        )


# What becomes of items that appear in no catalog line (see CatalogConfig.unlisted_items).
EXCLUDE_UNLISTED, INCLUDE_UNLISTED = "exclude", "include"
UNLISTED_ITEMS = (EXCLUDE_UNLISTED, INCLUDE_UNLISTED)


@dataclass(frozen=True)
class CatalogConfig:
    """The item catalog: categories and availability."""

    path: str | None = ".recspark/incoming/catalog.jsonl"
    """The catalog: JSON lines, CSV with a header, or Parquet (by extension), read line by line.
    Items it marks unavailable, or names in a malformed line, are never recommended. null: no
    catalog, every item is eligible."""
    unlisted_items: str = EXCLUDE_UNLISTED
    """Items with interactions but no line in the catalog: `exclude` (a catalog that omits an item
    cannot vouch for it being in stock) or `include` (for a catalog that lists only some items,
    e.g. only what went out of stock)."""

    def __post_init__(self) -> None:
        _require(
            self.unlisted_items in UNLISTED_ITEMS,
            f"catalog.unlisted_items must be 'exclude' or 'include', got {self.unlisted_items!r}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """`recspark train`: the competing model families, the held-out test period, ALS's settings."""

    rank: int = 32
    """ALS rank (unless tuning found a better one)."""
    reg_param: float = 0.03
    """ALS regularisation (unless tuning found a better one)."""
    alpha: float = 1.0
    """ALS confidence scale of implicit feedback (unless tuning found a better one)."""
    max_iter: int = 10
    """ALS iterations."""
    seed: int = 42
    """ALS random seed."""
    num_user_blocks: int = 4
    """ALS partitioning: user blocks."""
    num_item_blocks: int = 4
    """ALS partitioning: item blocks."""
    confidence: str = "log"
    """`log` feeds `log1p(strength)` to ALS, damping heavy repeat viewers; `linear` feeds `strength`."""
    families: list[str] = field(default_factory=lambda: ["als", "ease"])
    """The families that compete: `als` (Spark MLlib ALS, implicit feedback) and `ease` (item-item EASE
    weights); each is tuned on the validation period and the best there is the candidate."""
    blend: bool = True
    """With both families, a score blend of the two competes too."""
    split: str = AUTO
    """How the future is held out: `time` (the last `test_days`), `per_user` (each user's newest
    `test_fraction` of events), or `auto` (the shortest newest period with `min_test_users` test users, at
    most `max_test_share` of the events; else per user)."""
    test_days: str | float = AUTO
    """The test period's length in days, or `auto`: the shortest newest period holding `min_test_users`
    users with a new item."""
    min_test_users: int = 500
    """What an `auto` test period must hold."""
    max_test_share: float = 0.25
    """An `auto` test period holds at most this share of the events; else the split is per user."""
    test_fraction: float = 0.2
    """Per-user split: each user's newest share of events."""
    k: int = 10
    """K of the ranking metrics."""
    min_train_interactions: int = 100
    """Refuse to train on fewer positive pairs."""
    checkpoint_interval: int = 5
    """ALS checkpoints its lineage every this many iterations (long fits on a cluster)."""
    favourite_categories: int = 3
    """The category baseline recommends popular items from a user's this many favourite categories (by
    training-period strength), then fills from overall popularity."""
    use_tuned: bool = True
    """Apply the plan `recspark tune` wrote (its family and settings win over `train.*`); false ignores it."""
    driver_max_pairs: int = 1_000_000
    """A split whose training period has at most this many positive user-item pairs is evaluated on the
    driver (the same lists and metrics as in Spark, without a Spark job per model), and tuning fits its
    trials there (NumPy, MLlib's ALS objective, ALS warm-started); larger: in Spark, each trial fitted by
    MLlib from scratch. `0`: always Spark."""

    def __post_init__(self) -> None:
        for name in ("rank", "max_iter", "num_user_blocks", "num_item_blocks", "k", "favourite_categories"):
            _require(getattr(self, name) > 0, f"train.{name} must be > 0")
        _require(self.reg_param >= 0, "train.reg_param must be >= 0")
        _require(self.alpha > 0, "train.alpha must be > 0")
        object.__setattr__(self, "test_days", _auto_or_days(self.test_days, "train.test_days"))
        _require(self.confidence in ("log", "linear"), "train.confidence must be 'log' or 'linear'")
        _require(
            isinstance(self.families, list)
            and len(self.families) > 0
            and set(self.families) <= set(FAMILIES)
            and len(set(self.families)) == len(self.families),
            f"train.families must be a non-empty list drawn from {list(FAMILIES)}, got {self.families!r}",
        )
        _require(self.split in SPLITS, f"train.split must be one of {list(SPLITS)}, got {self.split!r}")
        _require(self.min_test_users > 0, "train.min_test_users must be > 0")
        _require(0 < self.max_test_share < 1, "train.max_test_share must be in (0, 1)")
        _require(0 < self.test_fraction < 1, "train.test_fraction must be in (0, 1)")
        _require(
            isinstance(self.driver_max_pairs, int) and self.driver_max_pairs >= 0,
            f"train.driver_max_pairs must be an integer >= 0, got {self.driver_max_pairs!r}",
        )


# The model families `train` can fit; "blend" (ALS + EASE) is formed from the first two.
FAMILIES = ("als", "ease")
SPLITS = (AUTO, "time", "per_user")
EASE_SIGNALS = ("preference", "binary")


@dataclass(frozen=True)
class EaseConfig:
    """The item-item family (EASE): one item x item inverse on the driver, so it is capped."""

    l2: float = 300.0
    """The ridge penalty λ."""
    max_items: int = 10_000
    """Only the most popular items get item-item weights: the driver inverts a `max_items`² matrix."""
    min_item_users: int = 2
    """Items with fewer users have too little co-occurrence to learn from: no weights."""
    neighbours: int = 500
    """Weights kept (and served) per item, largest absolute weight first (`item_similarity`)."""
    signal: str = "preference"
    """What X holds: `preference`, the signal ALS sees (`log1p(strength)` with `train.confidence: log`), or
    `binary` (1 for every positive pair)."""

    def __post_init__(self) -> None:
        _require(
            self.signal in EASE_SIGNALS,
            f"ease.signal must be one of {list(EASE_SIGNALS)}, got {self.signal!r}",
        )
        _require(self.l2 > 0, "ease.l2 must be > 0")
        _require(self.max_items > 1, "ease.max_items must be > 1")
        _require(self.min_item_users >= 1, "ease.min_item_users must be >= 1")
        _require(self.neighbours > 0, "ease.neighbours must be > 0")


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow: the tracking store, the model registry and the promotion rule."""

    tracking_uri: str = "sqlite:///.recspark/mlflow.db"
    """Tracking store and model registry (database-backed, so the registry works)."""
    experiment: str = "recspark"
    """The experiment runs are logged to."""
    model_name: str = "recspark-als"
    """The registered model."""
    artifact_location: str | None = ".recspark/mlartifacts"
    """Where run artifacts go for a new experiment; null: the tracking server decides."""
    promotion_metric: str = "ndcg_at_k"
    """The metric the promotion rule compares (validated when the config loads)."""
    promotion_margin: float = 0.0
    """The relative lead (>= 0) the candidate needs over the champion and the baselines on
    `promotion_metric`."""
    promotion_confidence: float = 0.5
    """Share of paired bootstrap resamples of the test users in which the candidate must lead each
    reference by the margin (0.5: more likely than not; 0.95: a confident lead)."""
    min_test_users: int = 50
    """Fewer test users (or a NaN metric) is insufficient evidence: nothing is promoted, the champion
    stays."""
    promotion_baselines: list[str] = field(default_factory=lambda: ["popular"])
    """Baselines the candidate must beat by the margin as well as the champion; add `category_popular` to
    also demand a lead over most-popular-in-favourite-categories."""

    def __post_init__(self) -> None:
        _require_ranking_metric(self.promotion_metric, "mlflow.promotion_metric")
        _require(
            self.promotion_margin >= 0,
            f"mlflow.promotion_margin must be >= 0 (a relative lead), got {self.promotion_margin!r}",
        )
        _require(
            0.5 <= self.promotion_confidence < 1,
            f"mlflow.promotion_confidence must be in [0.5, 1), got {self.promotion_confidence!r}",
        )
        _require(self.min_test_users > 0, "mlflow.min_test_users must be > 0")
        baselines = self.promotion_baselines
        _require(
            isinstance(baselines, list) and all(b in BASELINES for b in baselines),
            f"mlflow.promotion_baselines must be a list drawn from {list(BASELINES)}, got {baselines!r}",
        )


# The baselines every trained model is compared with (metric prefixes in MLflow), as reports
# and promotion reasons name them.
BASELINE_LABELS = {"popular": "most popular", "category_popular": "popular in favourite categories"}
BASELINES = tuple(BASELINE_LABELS)


@dataclass(frozen=True)
class TuneConfig:
    """`recspark tune`: a small search on a validation split carved from the training period."""

    rank: list[int] = field(default_factory=lambda: [16, 32, 64])
    """The ALS grid's ranks; a grid of more than `max_trials` points is sampled down to that many."""
    reg_param: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1])
    """The ALS grid's regularisation values."""
    alpha: list[float] = field(default_factory=lambda: [1.0, 5.0])
    """The ALS grid's confidence scales."""
    ease_l2: list[float] = field(default_factory=lambda: [100.0, 300.0, 1000.0])
    """The EASE grid's ridge penalties."""
    ease_signal: list[str] = field(default_factory=lambda: list(EASE_SIGNALS))
    """The EASE grid's signals (`preference`, `binary`)."""
    blend_weight: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    """ALS's share of a blend's standardised scores, each in (0, 1)."""
    max_trials: int = 6
    """Grid points tried per family (drawn at random with `seed` from a larger grid)."""
    seed: int = 42
    """The seed of that draw."""
    validation_days: str | float = AUTO
    """The validation period's length for a `time` or `auto` split: a number of days, or `auto` (by
    `train.min_test_users`); carved out of the training period like the test period."""
    validation_split: str = "per_user"
    """`per_user`: each user's newest events before the test period (the most evidence); `time` or `auto`:
    a period, as `train.split`."""
    metric: str = "ndcg_at_k"
    """What the best trial maximises: `precision`, `recall`, `ndcg`, `map` or `hit_rate`, `_at_k`."""
    auto: bool = True
    """`train` runs the search itself when no tuned settings exist or they are stale (older than
    `max_age_days`, or the interactions grew by more than `max_growth` since), within `budget_seconds`."""
    budget_seconds: float = 600.0
    """A hard bound on tuning: no trial starts that its estimate says cannot finish inside it (estimated
    from the trials measured so far, before them from the data's size); the best so far wins, and a budget
    with no room for one trial leaves `train` with the configured settings."""
    max_age_days: float = 7.0
    """Tuned settings older than this are stale."""
    max_growth: float = 0.5
    """Tuned settings are stale once the interactions grew by more than this share since."""
    best_params_path: str | None = None
    """Where the best settings go (and `train` looks); null: `<lake.root>/_tuning/best_params.json`."""

    def __post_init__(self) -> None:
        grids = (
            ("rank", int, 1),
            ("reg_param", float, 0),
            ("alpha", float, 1e-12),
            ("ease_l2", float, 1e-12),
            ("blend_weight", float, 1e-12),
        )
        for name, kind, low in grids:
            values = getattr(self, name)
            ok = (
                isinstance(values, list)
                and len(values) > 0
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                and all(v >= low for v in values)
                and (kind is float or all(isinstance(v, int) for v in values))
            )
            _require(ok, f"tune.{name} must be a non-empty list of numbers >= {low:g}, got {values!r}")
            object.__setattr__(self, name, [kind(v) for v in values])
        _require(self.max_trials > 0, "tune.max_trials must be > 0")
        _require(
            self.validation_split in SPLITS,
            f"tune.validation_split must be one of {list(SPLITS)}, got {self.validation_split!r}",
        )
        _require(
            isinstance(self.ease_signal, list)
            and bool(self.ease_signal)
            and set(self.ease_signal) <= set(EASE_SIGNALS),
            f"tune.ease_signal must be a non-empty list drawn from {list(EASE_SIGNALS)}, "
            f"got {self.ease_signal!r}",
        )
        _require(all(w < 1 for w in self.blend_weight), "tune.blend_weight values must be in (0, 1)")
        object.__setattr__(
            self, "validation_days", _auto_or_days(self.validation_days, "tune.validation_days")
        )
        _require(self.budget_seconds > 0, "tune.budget_seconds must be > 0")
        _require(self.max_age_days > 0, "tune.max_age_days must be > 0")
        _require(self.max_growth > 0, "tune.max_growth must be > 0")
        _require_ranking_metric(self.metric, "tune.metric")


# The ranking metrics evaluation computes at each K; tuning and promotion rank models by one.
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


def _require_ranking_metric(metric: str, key: str) -> None:
    names = [m + "_at_k" for m in RANKING_METRICS]
    _require(metric in names, f"{key} must be one of {names}, got {metric!r}")


@dataclass(frozen=True)
class ServeConfig:
    """The lists (`recommend`, `refresh`) and their business rules. A rule is off at 0, null or []; rules
    never leave a user short of N rows while eligible items exist: candidates are over-fetched and the rest
    filled from fallbacks."""

    top_n: int = 10
    """N, rows per user in `recommendations`."""
    exclude_purchased: bool = True
    """Never recommend what the user bought."""
    exclude_rated: bool = True
    """Never recommend what the user rated: a rating says the user has had the item."""
    users_per_block: int = 2048
    """Users scored per NumPy block."""
    max_items_per_block: int = 100_000
    """At most this many item vectors in any one process (the driver, each Python worker) when lists are
    scored or users folded in: a larger catalogue is scored one item block at a time and each user's lists
    merged."""
    trending_days: float = 7.0
    """Users without a personal vector get the items most popular over these last days (`trending`), or
    all-time popular items when that window is too thin; 0: always popular."""
    fallback: str = AUTO
    """What fills lists after popular-in-your-categories: `trending`, `popular`, or `auto` (the one that
    scored better on the validation period when `train` last tuned; trending until then)."""
    similar_items: int = 10
    """Rows per item in the `similar_items` table (cosine of item factors, or the EASE weights); 0: off."""
    exclude_viewed_days: float = 0.0
    """Also never recommend items the user viewed in these last days (before the newest event); 0: off."""
    max_per_category: int = 0
    """At most this many items of one catalog category per list (relaxed only when nothing else is
    eligible); 0: off."""
    min_score: float | None = None
    """Personalised rows scoring below this are replaced by fallback rows; null: off."""
    exclude_items: list[str] = field(default_factory=list)
    """Item ids never recommended to anyone."""
    overfetch: int = 3
    """Candidates per user = N x this, when a rule may discard some, so lists stay N long."""
    min_history: int = 1
    """Users with fewer positive interactions (with items the model knows) are cold-start users: popular
    within the categories they touched, else trending, else popular."""
    new_item_share: float = 0.0
    """Share of each list (its last slots, at least one) given to new items from the user's preferred
    categories (`source = new_item`), so the catalog does not freeze; 0: off."""
    new_item_days: float = 14.0
    """An item is new when first seen (its first event, else the catalog's `updated_at`) within these days
    ..."""
    new_item_max_users: int = 5
    """... and has at most this many users."""
    explain: bool = True
    """Name on each personalised row the interacted item that contributed most (`because_item_id`; for ALS
    the highest preference x cosine similarity of item factors)."""
    deletion_vectors: bool = True
    """Deletion vectors on `recommendations`: a refresh marks a few users' old rows deleted instead of
    rewriting the files they sit in. false for readers without them (delta-rs' `to_pandas`): the feature is
    dropped from an existing table on the next publish, and refreshes rewrite files."""
    rankings_refresh_minutes: float = 60.0
    """How long the refresh job keeps the shop-wide rankings (eligible items, trending or popular, new
    items) before ranking all interactions again; a champion move drops them at once, and the catalog's
    availability is applied to every batch."""
    trigger_seconds: float = 5.0
    """Micro-batch interval of the running refresh job (`refresh` without `--once`); ingest has its own. A
    shorter one than the ingest's finds nothing new between two ingest commits."""
    file_skipping_max_users: int = 64
    """A refresh batch of at most this many users names them in its MERGE, so Delta reads only the
    serving-table files that can hold them (the table is clustered by user); each name costs planning time,
    so larger batches read every file; 0: off."""

    def __post_init__(self) -> None:
        _require(self.top_n > 0, "serve.top_n must be > 0")
        _require(self.file_skipping_max_users >= 0, "serve.file_skipping_max_users must be >= 0 (0: off)")
        _require(self.rankings_refresh_minutes > 0, "serve.rankings_refresh_minutes must be > 0")
        _require(self.trigger_seconds > 0, "serve.trigger_seconds must be > 0")
        _require(
            self.fallback in (AUTO, "trending", "popular"),
            f"serve.fallback must be 'auto', 'trending' or 'popular', got {self.fallback!r}",
        )
        _require(self.users_per_block > 0, "serve.users_per_block must be > 0")
        _require(self.max_items_per_block > 0, "serve.max_items_per_block must be > 0")
        _require(self.exclude_viewed_days >= 0, "serve.exclude_viewed_days must be >= 0")
        _require(self.max_per_category >= 0, "serve.max_per_category must be >= 0 (0: off)")
        _require(
            isinstance(self.exclude_items, list) and all(isinstance(i, str) for i in self.exclude_items),
            f"serve.exclude_items must be a list of item ids (strings), got {self.exclude_items!r}",
        )
        _require(self.overfetch >= 1, "serve.overfetch must be >= 1")
        _require(self.min_history >= 1, "serve.min_history must be >= 1")
        _require(0.0 <= self.new_item_share < 1.0, "serve.new_item_share must be in [0, 1)")
        _require(self.new_item_days > 0, "serve.new_item_days must be > 0")
        _require(self.new_item_max_users >= 0, "serve.new_item_max_users must be >= 0")


# The Great Expectations suites, one per table they check, and one for the catalog's lines
# (recspark.ops.quality defines them).
QUALITY_SUITES = ("events", "interactions", "recommendations", "catalog")
# A malformed catalog line only warns by default: its item is held back either way.
DEFAULT_ON_FAILURE = {"events": "warn", "interactions": "fail", "recommendations": "fail", "catalog": "warn"}


@dataclass(frozen=True)
class QualityConfig:
    """Great Expectations gates: per suite, whether a failed validation stops the job."""

    enabled: bool = True
    """Run the Great Expectations gates."""
    on_failure: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ON_FAILURE))
    """Per suite (`events`, `interactions`, `recommendations`, `catalog`): `fail` stops the job with
    a non-zero exit, `warn` logs and records only; a suite not named keeps its default. `catalog:
    fail` stops `train`, `recommend` and a full refresh on any malformed catalog line."""
    data_docs: bool = True
    """Build Great Expectations Data Docs (HTML) under `<lake.root>/_quality/data_docs`."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.on_failure) - set(QUALITY_SUITES))
        _require(
            not unknown, f"quality.on_failure has unknown suites {unknown}; known: {list(QUALITY_SUITES)}"
        )
        bad = {k: v for k, v in self.on_failure.items() if v not in ("fail", "warn")}
        _require(not bad, f"quality.on_failure values must be 'fail' or 'warn', got {bad}")
        object.__setattr__(self, "on_failure", {**DEFAULT_ON_FAILURE, **self.on_failure})


@dataclass(frozen=True)
class MaintenanceConfig:
    """`recspark maintain`: compaction and VACUUM of the tables."""

    vacuum_retention_hours: float = 168.0
    """VACUUM keeps files this long; below a week (168) Delta's safety check, and this config, refuse:
    streams and time travel need the files."""

    def __post_init__(self) -> None:
        _require(
            self.vacuum_retention_hours >= 168,
            "maintenance.vacuum_retention_hours must be >= 168 (streams and time travel need "
            "the files for at least a week)",
        )


@dataclass(frozen=True)
class ApiConfig:
    """`recspark api`: the lookup service the shop's website calls (no Spark, no JVM)."""

    host: str = "127.0.0.1"
    """The address the service listens on; 0.0.0.0 to be reached from other machines."""
    port: int = 8000
    """The service's TCP port."""
    poll_seconds: float = 1.0
    """How often the service looks for new table versions and a changed catalog file."""
    max_n: int = 100
    """The most items a request may ask for (`?n=`; the default is `serve.top_n`)."""
    max_exclude: int = 100
    """The most items a request may exclude (`?exclude=`, the basket)."""

    def __post_init__(self) -> None:
        _require(bool(self.host), "api.host must not be empty")
        _require(0 < self.port < 65536, f"api.port must be in 1..65535, got {self.port!r}")
        _require(self.poll_seconds > 0, "api.poll_seconds must be > 0")
        _require(self.max_n > 0, "api.max_n must be > 0")
        _require(self.max_exclude >= 0, "api.max_exclude must be >= 0")


@dataclass(frozen=True)
class OutcomesConfig:
    """How ingest attributes shoppers' events to the lists they were shown (recommendation_outcomes)."""

    attribution_window_hours: float = 24.0
    """A view, add-to-cart or purchase carrying a `recommendation_id` counts for that list when it
    happens within this many hours after the list was served (and at most an hour before, for
    clocks that disagree)."""

    def __post_init__(self) -> None:
        _require(self.attribution_window_hours > 0, "outcomes.attribution_window_hours must be > 0")


@dataclass(frozen=True)
class ImpressionsConfig:
    """The lookup service's impression log: batched, off the request path, into the ingest source
    (the landing folder ``ingest.path`` or the topic ``ingest.kafka.topic``)."""

    enabled: bool = True
    """The lookup service logs an impression for every list it serves, into the ingest source
    (`ingest.path` or `ingest.kafka.topic`)."""
    queue_size: int = 10_000
    """Served lists waiting to be written; when full, new ones are dropped and counted (a slow disk
    or broker never slows a request)."""
    batch_size: int = 1_000
    """A batch (one file, or that many messages) is written when it holds this many lists, when its
    oldest is `flush_seconds` old, and on shutdown."""
    flush_seconds: float = 1.0
    """The longest a served list waits in the queue before its batch is written."""
    delivery_timeout_seconds: float = 30.0
    """Kafka: how long the client retries a message before it counts as dropped."""

    def __post_init__(self) -> None:
        _require(self.queue_size > 0, "impressions.queue_size must be > 0")
        _require(self.batch_size > 0, "impressions.batch_size must be > 0")
        _require(self.flush_seconds > 0, "impressions.flush_seconds must be > 0")
        _require(self.delivery_timeout_seconds > 0, "impressions.delivery_timeout_seconds must be > 0")


@dataclass(frozen=True)
class GenerateConfig:
    """The synthetic shop `recspark generate` (and the demo) writes."""

    users: int = 2000
    """Shoppers."""
    items: int = 500
    """Catalog items."""
    categories: int = 20
    """Catalog categories."""
    events: int = 60_000
    """Events in the log."""
    days: int = 30
    """Days the log spans."""
    seed: int = 7
    """Random seed: the same settings write the same shop."""
    bad_fraction: float = 0.002
    """Share of broken lines (the quarantine's work)."""
    duplicate_fraction: float = 0.01
    """Share of events sent again verbatim, as producer retries do (dedup's work)."""


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    interactions: InteractionsConfig = field(default_factory=InteractionsConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ease: EaseConfig = field(default_factory=EaseConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    outcomes: OutcomesConfig = field(default_factory=OutcomesConfig)
    impressions: ImpressionsConfig = field(default_factory=ImpressionsConfig)

    def with_overrides(self, assignments: Iterable[str]) -> Config:
        """A copy with ``key=value`` assignments applied (values parsed as YAML scalars)."""
        raw = dataclasses.asdict(self)
        for assignment in assignments:
            _assign(raw, *_split_assignment(assignment))
        return _build(Config, raw, "")


_Section = TypeVar("_Section", bound="DataclassInstance")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _split_assignment(assignment: str) -> tuple[str, Any]:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    return key.strip(), _parse_scalar(text)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


# Mappings whose keys are user-chosen (Spark settings, suite names, event types), not a fixed
# schema; a key under them may itself contain dots (spark.conf.spark.sql.shuffle.partitions).
_FREE_MAPPINGS = ("spark.conf", "quality.on_failure", "interactions.weights")


def _assign(raw: dict[str, Any], dotted_key: str, value: Any) -> None:
    for prefix in _FREE_MAPPINGS:
        if dotted_key.startswith(prefix + ".") and len(dotted_key) > len(prefix) + 1:
            node = raw
            for part in prefix.split("."):
                node = node[part]
            node[dotted_key[len(prefix) + 1 :]] = value
            return
    node = raw
    parts = dotted_key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r}")
        node = child
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key {dotted_key!r}")
    node[parts[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> list[str]:
    assignments = []
    for name, value in sorted(environ.items()):
        if name.upper().startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            assignments.append(f"{key}={value}")
    return assignments


def _build(cls: type[_Section], raw: Any, where: str) -> _Section:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config section {where or '<root>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r}")
    values = {
        name: _coerce(hints[name], raw[name], f"{where}.{name}" if where else name)
        for name in names
        if name in raw
    }
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, bool):  # YAML reads `true` as a boolean; Spark settings want text
            return str(value).lower()
        if isinstance(value, str | int | float):
            return str(value)
        if isinstance(value, datetime):  # YAML reads an unquoted ISO time as a timestamp
            return value.isoformat()
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def load_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read YAML (or the built-in defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}".splitlines()[0]) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping at the top level")
        raw = loaded or {}
    try:
        base = _build(Config, raw, "")
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(str(exc)) from exc
    env = os.environ if environ is None else environ
    return base.with_overrides([*_env_overrides(env), *overrides])

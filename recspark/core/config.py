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
from typing import Any

import yaml

ENV_PREFIX = "RECSPARK__"
EVENT_TYPES = ("view", "add_to_cart", "remove_from_cart", "purchase", "rating")
# The fields every event must carry (data contract §1).
REQUIRED_FIELDS = ("event_id", "event_time", "user_id", "item_id", "event_type")


class ConfigError(ValueError):
    """A configuration problem an operator can fix; the message is one line."""


AUTO = "auto"


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
    master: str | None = "local[2]"
    app_name: str = "recspark"
    shuffle_partitions: int = 8
    driver_memory: str | None = "4g"
    # Any further Spark settings, passed to the session builder as they are.
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LakeConfig:
    root: str = ".recspark/lake"
    # When set, every table is also registered in the Spark catalog under this database.
    database: str | None = None


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str | None = None
    topic: str | None = None
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    # Spark's failOnDataLoss: stop when offsets the checkpoint expects are gone (retention ran
    # out, the topic was recreated). false: log it and go on from what is there.
    fail_on_data_loss: bool = True


@dataclass(frozen=True)
class IngestConfig:
    source: str = "files"
    path: str = ".recspark/incoming/events"
    trigger_seconds: float = 5.0
    # Files per micro-batch: a backlog (a new checkpoint over a landing history) arrives in
    # batches of this many files instead of one batch of everything; null: no cap.
    max_files_per_trigger: int | None = 1000
    # Spark ignores files whose modification time is this much older than the newest file seen
    # (its default is 7 days, which silently skips a backfill copied with its old mtimes).
    max_file_age_days: float = 36_500.0
    # The event-time watermark: events older than the newest event time seen minus this are
    # flagged late in ingest_metrics, and still stored, deduplicated and counted.
    allowed_lateness_hours: float = 72.0
    # Event times outside [min_event_time, now + max_future_minutes] are broken clocks: quarantined.
    min_event_time: str = "1970-01-01T00:00:00Z"
    max_future_minutes: float = 1440.0
    # Deletion vectors on interactions: a batch's MERGE marks the updated pairs' old rows deleted
    # instead of rewriting every file they sit in. Off for readers without them (delta-rs'
    # to_pandas); turning it off drops the feature from an existing table.
    deletion_vectors: bool = True
    kafka: KafkaConfig = field(default_factory=KafkaConfig)

    def __post_init__(self) -> None:
        _require(self.source in ("files", "kafka"), "ingest.source must be 'files' or 'kafka'")
        _require(self.trigger_seconds > 0, "ingest.trigger_seconds must be > 0")
        _require(
            self.max_files_per_trigger is None or self.max_files_per_trigger > 0,
            "ingest.max_files_per_trigger must be > 0 (or null for no cap)",
        )
        _require(self.max_file_age_days > 0, "ingest.max_file_age_days must be > 0")
        _require(self.allowed_lateness_hours >= 0, "ingest.allowed_lateness_hours must be >= 0")
        _require(self.max_future_minutes >= 0, "ingest.max_future_minutes must be >= 0")
        try:
            earliest = datetime.fromisoformat(self.min_event_time.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"ingest.min_event_time must be an ISO 8601 time, got {self.min_event_time!r}"
            ) from None
        _require(earliest.tzinfo is not None, "ingest.min_event_time needs a time zone, e.g. ...Z")
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
    # A rating contributes weights.rating * (value - rating_center) / (5 - rating_center):
    # with the default centre 0 a 5-star rating counts fully and a 1-star one a fifth.
    rating_center: float = 0.0
    # Exponential time decay of old evidence; None switches decay off.
    half_life_days: float | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(EVENT_TYPES))
        _require(not unknown, f"interactions.weights has unknown event types: {unknown}")
        missing = sorted(set(EVENT_TYPES) - set(self.weights))
        _require(not missing, f"interactions.weights misses event types: {missing}")
        _require(0 <= self.rating_center < 5, "interactions.rating_center must be in [0, 5)")
        _require(
            self.half_life_days is None or self.half_life_days > 0,
            "interactions.half_life_days must be > 0 (or null for no decay)",
        )


@dataclass(frozen=True)
class CatalogConfig:
    # JSON lines, CSV or Parquet (by extension); None means every item counts as available.
    path: str | None = ".recspark/incoming/catalog.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 32
    reg_param: float = 0.03
    alpha: float = 1.0
    max_iter: int = 10
    seed: int = 42
    num_user_blocks: int = 4
    num_item_blocks: int = 4
    # "log" feeds log1p(strength) to ALS, damping heavy repeat viewers; "linear" feeds strength.
    confidence: str = "log"
    # Which families compete (each tuned on the validation period; the best there is the
    # candidate): "als" (MLlib ALS) and "ease" (item-item EASE weights); with both and `blend`, a
    # blend of the two competes too.
    families: list[str] = field(default_factory=lambda: ["als", "ease"])
    blend: bool = True
    # The held-out future: "auto" holds out the shortest newest period with `min_test_users`
    # users (at most `max_test_share` of the events), else each user's newest `test_fraction`;
    # "time" only the former (a number in `test_days` fixes its length); "per_user" only the latter.
    split: str = AUTO
    test_days: str | float = AUTO
    min_test_users: int = 500
    max_test_share: float = 0.25
    test_fraction: float = 0.2
    k: int = 10
    min_train_interactions: int = 100
    checkpoint_interval: int = 5
    # The category baseline recommends popular items from a user's this many favourite categories
    # (by training-period strength), then fills from overall popularity.
    favourite_categories: int = 3
    # Apply the settings `recspark tune` wrote (rank, reg_param, alpha) over the ones above.
    use_tuned: bool = True

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


# The model families `train` can fit; "blend" (ALS + EASE) is formed from the first two.
FAMILIES = ("als", "ease")
SPLITS = (AUTO, "time", "per_user")
EASE_SIGNALS = ("preference", "binary")


@dataclass(frozen=True)
class EaseConfig:
    """The item-item family (EASE): one item x item inverse on the driver, so it is capped."""

    l2: float = 300.0  # the ridge penalty λ
    max_items: int = 10_000  # only the most popular items get item-item weights
    min_item_users: int = 2  # items with fewer users have too little co-occurrence to learn from
    neighbours: int = 500  # weights kept (and served) per item, largest |weight| first
    # What X holds: "preference", the signal ALS sees (log1p(strength) with train.confidence=log),
    # or "binary" (1 for every positive pair).
    signal: str = "preference"

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
    tracking_uri: str = "sqlite:///.recspark/mlflow.db"
    experiment: str = "recspark"
    model_name: str = "recspark-als"
    # Where run artifacts go for a new experiment; None lets the tracking server decide.
    artifact_location: str | None = ".recspark/mlartifacts"
    # The candidate is promoted only if it beats the champion and the popularity baseline on
    # this metric by at least this relative margin.
    promotion_metric: str = "ndcg_at_k"
    promotion_margin: float = 0.0
    # The candidate must beat each reference by the margin in at least this share of bootstrap
    # resamples of the test users (0.5: more likely than not; 0.95: a confident lead).
    promotion_confidence: float = 0.5
    # Fewer test users than this (or a NaN metric) is insufficient evidence: nothing is promoted.
    min_test_users: int = 50
    # The baselines a candidate must beat (by the margin) as well as the champion; add
    # "category_popular" to also demand a lead over most-popular-in-favourite-categories.
    promotion_baselines: list[str] = field(default_factory=lambda: ["popular"])

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

    # The grid; when it has more than max_trials points, max_trials of them are drawn at random.
    rank: list[int] = field(default_factory=lambda: [16, 32, 64])
    reg_param: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1])
    alpha: list[float] = field(default_factory=lambda: [1.0, 5.0])
    ease_l2: list[float] = field(default_factory=lambda: [100.0, 300.0, 1000.0])
    ease_signal: list[str] = field(default_factory=lambda: list(EASE_SIGNALS))
    # ALS's share of a blend's standardised scores.
    blend_weight: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    max_trials: int = 6
    seed: int = 42
    # The validation period, carved out of the training period like the test period ("auto":
    # by train.min_test_users; or a number of days).
    validation_days: str | float = AUTO
    # per_user: each user's newest events before the test period (the most evidence); time or
    # auto: a period, as train.split (validation_days long, or auto).
    validation_split: str = "per_user"
    metric: str = "ndcg_at_k"
    # `train` runs the search itself when no tuned settings exist or they are stale (older than
    # max_age_days, or the interactions grew by more than max_growth since), within budget_seconds.
    auto: bool = True
    budget_seconds: float = 600.0
    max_age_days: float = 7.0
    max_growth: float = 0.5
    # Where the best settings go (and `train` looks); None: <lake.root>/_tuning/best_params.json.
    best_params_path: str | None = None

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
    top_n: int = 10
    exclude_purchased: bool = True
    # A rating says the user has had the item: recommending it again wastes a slot.
    exclude_rated: bool = True
    users_per_block: int = 2048
    # At most this many item vectors in any one process (the driver, each Python worker) when
    # lists are scored or users folded in: a larger catalogue is scored one item block at a time.
    max_items_per_block: int = 100_000
    # Users without a personal vector get the items most popular over this many recent days
    # ("trending"), or all-time popular items when that window is too thin; 0: always popular.
    trending_days: float = 7.0
    # What fills lists after popular-in-your-categories: "trending", "popular", or "auto" (the one
    # that scored better on the validation period when `train` last tuned; trending until then).
    fallback: str = AUTO
    # Rows per item in the similar_items table (cosine over item factors); 0 switches it off.
    similar_items: int = 10
    # Business rules (0 / null / [] = off). Rules never leave a user short of N rows while
    # eligible items exist: candidates are over-fetched and the rest filled from fallbacks.
    exclude_viewed_days: float = 0.0  # also exclude items the user viewed in these last days
    max_per_category: int = 0  # at most this many items of one catalog category per list
    min_score: float | None = None  # personalised rows scoring below are replaced by fallbacks
    exclude_items: list[str] = field(default_factory=list)  # never recommended to anyone
    overfetch: int = 3  # candidates per user = N x this, when a rule may discard some
    # Users with fewer positive interactions (with items the model knows) are cold-start users:
    # popular within the categories they touched, else trending, else popular.
    min_history: int = 1
    # Share of each list given to new items (few interactions, first seen recently) from the
    # user's preferred categories, so the catalog does not freeze; 0: off.
    new_item_share: float = 0.0
    new_item_days: float = 14.0
    new_item_max_users: int = 5
    # Name on each personalised row the interacted item that contributed most (because_item_id).
    explain: bool = True
    # Deletion vectors on the serving table: a refresh marks a few users' old rows deleted
    # instead of rewriting the files they sit in. Off for shops whose readers cannot read them
    # (e.g. delta-rs' to_pandas); turning it off drops the feature from an existing table.
    deletion_vectors: bool = True
    # The refresh job ranks the shop's items (eligible, trending or popular, new items) over all
    # interactions once per this many minutes, not in every batch; availability in the catalog
    # is still applied to every batch.
    rankings_refresh_minutes: float = 60.0
    # The running refresh job's micro-batch interval (without --once); ingest has its own.
    trigger_seconds: float = 5.0
    # A refresh batch of at most this many users names them in its MERGE, so Delta reads only the
    # serving-table files that can hold them (the table is clustered by user); 0: off. Each name
    # costs planning time, so large batches read every file instead.
    file_skipping_max_users: int = 64

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


# The Great Expectations suites, one per table they check (recspark.ops.quality defines them).
QUALITY_SUITES = ("events", "interactions", "recommendations")


@dataclass(frozen=True)
class QualityConfig:
    """Great Expectations gates: per suite, whether a failed validation stops the job."""

    enabled: bool = True
    # suite name -> "fail" (stop the job, non-zero exit) or "warn" (log and record only)
    on_failure: dict[str, str] = field(
        default_factory=lambda: {
            "events": "warn",
            "interactions": "fail",
            "recommendations": "fail",
        }
    )
    # Build Great Expectations Data Docs (HTML) under <lake.root>/_quality/data_docs.
    data_docs: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.on_failure) - set(QUALITY_SUITES))
        _require(
            not unknown, f"quality.on_failure has unknown suites {unknown}; known: {list(QUALITY_SUITES)}"
        )
        bad = {k: v for k, v in self.on_failure.items() if v not in ("fail", "warn")}
        _require(not bad, f"quality.on_failure values must be 'fail' or 'warn', got {bad}")


@dataclass(frozen=True)
class MaintenanceConfig:
    # VACUUM keeps files this long; below a week Delta's safety check (and ours) refuses.
    vacuum_retention_hours: float = 168.0

    def __post_init__(self) -> None:
        _require(
            self.vacuum_retention_hours >= 168,
            "maintenance.vacuum_retention_hours must be >= 168 (streams and time travel need "
            "the files for at least a week)",
        )


@dataclass(frozen=True)
class GenerateConfig:
    users: int = 2000
    items: int = 500
    categories: int = 20
    events: int = 60_000
    days: int = 30
    seed: int = 7
    bad_fraction: float = 0.002
    duplicate_fraction: float = 0.01


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
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def with_overrides(self, assignments: Iterable[str]) -> Config:
        """A copy with ``key=value`` assignments applied (values parsed as YAML scalars)."""
        raw = dataclasses.asdict(self)
        for assignment in assignments:
            _assign(raw, *_split_assignment(assignment))
        return _build(Config, raw, "")


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


def _build(cls: type, raw: Any, where: str) -> Any:
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
    if dataclasses.is_dataclass(hint):
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

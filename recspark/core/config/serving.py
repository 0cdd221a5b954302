"""What the lists hold and who reads them: the lists' business rules (``serve.*``), the catalog
that says which items are eligible (``catalog.*``), and the lookup service with its impression log
(``api.*``, ``impressions.*``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from recspark.core.config.checks import AUTO, require


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
        require(self.top_n > 0, "serve.top_n must be > 0")
        require(self.file_skipping_max_users >= 0, "serve.file_skipping_max_users must be >= 0 (0: off)")
        require(self.rankings_refresh_minutes > 0, "serve.rankings_refresh_minutes must be > 0")
        require(self.trigger_seconds > 0, "serve.trigger_seconds must be > 0")
        require(
            self.fallback in (AUTO, "trending", "popular"),
            f"serve.fallback must be 'auto', 'trending' or 'popular', got {self.fallback!r}",
        )
        require(self.users_per_block > 0, "serve.users_per_block must be > 0")
        require(self.max_items_per_block > 0, "serve.max_items_per_block must be > 0")
        require(self.exclude_viewed_days >= 0, "serve.exclude_viewed_days must be >= 0")
        require(self.max_per_category >= 0, "serve.max_per_category must be >= 0 (0: off)")
        require(
            isinstance(self.exclude_items, list) and all(isinstance(i, str) for i in self.exclude_items),
            f"serve.exclude_items must be a list of item ids (strings), got {self.exclude_items!r}",
        )
        require(self.overfetch >= 1, "serve.overfetch must be >= 1")
        require(self.min_history >= 1, "serve.min_history must be >= 1")
        require(0.0 <= self.new_item_share < 1.0, "serve.new_item_share must be in [0, 1)")
        require(self.new_item_days > 0, "serve.new_item_days must be > 0")
        require(self.new_item_max_users >= 0, "serve.new_item_max_users must be >= 0")


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
        require(
            self.unlisted_items in UNLISTED_ITEMS,
            f"catalog.unlisted_items must be 'exclude' or 'include', got {self.unlisted_items!r}",
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
        require(bool(self.host), "api.host must not be empty")
        require(0 < self.port < 65536, f"api.port must be in 1..65535, got {self.port!r}")
        require(self.poll_seconds > 0, "api.poll_seconds must be > 0")
        require(self.max_n > 0, "api.max_n must be > 0")
        require(self.max_exclude >= 0, "api.max_exclude must be >= 0")


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
        require(self.queue_size > 0, "impressions.queue_size must be > 0")
        require(self.batch_size > 0, "impressions.batch_size must be > 0")
        require(self.flush_seconds > 0, "impressions.flush_seconds must be > 0")
        require(self.delivery_timeout_seconds > 0, "impressions.delivery_timeout_seconds must be > 0")

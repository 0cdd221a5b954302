"""The lookup service's state: the followed tables and catalog, and the lists requests get.

One background thread polls the tables and the catalog every ``api.poll_seconds`` and swaps in
what changed; request handlers only read the references they find, so they never wait for it.
Every list answered is offered to the impression sink (a bounded queue; a full queue drops and
counts, never waits); an answer that cannot be an impression (no user named, no items) is
counted as not logged, with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from recspark.api.arrow_columns import arrow_table, chunked_tables
from recspark.api.catalog import CatalogContents, CatalogView
from recspark.api.changes import apply_changes
from recspark.api.fallback_list import FallbackList
from recspark.api.follower import CatalogFollower, TableFollower, TableForm
from recspark.api.impressions import ImpressionSink, NoSink
from recspark.api.list_blocks import build_in_chunks
from recspark.api.lists import (
    FALLBACK,
    NO_CATEGORY,
    SIMILAR_LIST,
    USER_LIST,
    Filters,
    ListAnswer,
    Shelf,
    assemble,
)
from recspark.api.metrics import ServiceMetrics
from recspark.api.rows import rows_of_table
from recspark.api.serving_lists import ServingLists
from recspark.api.vocabulary import NULL, Vocabularies
from recspark.core import table_names
from recspark.core.config import Config
from recspark.core.config.serving import INCLUDE_UNLISTED

log = logging.getLogger("recspark.api")

RECOMMENDATION_COLUMNS = (
    "user_id",
    "rank",
    "item_id",
    "score",
    "source",
    "model_version",
    "generated_at",
    "because_item_id",
    "variant",
)
SIMILAR_COLUMNS = ("item_id", "rank", "similar_item_id", "score", "model_version", "generated_at")
FALLBACK_COLUMNS = ("item_id", "category", "rank", "score", "source", "model_version", "generated_at")
# The overlay of lists changed since the last full build is folded into a new base once it holds
# this many keys, or this share of the base's keys if more: memory per changed key stays bounded
# and the fold's cost (every row) is paid once per that many changes.
COMPACT_MIN_KEYS = 20_000
# A full read converts this many rows at a time: what the read holds in Arrow form at once.
CHUNK_ROWS = 1_000_000
COMPACT_SHARE = 0.05


def _present(wanted: Iterable[str]) -> Any:
    wanted = tuple(wanted)
    return lambda columns: [c for c in wanted if c in columns]


def _compact(lists: ServingLists) -> ServingLists:
    if len(lists.overlay) >= max(COMPACT_MIN_KEYS, COMPACT_SHARE * lists.base.keys):
        return lists.compacted()
    return lists


def recommendations_form(vocab: Vocabularies) -> TableForm[ServingLists]:
    def build(batches: pa.RecordBatchReader) -> ServingLists:
        chunks = (
            rows_of_table(table, vocab, "user_id", "item_id", "because_item_id", "source")
            for table in chunked_tables(batches, CHUNK_ROWS)
        )
        return ServingLists.of(build_in_chunks(chunks))

    return TableForm(
        columns=_present(RECOMMENDATION_COLUMNS),
        build=build,
        apply=lambda lists, changes: apply_changes(lists, changes, vocab),
        size=lambda lists: (lists.keys, lists.rows, lists.nbytes),
        tidy=_compact,
    )


def similar_form(vocab: Vocabularies) -> TableForm[ServingLists]:
    def build(batches: pa.RecordBatchReader) -> ServingLists:
        chunks = (
            rows_of_table(table, vocab, "item_id", "similar_item_id", None, None)
            for table in chunked_tables(batches, CHUNK_ROWS)
        )
        return ServingLists.of(build_in_chunks(chunks))

    return TableForm(
        columns=_present(SIMILAR_COLUMNS),
        build=build,
        size=lambda lists: (lists.keys, lists.rows, lists.nbytes),
    )


def fallback_form(vocab: Vocabularies) -> TableForm[FallbackList]:
    return TableForm(
        columns=_present(FALLBACK_COLUMNS),
        build=lambda batches: FallbackList.of_table(arrow_table(batches.read_all()), vocab),
        size=lambda fallback: (len(fallback.by_category), fallback.rows, fallback.nbytes),
    )


class LookupService:
    """The followed tables and catalog of one lake, and the lists they give."""

    def __init__(self, config: Config, sink: ImpressionSink | NoSink | None = None) -> None:
        self.config = config
        self.metrics = ServiceMetrics()
        self.vocab = Vocabularies()
        self.fill_source = self.vocab.labels.code(FALLBACK)
        self.sink: ImpressionSink | NoSink = sink or NoSink()
        self.metrics.follow_impressions(self.sink.counters)
        # Items the catalog does not list are served only when catalog.unlisted_items says so.
        self.unlisted_available = config.catalog.unlisted_items == INCLUDE_UNLISTED
        root = table_names.lake_root(config.lake.root)

        def follower(name: str, form: TableForm) -> TableFollower:
            found = TableFollower(name, table_names.table_path(root, name), form, self.metrics)
            self.metrics.follow_commit_age(name, lambda: found.health.latest_commit_at)
            return found

        self.recommendations: TableFollower[ServingLists] = follower(
            table_names.RECOMMENDATIONS, recommendations_form(self.vocab)
        )
        self.similar: TableFollower[ServingLists] = follower(
            table_names.SIMILAR_ITEMS, similar_form(self.vocab)
        )
        self.fallback: TableFollower[FallbackList] = follower(
            table_names.FALLBACK_ITEMS, fallback_form(self.vocab)
        )
        self.catalog_view = CatalogView.everything()
        self.catalog = CatalogFollower(config.catalog.path, self._catalog_read)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _catalog_read(self, contents: CatalogContents) -> None:
        self.catalog_view = CatalogView.of(
            contents, self.vocab.items, self.vocab.categories, self.unlisted_available
        )

    @property
    def followers(self) -> tuple[TableFollower, ...]:
        return (self.recommendations, self.similar, self.fallback)

    def poll(self) -> None:
        """Bring the catalog and every table up to date once."""
        self.catalog.poll()
        for follower in (self.fallback, self.similar, self.recommendations):
            follower.poll()

    def start(self) -> None:
        """Poll in a background thread every ``api.poll_seconds``, starting now."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="recspark-api-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following the tables, then write the impressions still queued (within
        ``timeout``; the rest is counted as dropped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sink.close(timeout)

    def _log_impression(self, answer: ListAnswer, user_id: str | None) -> None:
        if user_id is None:
            self.metrics.impressions_not_logged.labels("no user_id").inc()
            return
        impression = answer.impression(user_id)
        if impression is None:
            self.metrics.impressions_not_logged.labels("no items").inc()
            return
        self.sink.offer(impression)

    def _follow(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.config.api.poll_seconds)

    def filters(self, n: int, exclude: Iterable[str], category: str | None) -> Filters:
        """A request's filters as codes (ids the service has never seen match nothing)."""
        codes = self.vocab.items.codes
        return Filters(
            n=n,
            exclude=frozenset(code for code in (codes.get(item) for item in exclude) if code is not None),
            category=None if category is None else self.vocab.categories.codes.get(category, NO_CATEGORY),
        )

    def _shelf(self) -> Shelf:
        return Shelf(self.vocab, self.catalog_view, self.fallback.state, self.fill_source)

    def user_list(self, user_id: str, filters: Filters) -> ListAnswer | None:
        """The user's served list (its impression offered to the sink); None while
        ``recommendations`` has never been loaded."""
        lists = self.recommendations.state
        if lists is None:
            return None
        served = assemble(self._shelf(), USER_LIST, user_id, lists.find(user_id), filters, lists.has_variant)
        self._log_impression(served, user_id)
        return served

    def similar_list(self, item_id: str, filters: Filters, user_id: str | None = None) -> ListAnswer | None:
        """Items like ``item_id``, filled (or, for an item without similar items, replaced) from
        the fallback list of its category (the catalog's), else the shop's; its impression is
        offered for ``user_id``, the shopper it is shown to (none without one). None while
        neither table was ever loaded."""
        similar, shelf = self.similar.state, self._shelf()
        if similar is None and shelf.fallback is None:
            return None
        hit = similar.find(item_id) if similar is not None else None
        code = self.vocab.items.codes.get(item_id, NULL)
        own = shelf.catalog.category_of(code) if code != NULL else NULL
        served = assemble(
            shelf,
            SIMILAR_LIST,
            item_id,
            hit,
            filters,
            False,
            also_exclude=code,
            fill_category=None if own == NULL else own,
        )
        self._log_impression(served, user_id)
        return served

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 while ``recommendations`` has never been loaded."""
        now = time.time()
        tables = {f.name: f.health.as_json(now) for f in self.followers}
        catalog = self.catalog.health.as_json(now)
        loaded = self.recommendations.health.loaded_version is not None
        troubled = any(t["problem"] for t in tables.values()) or catalog["problem"] is not None
        status = "unavailable" if not loaded else "degraded" if troubled else "ok"
        body = {"status": status, "tables": tables, "catalog": catalog, "impressions": self.sink.counters()}
        return (200 if loaded else 503), body

"""Following one Delta table (or the catalog file) as new versions are committed.

A follower holds the newest version it could read, built into its in-memory form. On each poll
it looks at the table's log: commits whose rows the Change Data Feed describes (a refresh MERGE,
forget-user's DELETE, appends; OPTIMIZE and REORG change no rows) are applied to what it holds;
anything else (a full publish's overwrite, a schema change, a RESTORE, a table without the change
feed) is read in full, off to the side, and swapped in at once. A table that is missing or a
commit that cannot be read leaves the last good version in place, with the error reported.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pyarrow as pa
from deltalake import DeltaTable

from recspark.api.arrow_columns import arrow_table
from recspark.api.catalog import CatalogContents, CatalogReadError, file_signature, read_catalog_file
from recspark.api.metrics import ServiceMetrics
from recspark.core.lake_reader import TABLE, column_names, open_table, stream
from recspark.core.text import first_line

log = logging.getLogger("recspark.api")

State = TypeVar("State")

FULL, INCREMENTAL = "full", "incremental"
CHANGE_DATA_FEED = "delta.enableChangeDataFeed"
# Commits whose change feed says all they changed (row-level changes, appends), and commits that
# change no rows (files rewritten or removed as they were, the log checkpointed): nothing to read.
_ROW_CHANGES = {"MERGE", "DELETE", "UPDATE"}
_APPENDS = {"WRITE", "STREAMING UPDATE"}
_NO_ROW_CHANGES = {"OPTIMIZE", "REORG", "VACUUM START", "VACUUM END"}


def changes_rows(commit: dict[str, Any]) -> bool | None:
    """Whether a commit (a delta-rs history entry) changed rows its change feed describes (True),
    changed none (False), or changed the table in a way only a full read follows (None)."""
    operation = str(commit.get("operation", ""))
    if operation in _NO_ROW_CHANGES:
        return False
    if operation in _ROW_CHANGES:
        return True
    mode = str((commit.get("operationParameters") or {}).get("mode", "")).lower()
    return True if operation in _APPENDS and mode == "append" else None


def _runs(versions: list[int]) -> list[tuple[int, int]]:
    """Consecutive versions as (first, last) ranges."""
    runs: list[tuple[int, int]] = []
    for version in sorted(versions):
        if runs and runs[-1][1] == version - 1:
            runs[-1] = (runs[-1][0], version)
        else:
            runs.append((version, version))
    return runs


@dataclass
class Reload:
    """How the last attempt to bring a table up to date went."""

    kind: str  # full | incremental
    ok: bool
    at: float  # epoch seconds
    seconds: float
    version: int | None
    error: str | None = None


@dataclass
class TableHealth:
    """What /health says of a table."""

    name: str
    path: str
    loaded_version: int | None = None
    latest_version: int | None = None
    latest_commit_at: float | None = None  # epoch seconds of the newest commit seen
    loaded_commit_at: float | None = None
    keys: int = 0
    rows: int = 0
    bytes: int = 0  # of the arrays holding it (ids and lists; not the shared vocabularies)
    problem: str | None = None  # why the newest version is not what is served (None: it is)
    last_reload: Reload | None = None
    reloads: dict[str, int] = field(default_factory=lambda: {FULL: 0, INCREMENTAL: 0})

    def as_json(self, now: float) -> dict[str, Any]:
        def age(at: float | None) -> float | None:
            return None if at is None else round(now - at, 3)

        last = self.last_reload
        return {
            "path": self.path,
            "loaded": self.loaded_version is not None,
            "loaded_version": self.loaded_version,
            "latest_version": self.latest_version,
            "newest_commit_age_seconds": age(self.latest_commit_at),
            "loaded_commit_age_seconds": age(self.loaded_commit_at),
            "keys": self.keys,
            "rows": self.rows,
            "bytes": self.bytes,
            "problem": self.problem,
            "reloads": dict(self.reloads),
            "last_reload": None
            if last is None
            else {
                "kind": last.kind,
                "status": "ok" if last.ok else "error",
                "version": last.version,
                "seconds": round(last.seconds, 4),
                "age_seconds": age(last.at),
                "error": last.error,
            },
        }


@dataclass(frozen=True)
class TableForm(Generic[State]):
    """How one table becomes its in-memory form: the columns to read (given the table's
    columns), a full build from them, and, for tables followed through their change feed, how a
    state takes change rows (returning the new state and how many keys changed)."""

    columns: Callable[[list[str]], list[str]]
    build: Callable[[pa.RecordBatchReader], State]
    apply: Callable[[State, pa.Table], tuple[State, int]] | None = None
    size: Callable[[State], tuple[int, int, int]] = lambda state: (0, 0, 0)  # (keys, rows, bytes)
    tidy: Callable[[State], State] = lambda state: state  # e.g. fold changes into the base


class TableFollower(Generic[State]):
    """Keeps the newest readable version of one Delta table in memory (``state``)."""

    def __init__(self, name: str, path: str, form: TableForm[State], metrics: ServiceMetrics) -> None:
        self.name = name
        self.path = path
        self.form = form
        self.metrics = metrics
        self.state: State | None = None
        self.health = TableHealth(name, path)
        self._table: DeltaTable | None = None

    def poll(self) -> None:
        """Bring ``state`` to the table's newest version if it moved; never raises."""
        started = time.perf_counter()
        try:
            latest = self._latest_version()
        except Exception as exc:
            self._table = None  # open the log afresh next time
            self.health.problem = f"cannot read the table's log: {first_line(exc)}"
            log.warning("api: %s: %s", self.name, self.health.problem)
            return
        if latest is None:
            self.health.problem = "table not found (not published yet?)"
            return
        if latest == self.health.loaded_version:
            self.health.problem = None
            return
        versions = self._commits_to_follow(latest)
        kind = FULL if versions is None else INCREMENTAL
        try:
            if versions is not None:
                try:
                    keys_changed = self._apply(versions)
                except Exception as exc:  # e.g. change files vacuumed: read the table instead
                    log.warning("api: %s: change feed not applied (%s): reading it in full", self.name, exc)
                    kind = FULL
            if kind == FULL:
                keys_changed = self._load(latest)
        except Exception as exc:
            error = first_line(exc)
            self._record(Reload(kind, False, time.time(), time.perf_counter() - started, latest, error))
            self.health.problem = f"version {latest} not loaded: {first_line(exc)}"
            log.warning("api: %s: %s", self.name, self.health.problem, exc_info=True)
            return
        seconds = time.perf_counter() - started
        assert self.state is not None
        self.health.keys, self.health.rows, self.health.bytes = self.form.size(self.state)
        self._record(Reload(kind, True, time.time(), seconds, latest))
        self.health.loaded_version = latest
        self.health.loaded_commit_at = self.health.latest_commit_at
        self.health.problem = None
        self.metrics.table_loaded(self.name, latest, self.health.rows)
        log.info(
            "api: %s version %d loaded (%s%s) in %.2fs: %d keys, %d rows",
            self.name,
            latest,
            kind,
            f", {keys_changed} keys changed" if kind == INCREMENTAL else "",
            seconds,
            self.health.keys,
            self.health.rows,
        )

    def _latest_version(self) -> int | None:
        if self._table is None:
            self._table = open_table(self.path)
            if self._table is None:
                return None
        elif not DeltaTable.is_deltatable(self.path):  # removed: an open table sees no change
            self._table = None
            return None
        else:
            self._table.update_incremental()
        latest = self._table.version()
        if latest != self.health.latest_version:
            newest = self._table.history(1)
            self.health.latest_commit_at = newest[0]["timestamp"] / 1000 if newest else None
            self.health.latest_version = latest
        return latest

    def _commits_to_follow(self, latest: int) -> list[int] | None:
        """The versions after the loaded one whose change feed must be applied (none when they
        changed no rows), or None when a full read is needed instead."""
        loaded = self.health.loaded_version
        if self.form.apply is None or self.state is None or loaded is None or latest <= loaded:
            return None
        assert self._table is not None
        if self._table.metadata().configuration.get(CHANGE_DATA_FEED) != "true":
            return None
        commits = [c for c in self._table.history(latest - loaded) if c.get("version", -1) > loaded]
        kinds = {int(c["version"]): changes_rows(c) for c in commits}
        if len(kinds) != latest - loaded or None in kinds.values():
            return None
        return [version for version, changed in kinds.items() if changed]

    def _columns(self) -> list[str]:
        assert self._table is not None
        return self.form.columns(column_names(self._table))

    def _load(self, version: int) -> int:
        assert self._table is not None
        columns = ", ".join(f'"{c}"' for c in self._columns())
        batches = pa.RecordBatchReader.from_stream(stream(self._table, f"SELECT {columns} FROM {TABLE}"))
        self.state = self.form.tidy(self.form.build(batches))
        settle_memory()
        return 0

    def _apply(self, versions: list[int]) -> int:
        """Apply the change feed of ``versions`` (read in runs of consecutive versions)."""
        assert self._table is not None and self.form.apply is not None and self.state is not None
        columns = [*self._columns(), "_change_type", "_commit_version"]
        state, keys_changed = self.state, 0
        for first, last in _runs(versions):
            feed = self._table.load_cdf(starting_version=first, ending_version=last, columns=columns)
            state, changed = self.form.apply(state, arrow_table(feed.read_all()))
            keys_changed += changed
        self.state = self.form.tidy(state)
        if self.state is not state:  # folded into a new base: as after a full build
            settle_memory()
        return keys_changed

    def _record(self, reload: Reload) -> None:
        self.health.last_reload = reload
        if reload.ok:
            self.health.reloads[reload.kind] += 1
        self.metrics.reloaded(self.name, reload.kind, reload.ok, reload.seconds)


@dataclass
class CatalogHealth:
    """What /health says of the catalog file."""

    path: str | None
    loaded: bool = False
    loaded_at: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)  # of the catalog read last
    problem: str | None = None

    def read(self, contents: CatalogContents) -> None:
        self.loaded, self.loaded_at, self.problem = True, time.time(), None
        self.figures = {
            "lines": contents.lines,
            "malformed_lines": contents.malformed_lines,
            "reasons": dict(contents.reasons),
            "items": len(contents.latest.keys() | contents.held_back),
            "held_back_items": len(contents.held_back),
        }

    def as_json(self, now: float) -> dict[str, Any]:
        empty = dict.fromkeys(("lines", "malformed_lines", "reasons", "items", "held_back_items"))
        return {
            "path": self.path,
            "loaded": self.loaded or self.path is None,
            "age_seconds": None if self.loaded_at is None else round(now - self.loaded_at, 3),
            **(self.figures or empty),
            "problem": self.problem,
        }


class CatalogFollower:
    """Reads the catalog file again whenever it changes (another file renamed over it, a new
    size or modification time); a file that cannot be read keeps the last good catalog."""

    def __init__(self, path: str | None, on_read: Callable[[CatalogContents], None]) -> None:
        self.path = path
        self.on_read = on_read
        self.health = CatalogHealth(path)
        self._signature: tuple[int, int, int] | None = None

    def poll(self) -> None:
        if self.path is None:
            return
        signature = file_signature(self.path)
        if signature is None:
            self.health.problem = f"catalog not found at {self.path}"
            self._signature = None
            return
        if signature == self._signature:
            return
        try:
            contents = read_catalog_file(self.path)
        except (CatalogReadError, OSError) as exc:
            self.health.problem = first_line(exc)
            log.warning("api: catalog: %s", self.health.problem)
            self._signature = signature
            return
        self.on_read(contents)
        self._signature = signature
        self.health.read(contents)
        log.info(
            "api: catalog read: %d lines, %d malformed, %d items held back",
            contents.lines,
            contents.malformed_lines,
            len(contents.held_back),
        )


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def settle_memory() -> None:
    """After a large build: collect its garbage, then leave every object that survived out of
    later collections (a full collection of them paused requests for tens of milliseconds),
    and hand the heap it freed back to the system (glibc keeps a thread's freed heap otherwise)."""
    gc.collect()
    gc.freeze()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)

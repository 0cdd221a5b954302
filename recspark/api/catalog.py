"""The catalog as the lookup service reads it (contract §2): which items may be served now, and
each item's category. JSON lines, CSV (with a header) or Parquet, chosen by extension.

The rules are the Spark reader's (``core/catalog.py``): ``available`` is true/false in the
contract's words (``TRUE_WORDS`` / ``FALSE_WORDS``), missing or empty means available, and the
newest line of an item (by ``updated_at``, undated last) decides. A line that cannot be read whole
(broken JSON, a CSV row of the wrong width, a value that is not what its column holds) holds its
item back: the item is unavailable, whatever its other lines say, and the line is counted with its
reason. A line whose item id cannot be read holds nothing back and is counted too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recspark.api.vocabulary import NULL, Vocabulary
from recspark.core.contract import FALSE_WORDS, TRUE_WORDS

# The item id of a JSON line too broken to parse, when its text still shows one.
_ITEM_ID_IN_TEXT = re.compile(r'"item_id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)')


class CatalogReadError(ValueError):
    """The catalog file cannot be read at all (missing, no item_id column, not Parquet)."""


@dataclass(frozen=True)
class CatalogLine:
    """One readable catalog line: the item, whether it says available, its category and time."""

    item_id: str
    available: bool
    category: str | None
    updated_at: datetime | None


@dataclass
class CatalogContents:
    """What a catalog file holds: each item's newest line, the items held back by a malformed
    line, and the malformed lines counted by reason."""

    latest: dict[str, CatalogLine] = field(default_factory=dict)
    held_back: set[str] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)
    lines: int = 0

    @property
    def malformed_lines(self) -> int:
        return sum(self.reasons.values())

    def add(self, line: CatalogLine) -> None:
        current = self.latest.get(line.item_id)
        if current is None or _newer(line, current):
            self.latest[line.item_id] = line

    def reject(self, item_id: str | None, reason: str) -> None:
        self.reasons[reason] += 1
        if item_id:
            self.held_back.add(item_id)

    def available(self, item_id: str) -> bool:
        line = self.latest.get(item_id)
        return line is not None and line.available and item_id not in self.held_back


def _newer(line: CatalogLine, than: CatalogLine) -> bool:
    """Newest ``updated_at`` first, undated last (as the Spark reader orders them)."""
    if line.updated_at is None:
        return False
    return than.updated_at is None or _utc(line.updated_at) > _utc(than.updated_at)


def _utc(moment: datetime) -> float:
    """Epoch seconds; a time without a zone is UTC (Spark's session time zone)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)).timestamp()


class _Malformed(ValueError):
    """A field breaks its column's rule; the message is the reason."""


def _text(value: Any, name: str) -> str | None:
    """A field as trimmed text (None when absent or empty); a list or object is malformed."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        raise _Malformed(f"{name} is not a single value")
    text = text.strip()
    return text or None


def _line(fields: dict[str, Any], item_id: str) -> CatalogLine:
    """The readable line of ``item_id`` from its raw fields, or _Malformed with the reason."""
    available = fields.get("available")
    if not isinstance(available, bool):
        word = _text(available, "available")
        if word is None or word.lower() in TRUE_WORDS:
            available = True
        elif word.lower() in FALSE_WORDS:
            available = False
        else:
            raise _Malformed("available is not true/false")
    price = fields.get("price")
    if not (isinstance(price, int | float) and not isinstance(price, bool)):
        text = _text(price, "price")
        if text is not None:
            try:
                float(text)
            except ValueError:
                raise _Malformed("price is not a number") from None
    updated = _text(fields.get("updated_at"), "updated_at")
    try:
        updated_at = datetime.fromisoformat(updated) if updated is not None else None
    except ValueError:
        raise _Malformed("updated_at is not a timestamp") from None
    category = _text(fields.get("category"), "category")
    _text(fields.get("title"), "title")
    return CatalogLine(item_id, available, category, updated_at)


def _item_id(value: Any) -> str:
    if value is None:
        raise _Malformed("missing item_id")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Malformed("item_id is not a string")
    text = str(value)
    if not text.strip():
        raise _Malformed("empty item_id")
    return text


def _read_record(contents: CatalogContents, fields: dict[str, Any]) -> None:
    item_id = None
    try:
        item_id = _item_id(fields.get("item_id"))
        contents.add(_line(fields, item_id))
    except _Malformed as problem:
        contents.reject(item_id, str(problem))


def _item_id_in_text(raw: str) -> str | None:
    found = _ITEM_ID_IN_TEXT.search(raw)
    try:
        return str(json.loads(found.group(1))) if found else None
    except ValueError:
        return None


def _json_lines(text: str, contents: CatalogContents) -> None:
    for raw in text.splitlines():
        if not raw.strip():
            continue
        contents.lines += 1
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            contents.reject(_item_id_in_text(raw), "malformed JSON")
            continue
        _read_record(contents, record)


def _csv_rows(text: str, contents: CatalogContents, path: str) -> None:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header or "item_id" not in [h.strip() for h in header]:
        raise CatalogReadError(f"catalog at {path} has no item_id column")
    names = [h.strip() for h in header]
    at = names.index("item_id")
    for row in rows:
        if not row:
            continue
        contents.lines += 1
        if len(row) != len(names):
            item_id = row[at] if at < len(row) and row[at].strip() else None
            contents.reject(item_id, "wrong number of fields")
            continue
        # An empty CSV field is a missing value (as Spark's CSV reader reads it).
        _read_record(contents, {name: value or None for name, value in zip(names, row, strict=True)})


def _parquet_rows(path: str, contents: CatalogContents) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's errors name the file and what is wrong with it
        raise CatalogReadError(f"cannot read catalog at {path}: {str(exc).splitlines()[0]}") from exc
    if "item_id" not in table.column_names:
        raise CatalogReadError(f"catalog at {path} has no item_id column")
    for record in table.to_pylist():
        contents.lines += 1
        _read_record(contents, record)


def read_catalog_file(path: str) -> CatalogContents:
    """Every line of the catalog at ``path``, read by the rules above; CatalogReadError when the
    file as a whole cannot be read."""
    contents = CatalogContents()
    lowered = path.lower()
    if lowered.endswith(".parquet") or lowered.endswith("/"):
        _parquet_rows(path, contents)
        return contents
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CatalogReadError(f"cannot read catalog at {path}: {exc.strerror or exc}") from exc
    if lowered.endswith(".csv"):
        _csv_rows(text, contents, path)
    else:
        _json_lines(text, contents)
    return contents


def file_signature(path: str) -> tuple[int, int, int] | None:
    """What tells a changed catalog file (or folder) apart: inode, size, modification time; None
    when it is missing."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


# What a catalog says of an item, by item code (CatalogView.state).
UNLISTED, AVAILABLE, UNAVAILABLE = 0, 1, 2


@dataclass(frozen=True)
class CatalogView:
    """The catalog as requests check items against it, by item code: whether it may be served
    and its category code (-1: none). Items the catalog does not list are served or not as
    ``unlisted_available`` says; with no catalog at all, every item is."""

    state: bytes
    category: array
    unlisted_available: bool = True

    @classmethod
    def everything(cls) -> CatalogView:
        return cls(b"", array("i"), True)

    @classmethod
    def of(
        cls, contents: CatalogContents, items: Vocabulary, categories: Vocabulary, unlisted_available: bool
    ) -> CatalogView:
        for item_id in (*contents.latest, *contents.held_back):
            items.code(item_id)
        state = bytearray(len(items))
        category = array("i", [NULL]) * len(items)
        for item_id, line in contents.latest.items():
            code = items.codes[item_id]
            state[code] = AVAILABLE if contents.available(item_id) else UNAVAILABLE
            if line.category is not None:
                category[code] = categories.code(line.category)
        for item_id in contents.held_back:
            state[items.codes[item_id]] = UNAVAILABLE
        return cls(bytes(state), category, unlisted_available)

    def available(self, item: int) -> bool:
        if item < len(self.state) and self.state[item] != UNLISTED:
            return self.state[item] == AVAILABLE
        return self.unlisted_available

    def category_of(self, item: int) -> int:
        return self.category[item] if item < len(self.category) else NULL

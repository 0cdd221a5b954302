"""What requests read of a served table: a base :class:`ListBlock` plus the lists later commits
changed (the overlay), newest wins. A :class:`ServingLists` is never modified: a change builds a
new one, and the service swaps the reference, so a request sees one version or the next, never a
mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from recspark.api.list_blocks import ListBlock, concat_blocks
from recspark.api.rows import Rows
from recspark.api.vocabulary import NULL


@dataclass(frozen=True)
class Hit:
    """A key's list: its block and slot."""

    block: ListBlock
    slot: int


# The overlay's entry for a key whose list a later commit deleted.
DELETED = None


@dataclass(frozen=True)
class ServingLists:
    """A base block and the lists later commits changed (``overlay``: key -> its Hit in a
    smaller block, or :data:`DELETED`), newest wins. ``keys``: how many keys have a list."""

    base: ListBlock
    overlay: Mapping[str, Hit | None]
    keys: int
    rows: int

    @classmethod
    def of(cls, base: ListBlock) -> ServingLists:
        return cls(base, {}, base.keys, base.rows)

    def find(self, key: str) -> Hit | None:
        if key in self.overlay:
            return self.overlay[key]
        slot = self.base.find(key.encode("utf-8"))
        return Hit(self.base, slot) if slot >= 0 else None

    @property
    def has_variant(self) -> bool:
        return self.base.variant is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays: the base and every block the overlay points into."""
        blocks = {id(hit.block): hit.block for hit in self.overlay.values() if hit is not None}
        return self.base.nbytes + sum(block.nbytes for block in blocks.values())

    def with_lists(self, changed: Iterable[str], block: ListBlock | None) -> ServingLists:
        """This snapshot with the lists of ``changed`` keys replaced by their lists in ``block``
        (keys not in it are deleted)."""
        in_block = {} if block is None else {block.key(slot): slot for slot in range(block.keys)}
        overlay = dict(self.overlay)
        keys, rows = self.keys, self.rows
        for key in changed:
            before = self.find(key)
            if before is not None:
                keys -= 1
                rows -= int(before.block.offsets[before.slot + 1] - before.block.offsets[before.slot])
            slot = in_block.get(key)
            if slot is None:
                overlay[key] = DELETED
                continue
            assert block is not None
            overlay[key] = Hit(block, slot)
            keys += 1
            rows += int(block.offsets[slot + 1] - block.offsets[slot])
        return replace(self, overlay=overlay, keys=keys, rows=rows)

    def compacted(self) -> ServingLists:
        """The same lists with the overlay folded into a new base block (cost: every row)."""
        if not self.overlay:
            return self
        replaced = [self.base.find(key.encode("utf-8")) for key in self.overlay]
        keep = np.ones(self.base.keys, bool)
        keep[[slot for slot in replaced if slot >= 0]] = False
        parts = [self.base.take(np.flatnonzero(keep))]
        by_block: dict[int, tuple[ListBlock, list[int]]] = {}
        for hit in self.overlay.values():
            if hit is not None:
                by_block.setdefault(id(hit.block), (hit.block, []))[1].append(hit.slot)
        parts += [block.take(np.array(slots, np.int64)) for block, slots in by_block.values()]
        merged = concat_blocks(parts).sorted_by_hash()
        return ServingLists(merged, {}, merged.keys, merged.rows)

    def rows_of(self, keys: list[str]) -> Rows:
        """The current rows of ``keys`` (those that have a list), as :class:`Rows`."""
        hits = [(key, self.find(key)) for key in keys]
        found = [(key, hit) for key, hit in hits if hit is not None]
        columns: dict[str, list[np.ndarray]] = {name: [] for name in Rows.__dataclass_fields__}
        row_keys: list[str] = []
        for key, hit in found:
            block, slot = hit.block, hit.slot
            start, end = int(block.offsets[slot]), int(block.offsets[slot + 1])
            count = end - start
            row_keys += [key] * count
            for name in ("rank", "item", "score", "source", "because"):
                columns[name].append(getattr(block, name)[start:end])
            for name in ("model_version", "generated_at"):
                columns[name].append(np.repeat(getattr(block, name)[slot], count))
            variant = block.variant[slot] if block.variant is not None else NULL
            columns["variant"].append(np.repeat(np.int32(variant), count))

        def joined(name: str, dtype: type) -> np.ndarray:
            return np.concatenate(columns[name]).astype(dtype) if columns[name] else np.empty(0, dtype)

        return Rows(
            keys=pa.array(row_keys, pa.large_string()),
            rank=joined("rank", np.int64),
            item=joined("item", np.int32),
            score=joined("score", np.float64),
            source=joined("source", np.int32),
            because=joined("because", np.int32),
            model_version=joined("model_version", np.int32),
            generated_at=joined("generated_at", np.int64),
            variant=joined("variant", np.int32) if self.has_variant else None,
        )

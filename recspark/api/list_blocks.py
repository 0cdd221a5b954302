"""The served lists in memory, columnar: per key (a user, or an item for similar items) its
list in rank order, as NumPy arrays of codes, found by a hash of the key.

A :class:`ListBlock` holds the lists of many keys: key ``k``'s rows are ``offsets[k]`` to
``offsets[k + 1]``; keys are sorted by a 64-bit hash of their UTF-8 bytes, and each key's bytes
are kept to confirm a hit (a hash collision costs a comparison, never a wrong list).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recspark.api.rows import Rows
from recspark.api.vocabulary import NULL

_PRIME = 0x100000001B3  # FNV-64's
_MASK = (1 << 64) - 1


def key_hash(key: bytes) -> int:
    """The 64-bit polynomial hash of ``key`` (what :func:`key_hashes` computes for many keys)."""
    h = 0
    for byte in key:
        h = (h * _PRIME + byte) & _MASK
    return h


def _binary_parts(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string column and their offsets (int64, len + 1, starting at 0)."""
    binary = ids.cast(pa.large_binary())
    buffers = binary.buffers()
    offsets = np.frombuffer(buffers[1], np.int64)[binary.offset : binary.offset + len(binary) + 1]
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    data = data[offsets[0] : offsets[-1]].copy()
    return offsets - offsets[0], data


def key_hashes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """:func:`key_hash` of every key (bytes ``data[offsets[k]:offsets[k + 1]]``), vectorised."""
    lengths = np.diff(offsets)
    hashes = np.zeros(len(lengths), np.uint64)
    if data.size == 0:
        return hashes
    factors = np.full(int(lengths.max()), _PRIME, np.uint64)
    factors[0] = 1
    powers = np.cumprod(factors, dtype=np.uint64)  # _PRIME ** k, modulo 2**64
    exponent = np.repeat(offsets[1:], lengths) - np.arange(data.size) - 1
    terms = data.astype(np.uint64) * powers[exponent]
    nonempty = lengths > 0
    hashes[nonempty] = np.add.reduceat(terms, offsets[:-1][nonempty])
    return hashes


def _span_rows(offsets: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row indices of ``keys`` (indices into ``offsets``), key by key, each in its row order."""
    starts = offsets[keys].astype(np.int64)
    counts = offsets[keys + 1].astype(np.int64) - starts
    if counts.size == 0:
        return np.empty(0, np.int64)
    before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.repeat(starts - before, counts) + np.arange(int(counts.sum()))


def _offsets(counts: np.ndarray) -> np.ndarray:
    total = int(counts.sum())
    dtype = np.int32 if total < 2**31 else np.int64
    return np.concatenate([[0], np.cumsum(counts)]).astype(dtype)


def _small(values: np.ndarray) -> np.ndarray:
    """Integer codes in the narrowest type that holds them (ranks and sources are small)."""
    if values.size == 0:
        return values.astype(np.int8)
    low, high = np.min_scalar_type(int(values.min())), np.min_scalar_type(int(values.max()))
    return values.astype(np.promote_types(low, high))


@dataclass(frozen=True)
class ListBlock:
    """The lists of many keys, sorted by key hash (see the module docstring). Per key: its
    model version, variant (label codes) and newest ``generated_at``; per row: rank, item,
    score, source, the item it is because of."""

    hashes: np.ndarray
    id_offsets: np.ndarray
    id_bytes: np.ndarray
    offsets: np.ndarray
    rank: np.ndarray
    item: np.ndarray
    score: np.ndarray
    source: np.ndarray
    because: np.ndarray
    model_version: np.ndarray
    generated_at: np.ndarray
    variant: np.ndarray | None

    @property
    def keys(self) -> int:
        return len(self.hashes)

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        arrays = [getattr(self, f) for f in self.__dataclass_fields__]
        return sum(a.nbytes for a in arrays if a is not None)

    def key_bytes(self, slot: int) -> bytes:
        return self.id_bytes[self.id_offsets[slot] : self.id_offsets[slot + 1]].tobytes()

    def key(self, slot: int) -> str:
        return self.key_bytes(slot).decode("utf-8")

    def find(self, key: bytes) -> int:
        """The slot of ``key``, or -1."""
        wanted = np.uint64(key_hash(key))
        slot = int(np.searchsorted(self.hashes, wanted))
        while slot < len(self.hashes) and self.hashes[slot] == wanted:
            if self.key_bytes(slot) == key:
                return slot
            slot += 1
        return -1

    def take(self, slots: np.ndarray) -> ListBlock:
        """These keys' lists, in the order given (not sorted by hash)."""
        rows = _span_rows(self.offsets, slots)
        ids = _span_rows(self.id_offsets, slots)
        return ListBlock(
            hashes=self.hashes[slots],
            id_offsets=_offsets(np.diff(self.id_offsets)[slots]),
            id_bytes=self.id_bytes[ids],
            offsets=_offsets(np.diff(self.offsets)[slots]),
            rank=self.rank[rows],
            item=self.item[rows],
            score=self.score[rows],
            source=self.source[rows],
            because=self.because[rows],
            model_version=self.model_version[slots],
            generated_at=self.generated_at[slots],
            variant=None if self.variant is None else self.variant[slots],
        )

    def sorted_by_hash(self) -> ListBlock:
        return self.take(np.argsort(self.hashes, kind="stable"))


def concat_blocks(blocks: list[ListBlock]) -> ListBlock:
    """One block of all keys of ``blocks`` in their order (keys must not repeat); a column
    missing from one block (``variant``) is null there."""
    with_variant = any(b.variant is not None for b in blocks)

    def joined(name: str) -> np.ndarray:
        parts = [getattr(b, name) for b in blocks]
        if name == "variant":
            parts = [
                np.full(b.keys, NULL, np.int32) if p is None else p
                for p, b in zip(parts, blocks, strict=True)
            ]
        return np.concatenate(parts)

    return ListBlock(
        hashes=np.concatenate([b.hashes for b in blocks]),
        id_offsets=_offsets(np.concatenate([np.diff(b.id_offsets) for b in blocks])),
        id_bytes=np.concatenate([b.id_bytes for b in blocks]),
        offsets=_offsets(np.concatenate([np.diff(b.offsets) for b in blocks])),
        rank=_small(joined("rank")),
        item=joined("item"),
        score=joined("score"),
        source=_small(joined("source")),
        because=joined("because"),
        model_version=joined("model_version"),
        generated_at=joined("generated_at"),
        variant=joined("variant") if with_variant else None,
    )


def _empty_block(with_variant: bool) -> ListBlock:
    none = np.empty(0, np.int32)
    return ListBlock(
        hashes=np.empty(0, np.uint64),
        id_offsets=np.zeros(1, np.int32),
        id_bytes=np.empty(0, np.uint8),
        offsets=np.zeros(1, np.int32),
        rank=none,
        item=none,
        score=np.empty(0, np.float64),
        source=none,
        because=none,
        model_version=none,
        generated_at=np.empty(0, np.int64),
        variant=none if with_variant else None,
    )


def build_block(rows: Rows) -> ListBlock:
    """The lists in ``rows``, each key's rows in rank order, keys sorted by hash. A key's model
    version and variant are those of its newest row (``generated_at``)."""
    if rows.count == 0:
        return _empty_block(rows.variant is not None)
    keys = rows.keys.cast(pa.large_string())
    encoded = pc.dictionary_encode(keys)
    key_offsets, key_data = _binary_parts(encoded.dictionary)
    hashes = key_hashes(key_offsets, key_data)
    by_hash = np.argsort(hashes, kind="stable")
    position = np.empty(len(by_hash), np.int64)
    position[by_hash] = np.arange(len(by_hash))
    row_key = position[encoded.indices.to_numpy(zero_copy_only=False)]
    rank = rows.rank.astype(np.int64)
    low, span = int(rank.min()), int(rank.max()) - int(rank.min()) + 1
    order = np.argsort(row_key * span + (rank - low), kind="stable")
    row_key = row_key[order]
    counts = np.bincount(row_key, minlength=len(by_hash))
    offsets = _offsets(counts)
    starts = offsets[:-1].astype(np.int64)
    generated = rows.generated_at[order]
    newest = np.maximum.reduceat(generated, starts)
    is_newest = generated == np.repeat(newest, counts)
    first_newest = np.minimum.reduceat(np.where(is_newest, np.arange(order.size), order.size), starts)
    newest_row = order[first_newest]
    ids = _span_rows(key_offsets, by_hash)
    return ListBlock(
        hashes=hashes[by_hash],
        id_offsets=_offsets(np.diff(key_offsets)[by_hash]),
        id_bytes=key_data[ids],
        offsets=offsets,
        rank=_small(rows.rank[order]),
        item=rows.item[order].astype(np.int32),
        score=rows.score[order].astype(np.float64),
        source=_small(rows.source[order]),
        because=rows.because[order].astype(np.int32),
        model_version=rows.model_version[newest_row].astype(np.int32),
        generated_at=newest.astype(np.int64),
        variant=None if rows.variant is None else rows.variant[newest_row].astype(np.int32),
    )


def _repeats_merged(block: ListBlock) -> ListBlock:
    """``block`` (sorted by hash) with each key that appears more than once (its rows were read
    in two chunks) made one entry: all its rows in rank order, the newest entry's model version
    and variant."""
    same_hash = np.flatnonzero(block.hashes[1:] == block.hashes[:-1]) + 1
    group = np.arange(block.keys)
    for slot in same_hash.tolist():  # as few as the chunks read, unless hashes collide
        earlier = slot - 1
        while earlier >= 0 and block.hashes[earlier] == block.hashes[slot]:
            if block.key_bytes(earlier) == block.key_bytes(slot):
                group[slot] = group[earlier]
                break
            earlier -= 1
    if np.array_equal(group, np.arange(block.keys)):
        return block
    firsts, dense = np.unique(group, return_inverse=True)
    counts = np.diff(block.offsets).astype(np.int64)
    row_group = np.repeat(dense, counts)
    rank = block.rank.astype(np.int64)
    low, span = int(rank.min()), int(rank.max()) - int(rank.min()) + 1
    order = np.argsort(row_group * span + (rank - low), kind="stable")
    newest_first = np.lexsort((-block.generated_at, dense))
    _, first_in_group = np.unique(dense[newest_first], return_index=True)
    newest = newest_first[first_in_group]
    ids = _span_rows(block.id_offsets, firsts)
    return ListBlock(
        hashes=block.hashes[firsts],
        id_offsets=_offsets(np.diff(block.id_offsets)[firsts]),
        id_bytes=block.id_bytes[ids],
        offsets=_offsets(np.bincount(row_group, minlength=len(firsts))),
        rank=block.rank[order],
        item=block.item[order],
        score=block.score[order],
        source=block.source[order],
        because=block.because[order],
        model_version=block.model_version[newest],
        generated_at=block.generated_at[newest],
        variant=None if block.variant is None else block.variant[newest],
    )


def build_in_chunks(chunks: Iterable[Rows]) -> ListBlock:
    """One block of the rows of all ``chunks`` (a table read a chunk at a time, so only one
    chunk's Arrow data is in memory at once); a key may have rows in several chunks."""
    blocks = [build_block(rows) for rows in chunks]
    if not blocks:
        raise ValueError("no chunks to build from")
    if len(blocks) == 1:
        return blocks[0]
    return _repeats_merged(concat_blocks([b for b in blocks if b.keys] or blocks[:1]).sorted_by_hash())

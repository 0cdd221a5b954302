"""The served tables in memory, columnar: per key (a user, or an item for similar items) its
list in rank order, as NumPy arrays of codes, found by a hash of the key.

A :class:`ListBlock` holds the lists of many keys: key ``k``'s rows are ``offsets[k]`` to
``offsets[k + 1]``; keys are sorted by a 64-bit hash of their UTF-8 bytes, and each key's bytes
are kept to confirm a hit (a hash collision costs a comparison, never a wrong list).
:class:`ServingLists` is what requests read: a base block plus the lists later commits changed
(the overlay), newest wins. It is never modified: a change builds a new one, and the service
swaps the reference, so a request sees one version or the next, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recspark.api.vocabulary import NULL, Vocabulary

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
class Rows:
    """Rows of lists, one array per column, codes from the service's vocabularies: what a block
    is built from (a table read, or a commit's changes applied)."""

    keys: pa.Array  # the key (user_id / item_id) of each row, strings
    rank: np.ndarray
    item: np.ndarray  # item codes
    score: np.ndarray  # float64
    source: np.ndarray  # label codes, NULL where none
    because: np.ndarray  # item codes, NULL where none
    model_version: np.ndarray  # label codes
    generated_at: np.ndarray  # epoch microseconds
    variant: np.ndarray | None  # label codes; None when the table has no such column

    @property
    def count(self) -> int:
        return len(self.rank)

    def where(self, mask: np.ndarray) -> Rows:
        """The rows where ``mask`` is true."""
        return Rows(
            keys=self.keys.filter(pa.array(mask)),
            rank=self.rank[mask],
            item=self.item[mask],
            score=self.score[mask],
            source=self.source[mask],
            because=self.because[mask],
            model_version=self.model_version[mask],
            generated_at=self.generated_at[mask],
            variant=None if self.variant is None else self.variant[mask],
        )


def concat_rows(parts: list[Rows]) -> Rows:
    """The rows of ``parts`` one after another (``variant`` null where a part has none)."""
    with_variant = any(p.variant is not None for p in parts)
    return Rows(
        keys=pa.concat_arrays([p.keys.cast(pa.large_string()) for p in parts]),
        rank=np.concatenate([p.rank.astype(np.int64) for p in parts]),
        item=np.concatenate([p.item.astype(np.int32) for p in parts]),
        score=np.concatenate([p.score.astype(np.float64) for p in parts]),
        source=np.concatenate([p.source.astype(np.int32) for p in parts]),
        because=np.concatenate([p.because.astype(np.int32) for p in parts]),
        model_version=np.concatenate([p.model_version.astype(np.int32) for p in parts]),
        generated_at=np.concatenate([p.generated_at.astype(np.int64) for p in parts]),
        variant=np.concatenate(
            [p.variant if p.variant is not None else np.full(p.count, NULL, np.int32) for p in parts]
        )
        if with_variant
        else None,
    )


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


@dataclass(frozen=True)
class Vocabularies:
    """The service's interned strings: item ids (and similar item ids), categories, and labels
    (sources, model versions, variants)."""

    items: Vocabulary = field(default_factory=Vocabulary)
    categories: Vocabulary = field(default_factory=Vocabulary)
    labels: Vocabulary = field(default_factory=Vocabulary)


def arrow_table(result: object) -> pa.Table:
    """A delta-rs result (arro3) as a pyarrow table whose text columns are ``large_string``
    (delta-rs hands out ``string_view``, which some pyarrow kernels lack)."""
    table = pa.table(result)
    fields = [
        pa.field(f.name, pa.large_string(), f.nullable) if pa.types.is_string_view(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def chunked_tables(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches as tables of about ``rows`` rows each (text as ``large_string``)."""
    pending: list[pa.RecordBatch] = []
    count, yielded = 0, False
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield arrow_table(pa.Table.from_batches(pending))
            pending, count, yielded = [], 0, True
    if pending or not yielded:
        yield arrow_table(pa.Table.from_batches(pending, schema=getattr(batches, "schema", None)))


def _micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as epoch microseconds (null: 0)."""
    micros = pa.timestamp("us", tz="UTC")
    if column.type != micros:
        column = pc.cast(column, micros)
    return pc.cast(column, pa.int64()).fill_null(0).to_numpy()


def _numbers(column: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    return column.fill_null(0).to_numpy().astype(dtype)


def _single(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], pa.large_string())
    return column


def rows_of_table(
    table: pa.Table, vocab: Vocabularies, key: str, item: str, because: str | None, source: str | None
) -> Rows:
    """A table's rows (the recommendations or similar_items schema) as :class:`Rows`."""
    n = table.num_rows
    return Rows(
        keys=_single(table.column(key)),
        rank=_numbers(table.column("rank"), np.int64),
        item=vocab.items.encode(table.column(item)),
        score=_numbers(table.column("score"), np.float64),
        source=vocab.labels.encode(table.column(source)) if source else np.full(n, NULL, np.int32),
        because=vocab.items.encode(table.column(because))
        if because in table.column_names
        else np.full(n, NULL, np.int32),
        model_version=vocab.labels.encode(table.column("model_version")),
        generated_at=_micros(table.column("generated_at")),
        variant=vocab.labels.encode(table.column("variant")) if "variant" in table.column_names else None,
    )


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


@dataclass(frozen=True)
class FallbackList:
    """The ``fallback_items`` table: items in shop-wide rank order (codes, scores, sources,
    categories), the positions of each category's items in that order, and the model version
    and time of the publish that wrote it."""

    item: np.ndarray
    score: np.ndarray
    source: np.ndarray
    category: np.ndarray
    by_category: Mapping[int, np.ndarray]
    model_version: int
    generated_at: int

    @property
    def rows(self) -> int:
        return len(self.item)

    @property
    def nbytes(self) -> int:
        arrays = (self.item, self.score, self.source, self.category, *self.by_category.values())
        return sum(a.nbytes for a in arrays)

    @classmethod
    def of_table(cls, table: pa.Table, vocab: Vocabularies) -> FallbackList:
        order = np.argsort(_numbers(table.column("rank"), np.int64), kind="stable")
        category = vocab.categories.encode(table.column("category"))[order]
        generated = _micros(table.column("generated_at"))
        versions = vocab.labels.encode(table.column("model_version"))
        newest = int(np.argmax(generated)) if generated.size else -1
        groups: dict[int, list[int]] = {}
        for position, code in enumerate(category.tolist()):
            groups.setdefault(code, []).append(position)
        return cls(
            item=vocab.items.encode(table.column("item_id"))[order],
            score=_numbers(table.column("score"), np.float64)[order],
            source=vocab.labels.encode(table.column("source"))[order],
            category=category,
            by_category={code: np.array(positions, np.int64) for code, positions in groups.items()},
            model_version=int(versions[newest]) if newest >= 0 else NULL,
            generated_at=int(generated[newest]) if newest >= 0 else 0,
        )

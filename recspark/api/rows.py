"""Rows of served lists as code arrays, one per column: what a table read, or a commit's changes
applied, hands to the in-memory lists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recspark.api.arrow_columns import epoch_micros, filled_numbers, single_array
from recspark.api.vocabulary import NULL, Vocabularies


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


def rows_of_table(
    table: pa.Table, vocab: Vocabularies, key: str, item: str, because: str | None, source: str | None
) -> Rows:
    """A table's rows (the recommendations or similar_items schema) as :class:`Rows`."""
    n = table.num_rows
    return Rows(
        keys=single_array(table.column(key)),
        rank=filled_numbers(table.column("rank"), np.int64),
        item=vocab.items.encode(table.column(item)),
        score=filled_numbers(table.column("score"), np.float64),
        source=vocab.labels.encode(table.column(source)) if source else np.full(n, NULL, np.int32),
        because=vocab.items.encode(table.column(because))
        if because in table.column_names
        else np.full(n, NULL, np.int32),
        model_version=vocab.labels.encode(table.column("model_version")),
        generated_at=epoch_micros(table.column("generated_at")),
        variant=vocab.labels.encode(table.column("variant")) if "variant" in table.column_names else None,
    )

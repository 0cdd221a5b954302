"""The ``fallback_items`` table in memory: what fills a list that is missing or that a request's
filters left short."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recspark.api.arrow_columns import epoch_micros, filled_numbers
from recspark.api.vocabulary import NULL, Vocabularies


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
        order = np.argsort(filled_numbers(table.column("rank"), np.int64), kind="stable")
        category = vocab.categories.encode(table.column("category"))[order]
        generated = epoch_micros(table.column("generated_at"))
        versions = vocab.labels.encode(table.column("model_version"))
        newest = int(np.argmax(generated)) if generated.size else -1
        groups: dict[int, list[int]] = {}
        for position, code in enumerate(category.tolist()):
            groups.setdefault(code, []).append(position)
        return cls(
            item=vocab.items.encode(table.column("item_id"))[order],
            score=filled_numbers(table.column("score"), np.float64)[order],
            source=vocab.labels.encode(table.column("source"))[order],
            category=category,
            by_category={code: np.array(positions, np.int64) for code, positions in groups.items()},
            model_version=int(versions[newest]) if newest >= 0 else NULL,
            generated_at=int(generated[newest]) if newest >= 0 else 0,
        )

"""Ids interned as small integers, so the service's lists hold 4-byte codes, not strings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL = -1  # the code of a missing value


class Vocabulary:
    """Strings (item ids, categories, model versions, sources) and their codes, 0, 1, 2, ...

    Append-only, and shared by every generation of the service's tables: a code once given
    names the same string for the life of the process. Only the follower thread adds words;
    request handlers read codes a published snapshot holds, which exist already."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.words)

    def code(self, word: str) -> int:
        """The word's code, added when new."""
        found = self.codes.get(word)
        if found is None:
            found = len(self.words)
            self.words.append(word)
            self.codes[word] = found
        return found

    def encode(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Codes (int32) of an Arrow string column; :data:`NULL` where it is null."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks else pa.array([], pa.large_string())
        if len(values) == 0:
            return np.empty(0, np.int32)
        encoded = pc.dictionary_encode(values.cast(pa.large_string()))
        words = encoded.dictionary.to_pylist()
        mapping = np.fromiter((self.code(w) for w in words), np.int32, len(words))
        indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.where(indices >= 0, mapping[np.maximum(indices, 0)] if len(words) else NULL, NULL).astype(
            np.int32
        )


@dataclass(frozen=True)
class Vocabularies:
    """The service's interned strings: item ids (and similar item ids), categories, and labels
    (sources, model versions, variants)."""

    items: Vocabulary = field(default_factory=Vocabulary)
    categories: Vocabulary = field(default_factory=Vocabulary)
    labels: Vocabulary = field(default_factory=Vocabulary)

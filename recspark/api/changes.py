"""A table's Change Data Feed applied to the lists in memory, commit by commit.

Each commit's change rows say which rows left (``delete``, ``update_preimage``) and which arrived
(``insert``, ``update_postimage``). For the keys a commit touches, their current rows minus the
rows that left plus the rows that arrived are their new lists: a refresh MERGE (old list out, new
list in) and forget-user's DELETE (list out) are two cases of it. The cost follows the rows the
commit changed, not the table.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recspark.api.list_blocks import build_block
from recspark.api.rows import Rows, concat_rows, rows_of_table
from recspark.api.serving_lists import ServingLists
from recspark.api.vocabulary import Vocabularies

LEFT = ("delete", "update_preimage")
ARRIVED = ("insert", "update_postimage")
CHANGE_TYPE = "_change_type"
COMMIT_VERSION = "_commit_version"


def apply_changes(
    lists: ServingLists, changes: pa.Table, vocab: Vocabularies, key: str = "user_id"
) -> tuple[ServingLists, int]:
    """``lists`` with the change rows of one or more commits applied in commit order; also how
    many keys' lists changed (counted once per commit that changed them)."""
    if changes.num_rows == 0:
        return lists, 0
    changed = 0
    versions = pc.unique(changes.column(COMMIT_VERSION)).to_pylist()
    for version in sorted(versions):
        commit = changes.filter(pc.equal(changes.column(COMMIT_VERSION), version))
        lists, keys = _apply_commit(lists, commit, vocab, key)
        changed += keys
    return lists, changed


def _rows(table: pa.Table, vocab: Vocabularies, key: str) -> Rows:
    return rows_of_table(table, vocab, key=key, item="item_id", because="because_item_id", source="source")


def _identities(rows: Rows) -> zip:
    """What names a row among its table's rows: key, rank and item."""
    return zip(rows.keys.to_pylist(), rows.rank.tolist(), rows.item.tolist(), strict=True)


def _apply_commit(
    lists: ServingLists, commit: pa.Table, vocab: Vocabularies, key: str
) -> tuple[ServingLists, int]:
    kinds = commit.column(CHANGE_TYPE)
    left = _rows(commit.filter(pc.is_in(kinds, pa.array(LEFT))), vocab, key)
    arrived = _rows(commit.filter(pc.is_in(kinds, pa.array(ARRIVED))), vocab, key)
    keys = sorted(set(commit.column(key).to_pylist()))
    current = lists.rows_of(keys)
    gone = set(_identities(left))
    staying = np.fromiter((row not in gone for row in _identities(current)), bool, current.count)
    fresh = concat_rows([current.where(staying), arrived])
    block = build_block(fresh) if fresh.count else None
    return lists.with_lists(keys, block), len(keys)

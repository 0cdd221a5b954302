"""The lookup service's memory and catalog, without Spark: the columnar lists answer what a
plain dict of the table's rows answers; a table followed through its change feed equals the same
table read again; the catalog reader holds back exactly what the Spark reader's rules hold back."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from recspark.api import list_blocks
from recspark.api.arrow_columns import arrow_table
from recspark.api.catalog import CatalogReadError, CatalogView, read_catalog_file
from recspark.api.changes import apply_changes
from recspark.api.fallback_list import FallbackList
from recspark.api.list_blocks import build_block, build_in_chunks, key_hash, key_hashes
from recspark.api.lists import FALLBACK, Filters, Shelf, assemble
from recspark.api.rows import rows_of_table
from recspark.api.serving_lists import ServingLists
from recspark.api.vocabulary import NULL, Vocabularies
from recspark.core.lake_reader import TABLE, query

AT = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
COLUMNS = [
    "user_id",
    "rank",
    "item_id",
    "score",
    "source",
    "model_version",
    "generated_at",
    "because_item_id",
]


def recommendation_table(rows: list[tuple]) -> pa.Table:
    """(user, rank, item, score, source, model version, hours after AT, because) rows."""
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "rank": pa.array([r[1] for r in rows], pa.int32()),
            "item_id": pa.array([r[2] for r in rows], pa.string()),
            "score": pa.array([r[3] for r in rows], pa.float64()),
            "source": pa.array([r[4] for r in rows], pa.string()),
            "model_version": pa.array([r[5] for r in rows], pa.string()),
            "generated_at": pa.array(
                [AT + timedelta(hours=r[6]) for r in rows], pa.timestamp("us", tz="UTC")
            ),
            "because_item_id": pa.array([r[7] for r in rows], pa.string()),
        }
    )


def lists_of(table: pa.Table, vocab: Vocabularies) -> ServingLists:
    rows = rows_of_table(table, vocab, "user_id", "item_id", "because_item_id", "source")
    return ServingLists.of(build_block(rows))


def answer(lists: ServingLists, vocab: Vocabularies, user: str) -> tuple | None:
    """A user's list as (items, scores, sources, because, model version, generated_at)."""
    hit = lists.find(user)
    if hit is None:
        return None
    block, slot = hit.block, hit.slot
    start, end = int(block.offsets[slot]), int(block.offsets[slot + 1])
    words, labels = vocab.items.words, vocab.labels.words
    return (
        [words[c] for c in block.item[start:end]],
        block.score[start:end].tolist(),
        [labels[c] for c in block.source[start:end]],
        [None if c == NULL else words[c] for c in block.because[start:end]],
        labels[block.model_version[slot]],
        int(block.generated_at[slot]),
    )


def brute_force(rows: list[tuple], user: str) -> tuple | None:
    mine = sorted((r for r in rows if r[0] == user), key=lambda r: r[1])
    if not mine:
        return None
    newest = max(mine, key=lambda r: r[6])
    micros = int((AT + timedelta(hours=newest[6])).timestamp() * 1_000_000)
    return (
        [r[2] for r in mine],
        [r[3] for r in mine],
        [r[4] for r in mine],
        [r[7] for r in mine],
        newest[5],
        micros,
    )


def random_rows(rng: random.Random, users: list[str], hours: int) -> list[tuple]:
    return [
        (
            user,
            rank,
            f"i{rng.randint(0, 40)}",
            rng.random(),
            rng.choice(["als", "trending", "category_popular"]),
            str(hours),
            hours,
            None if rank > 2 else f"i{rng.randint(0, 40)}",
        )
        for user in users
        for rank in range(1, rng.randint(1, 6) + 1)
    ]


def test_key_hashes_equal_the_hash_of_each_key() -> None:
    keys = ["u1", "", "ü-ß-😀", "x" * 256, "u1 ", "a'b\\c"]
    binary = pa.array(keys, pa.large_string()).cast(pa.large_binary())
    offsets = binary.buffers()[1]
    starts = np.frombuffer(offsets, np.int64)[: len(keys) + 1]
    data = np.frombuffer(binary.buffers()[2], np.uint8)[: starts[-1]]
    assert key_hashes(starts, data).tolist() == [key_hash(k.encode()) for k in keys]


def test_a_block_answers_what_the_rows_hold() -> None:
    rng = random.Random(1)
    users = [f"u{k}" for k in range(300)] + ["ü-ß", "a'b", "x" * 256]
    rows = random_rows(rng, users, 0)
    vocab = Vocabularies()
    lists = lists_of(recommendation_table(rows), vocab)

    assert (lists.keys, lists.rows) == (len(users), len(rows))
    for user in [*users, "nobody", "u1000", "", "x" * 255]:
        assert answer(lists, vocab, user) == brute_force(rows, user), user


def test_a_table_read_in_chunks_equals_it_read_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks split users' rows at arbitrary places (a user's rows in two chunks are merged);
    with a hash so weak that most keys collide, every key still gets exactly its own list."""
    rng = random.Random(3)
    users = [f"u{k}" for k in range(200)]
    rows = random_rows(rng, users, 0) + random_rows(rng, users[:50], 2)  # some users twice, newer
    rng.shuffle(rows)
    table = recommendation_table(rows)
    for weak in (False, True):
        if weak:
            monkeypatch.setattr(list_blocks, "key_hash", lambda key: len(key) % 3)
            monkeypatch.setattr(
                list_blocks, "key_hashes", lambda offsets, data: (np.diff(offsets) % 3).astype(np.uint64)
            )
        vocab = Vocabularies()
        cuts = sorted(rng.sample(range(1, len(rows)), 7))
        chunks = [table.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
        parts = (rows_of_table(c, vocab, "user_id", "item_id", "because_item_id", "source") for c in chunks)
        chunked = ServingLists.of(build_in_chunks(parts))
        whole = lists_of(table, vocab)
        assert (chunked.keys, chunked.rows) == (whole.keys, whole.rows) == (len(users), len(rows))
        for user in [*users, "nobody"]:
            assert answer(chunked, vocab, user) == answer(whole, vocab, user), (weak, user)


def test_a_user_whose_rows_disagree_reports_the_newest_rows_version() -> None:
    rows = [("u", 1, "a", 1.0, "als", "1", 0, None), ("u", 2, "b", 0.5, "als", "2", 3, None)]
    vocab = Vocabularies()
    found = answer(lists_of(recommendation_table(rows), vocab), vocab, "u")
    assert found is not None and found[4] == "2"


def test_following_the_change_feed_equals_reading_the_table_again(tmp_path: Path) -> None:
    """Rebuild equals incremental: random replacements of users' lists (delete + insert, as a
    refresh does), deletions of whole lists (forget-user) and of single rows, applied from
    delta-rs' change feed one or several commits at a time, with the overlay folded in now and
    then, answer every user as a fresh read of the table does."""
    rng = random.Random(7)
    path = str(tmp_path / "recommendations")
    users = [f"u{k}" for k in range(80)]
    write_deltalake(
        path,
        recommendation_table(random_rows(rng, users, 0)),
        configuration={"delta.enableChangeDataFeed": "true"},
    )
    vocab = Vocabularies()

    def read(table: DeltaTable) -> ServingLists:
        return lists_of(arrow_table(query(table, f"SELECT * FROM {TABLE}")), vocab)

    lists, loaded = read(DeltaTable(path)), 0
    everyone = [*users, *(f"new{k}" for k in range(30))]
    for step in range(1, 30):
        table = DeltaTable(path)
        batch = rng.sample(everyone, 6)
        kind = rng.choice(["refresh", "refresh", "forget", "row"])
        if kind == "refresh":
            table.delete(" OR ".join(f"user_id = '{u}'" for u in batch))
            write_deltalake(path, recommendation_table(random_rows(rng, batch, step)), mode="append")
        elif kind == "forget":
            table.delete(f"user_id = '{batch[0]}'")
        else:
            table.delete(f"user_id = '{batch[0]}' AND rank = 1")
        if rng.random() < 0.4:
            continue  # the next poll picks up several commits at once
        table = DeltaTable(path)
        if table.version() == loaded:
            continue
        feed = table.load_cdf(
            starting_version=loaded + 1,
            ending_version=table.version(),
            columns=[*COLUMNS, "_change_type", "_commit_version"],
        )
        lists, _ = apply_changes(lists, arrow_table(feed.read_all()), vocab)
        loaded = table.version()
        if step % 6 == 0:
            lists = lists.compacted()
        again = read(table)
        assert (lists.keys, lists.rows) == (again.keys, again.rows)
        for user in everyone:
            assert answer(lists, vocab, user) == answer(again, vocab, user), (step, kind, user)
    assert loaded > 10


# --------------------------------------------------------------------------------------------
# the catalog


def catalog_at(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def availability(path: Path) -> dict[str, bool]:
    contents = read_catalog_file(str(path))
    return {item: contents.available(item) for item in sorted(contents.latest.keys() | contents.held_back)}


def test_json_lines_that_cannot_be_read_whole_hold_their_item_back(tmp_path: Path) -> None:
    lines = [
        '{"item_id": "a", "available": "false", "price": "9.50"}',
        '{"item_id": "b", "available": tru',
        '{"item_id": "c"}{"item_id": "d"}',
        '["e"]',
        "",
        '{"item_id": ""}',
        '{"title": "no id"}',
        '{"item_id": {"x": 1}}',
        '{"item_id": "g", "category": ["x", "y"]}',
        '{"item_id": 17, "available": 0}',
        '{"item_id": "h", "available": "maybe"}',
        '{"item_id": "i", "price": "cheap"}',
        '{"item_id": "j", "updated_at": "last tuesday"}',
        '{"item_id": "k", "available": " Yes "}',
        '{"item_id": "l"}',
        '{"item_id": "m", "available": true}',
        '{"item_id": "m", "available": "nope", "updated_at": "2026-01-01T00:00:00Z"}',
    ]
    path = catalog_at(tmp_path, "catalog.jsonl", "\n".join(lines) + "\n")

    contents = read_catalog_file(str(path))

    assert contents.lines == len(lines) - 1  # the blank line is no line
    assert dict(contents.reasons) == {
        "malformed JSON": 3,
        "empty item_id": 1,
        "missing item_id": 1,
        "item_id is not a string": 1,
        "category is not a single value": 1,
        "available is not true/false": 2,
        "price is not a number": 1,
        "updated_at is not a timestamp": 1,
    }
    assert availability(path) == {
        "17": False,
        "a": False,
        "b": False,
        "c": False,
        "g": False,
        "h": False,
        "i": False,
        "j": False,
        "k": True,
        "l": True,
        "m": False,  # one of its lines is broken: the catalog no longer vouches for it
    }


def test_csv_rows_of_the_wrong_width_hold_their_item_back(tmp_path: Path) -> None:
    path = catalog_at(
        tmp_path,
        "catalog.csv",
        "available,item_id,category\nfalse,a,k\ntrue,b\ntrue,c,k,extra\n,d,k\ntrue,,k\nno,e,k\n1,f,k\n",
    )
    contents = read_catalog_file(str(path))

    assert dict(contents.reasons) == {"wrong number of fields": 2, "missing item_id": 1}
    assert availability(path) == {"a": False, "b": False, "c": False, "d": True, "e": False, "f": True}
    assert contents.latest["d"].category == "k"


def test_the_newest_line_of_an_item_decides(tmp_path: Path) -> None:
    path = catalog_at(
        tmp_path,
        "catalog.jsonl",
        '{"item_id": "a", "available": false, "updated_at": "2026-01-02T00:00:00Z"}\n'
        '{"item_id": "a", "available": true, "updated_at": "2026-01-01T00:00:00Z"}\n'
        '{"item_id": "a", "available": true}\n'
        '{"item_id": "b", "available": false}\n'
        '{"item_id": "b", "available": true, "updated_at": "2026-01-01 10:00:00"}\n',
    )
    assert availability(path) == {"a": False, "b": True}


def test_parquet_catalog_and_unreadable_ones(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "available": [False, True, None]}), typed)
    assert availability(typed) == {"a": False, "b": True, "c": True}
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "available": ["no", "perhaps"]}), text)
    assert availability(text) == {"a": False, "b": False}
    no_ids = tmp_path / "no_ids.csv"
    no_ids.write_text("id,available\na,true\n")
    with pytest.raises(CatalogReadError, match="no item_id column"):
        read_catalog_file(str(no_ids))
    with pytest.raises(CatalogReadError, match="cannot read catalog"):
        read_catalog_file(str(tmp_path / "missing.jsonl"))


# --------------------------------------------------------------------------------------------
# a list as served


def _fallback(vocab: Vocabularies, rows: list[tuple[str, str | None]]) -> FallbackList:
    """Fallback items (item, category) in rank order."""
    table = pa.table(
        {
            "item_id": [r[0] for r in rows],
            "category": pa.array([r[1] for r in rows], pa.string()),
            "rank": pa.array(range(1, len(rows) + 1), pa.int32()),
            "score": [100.0 - k for k in range(len(rows))],
            "source": ["trending"] * len(rows),
            "model_version": ["7"] * len(rows),
            "generated_at": pa.array([AT] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    return FallbackList.of_table(table, vocab)


def test_filters_drop_items_and_the_fallback_fills_the_list(tmp_path: Path) -> None:
    """Against a brute-force oracle: the stored list minus excluded, unavailable and
    off-category items, then fallback items not already taken, up to n."""
    rng = random.Random(5)
    items = [f"i{k}" for k in range(30)]
    category = {item: f"c{k % 3}" for k, item in enumerate(items)}
    unavailable = set(rng.sample(items, 6))
    lines = [
        json.dumps({"item_id": i, "category": category[i], "available": i not in unavailable}) for i in items
    ]
    catalog = catalog_at(tmp_path, "catalog.jsonl", "\n".join(lines) + "\n")
    vocab = Vocabularies()
    stored = [("u", rank, item, 1.0 / rank, "als", "7", 0, None) for rank, item in enumerate(items[:12], 1)]
    lists = lists_of(recommendation_table(stored), vocab)
    fallback_order = rng.sample(items, len(items))
    shelf = Shelf(
        vocab,
        CatalogView.of(read_catalog_file(str(catalog)), vocab.items, vocab.categories, True),
        _fallback(vocab, [(i, category[i]) for i in fallback_order]),
        vocab.labels.code(FALLBACK),
    )
    for trial in range(200):
        n = rng.randint(1, 25)
        exclude = set(rng.sample(items, rng.randint(0, 8)))
        wanted = rng.choice([None, "c0", "c1", "c2", "nope"])
        user = rng.choice(["u", "stranger"])
        filters = Filters(
            n,
            frozenset(vocab.items.codes[i] for i in exclude),
            None if wanted is None else vocab.categories.codes.get(wanted, -2),
        )
        served = assemble(shelf, "recommendations", user, lists.find(user), filters, False)

        expected: list[tuple[str, str]] = []
        mine = [r[2] for r in stored] if user == "u" else []
        for source, candidates in (("als", mine), (FALLBACK, fallback_order)):
            for item in candidates:
                fits = (
                    item not in exclude and item not in unavailable and item not in [e[0] for e in expected]
                )
                if fits and (wanted is None or category[item] == wanted) and len(expected) < n:
                    expected.append((item, source))
        assert [(i.item_id, i.source) for i in served.items] == expected, trial
        assert [i.position for i in served.items] == list(range(1, len(expected) + 1))
        scores = [i.score for i in served.items]
        assert scores == sorted(scores, reverse=True)
        assert served.fallback == (user == "stranger") and served.model_version == "7"


def test_the_follower_applies_the_change_feed_and_reads_in_full_only_when_it_must(tmp_path: Path) -> None:
    """delta-rs commits of each kind: a refresh (delete + insert) and a forget (delete) are
    applied from the change feed, a compaction and a checkpoint change nothing, an overwrite is
    read in full; after each, the service answers as a fresh read of the table."""
    from recspark.api.service import LookupService
    from recspark.core.config import load_config

    rng = random.Random(11)
    lake = tmp_path / "lake"
    path = str(lake / "recommendations")
    users = [f"u{k}" for k in range(40)]
    write_deltalake(
        path,
        recommendation_table(random_rows(rng, users, 0)),
        configuration={"delta.enableChangeDataFeed": "true"},
    )
    config = load_config(None, [f"lake.root={lake}", "catalog.path=null"], environ={})
    service = LookupService(config)

    def check(kind: str) -> None:
        service.poll()
        table = DeltaTable(path)
        assert service.recommendations.health.loaded_version == table.version()
        assert service.recommendations.health.last_reload is not None
        assert service.recommendations.health.last_reload.kind == kind
        vocab = Vocabularies()
        fresh = lists_of(arrow_table(query(table, f"SELECT * FROM {TABLE}")), vocab)
        held = service.recommendations.state
        assert held is not None and (held.keys, held.rows) == (fresh.keys, fresh.rows)
        for user in [*users, "new"]:
            mine, theirs = answer(held, service.vocab, user), answer(fresh, vocab, user)
            assert mine == theirs, (kind, user)

    check("full")
    table = DeltaTable(path)
    table.delete("user_id = 'u1' OR user_id = 'u2'")
    write_deltalake(path, recommendation_table(random_rows(rng, ["u1", "u2", "new"], 1)), mode="append")
    check("incremental")
    DeltaTable(path).delete("user_id = 'u3'")
    check("incremental")
    DeltaTable(path).optimize.compact()
    DeltaTable(path).create_checkpoint()
    check("incremental")
    assert service.recommendations.health.reloads == {"full": 1, "incremental": 3}
    write_deltalake(path, recommendation_table(random_rows(rng, users[:5], 2)), mode="overwrite")
    check("full")

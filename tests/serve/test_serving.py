"""Serving rules: cold start sources, business rules, new-item slots, explanations, full N rows."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.cli import main
from recspark.core.catalog import read_catalog
from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.registry import TrackingError, configure_mlflow
from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS, Lake, any_of
from recspark.model.candidates.lists import assemble_lists
from recspark.model.candidates.sources import fallback_popularity
from recspark.model.training.train import TrainResult, train
from recspark.ops.maintenance import maintain
from recspark.ops.quality.gate import gate_for
from recspark.serve.publish import build_recommendations, load_champion, publish_recommendations, recommend
from recspark.serve.refresh import merge_user_rows, run_refresh
from tests.conftest import config_under, copy_shop
from tests.core.test_registry import register_versions


def test_fallback_prefers_trending_items_and_falls_back_to_popular(
    spark: SparkSession, tmp_path: Path
) -> None:
    now = datetime(2026, 11, 20)
    old = now - timedelta(days=30)
    rows = [
        ("u1", "a", old), ("u2", "a", old), ("u3", "a", old), ("u4", "a", old),
        ("u1", "b", now), ("u2", "b", now - timedelta(days=2)),
        ("u3", "c", now - timedelta(days=6)),
    ]  # fmt: skip
    interactions = spark.createDataFrame(
        [(u, i, t, 1.0) for u, i, t in rows],
        "user_id string, item_id string, last_event_time timestamp, strength double",
    )
    eligible = interactions.select("item_id").distinct()
    items, source = fallback_popularity(interactions, eligible, now, trending_days=7, top_n=2)
    assert source == "trending"
    assert {r["item_id"]: r["popularity"] for r in items.collect()} == {"b": 2.0, "c": 1.0}

    items, source = fallback_popularity(interactions, eligible, now, trending_days=7, top_n=3)
    assert source == "popular"
    assert {r["item_id"]: r["popularity"] for r in items.collect()} == {"a": 4.0, "b": 2.0, "c": 1.0}


def _rows_by_user(frame: DataFrame) -> dict[str, list[Row]]:
    by_user: dict[str, list[Row]] = {}
    for row in frame.orderBy("user_id", "rank").collect():
        by_user.setdefault(row["user_id"], []).append(row)
    return by_user


def test_assemble_lists_caps_categories_reserves_new_item_slots_and_keeps_n_rows(spark: SparkSession) -> None:
    rows = [
        # user u: ALS prefers three items of category A; popular offers A and B items.
        ("u", "a1", 1, 0.9, "als", "A", "h1"),
        ("u", "a2", 2, 0.8, "als", "A", "h1"),
        ("u", "a3", 3, 0.7, "als", "A", "h2"),
        ("u", "b1", 4, 0.6, "als", "B", "h2"),
        ("u", "a1", 1, 50.0, "popular", "A", None),  # offered twice: stays an ALS row
        ("u", "c1", 2, 40.0, "popular", "C", None),
        ("u", "n1", 1, 0.5, "new_item", "B", None),
        # user v: only category A exists for them: the cap gives way rather than a short list.
        ("v", "a1", 1, 0.9, "als", "A", "h3"),
        ("v", "a2", 2, 0.8, "als", "A", "h3"),
        ("v", "a3", 3, 0.7, "als", "A", "h3"),
    ]
    candidates = spark.createDataFrame(
        rows,
        "user_id string, item_id string, rank int, score double, source string, category string, "
        "because_item_id string",
    )
    lists = _rows_by_user(assemble_lists(candidates, n=3, max_per_category=1, new_item_slots=1))
    u = lists["u"]
    assert [(r["rank"], r["item_id"], r["source"]) for r in u] == [
        (1, "a1", "als"),
        (2, "b1", "als"),
        (3, "n1", "new_item"),  # the reserved slot, though category B is then at 2 > cap
    ]
    assert u[0]["because_item_id"] == "h1" and u[2]["because_item_id"] is None
    assert [r["item_id"] for r in lists["v"]] == ["a1", "a2", "a3"]
    scores = [r["score"] for r in u]
    assert scores == sorted(scores, reverse=True)

    uncapped = _rows_by_user(assemble_lists(candidates, n=4, max_per_category=0, new_item_slots=0))
    assert [r["item_id"] for r in uncapped["u"]] == ["a1", "a2", "a3", "b1"]
    capped = _rows_by_user(assemble_lists(candidates, n=4, max_per_category=1, new_item_slots=0))
    assert [r["item_id"] for r in capped["u"]] == ["a1", "b1", "c1", "a2"]  # c1 fills before over-cap a2


def _with_serve(config: Config, **changes: Any) -> Config:
    return replace(config, serve=replace(config.serve, **changes))


def test_business_rules_hold_and_every_user_keeps_n_rows(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult]
) -> None:
    config, _ = trained_shop
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    n = config.serve.top_n
    interactions = lake.read(spark, INTERACTIONS)
    catalog = {r["item_id"]: r["category"] for r in read_catalog(spark, config.catalog.path).collect()}
    served = lake.read(spark, RECOMMENDATIONS)
    favourite = served.groupBy("item_id").count().orderBy(F.desc("count"), "item_id").first()["item_id"]
    als_scores = sorted(r["score"] for r in served.where("source = 'als'").collect())
    min_score = als_scores[len(als_scores) // 2]  # the median: about half the ALS rows must go
    ruled = _with_serve(
        config,
        max_per_category=1,
        min_score=min_score,
        exclude_items=[favourite],
        exclude_viewed_days=3.0,
    )
    lists = _rows_by_user(build_recommendations(spark, ruled, lake, champion))

    newest = interactions.agg(F.max("last_event_time")).first()[0]
    recently_viewed = {
        (r["user_id"], r["item_id"])
        for r in interactions.where(
            (F.col("view_count") > 0) & (F.col("last_event_time") >= newest - timedelta(days=3))
        ).collect()
    }
    assert recently_viewed  # the rule has something to do
    history: dict[str, set[str]] = {}
    for r in interactions.where("strength > 0").collect():
        history.setdefault(r["user_id"], set()).add(r["item_id"])
    users = {r["user_id"] for r in interactions.select("user_id").distinct().collect()}
    assert set(lists) == users
    for user, rows in lists.items():
        assert [r["rank"] for r in rows] == list(range(1, n + 1)), user
        items = [r["item_id"] for r in rows]
        assert favourite not in items
        assert not {(user, i) for i in items} & recently_viewed
        categories = [catalog[i] for i in items]
        assert len(categories) == len(set(categories)), (user, categories)
        for r in rows:
            if r["source"] == "als":
                assert r["score"] >= min_score
                assert r["because_item_id"] in history[user]
            else:
                assert r["because_item_id"] is None
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    sources = {r["source"] for rows in lists.values() for r in rows}
    assert {"als", "trending"} <= sources or {"als", "popular"} <= sources


@pytest.mark.slow
def test_lists_are_the_same_when_the_catalogue_is_scored_in_item_blocks(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult]
) -> None:
    """A catalogue larger than serve.max_items_per_block is scored one item block at a time
    (model, popularity fallbacks, explanations): the published lists must not change."""
    config, _ = trained_shop
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    whole = _rows_by_user(build_recommendations(spark, config, lake, champion))
    blocked = _rows_by_user(
        build_recommendations(spark, _with_serve(config, max_items_per_block=7), lake, champion)
    )
    assert set(blocked) == set(whole)
    for user, rows in whole.items():
        got = blocked[user]
        assert [(r["rank"], r["item_id"], r["source"], r["because_item_id"]) for r in got] == [
            (r["rank"], r["item_id"], r["source"], r["because_item_id"]) for r in rows
        ], user
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in rows], rel=1e-5)
    assert any(r["source"] == "als" for rows in blocked.values() for r in rows)


def test_cold_start_sources_and_new_item_slots(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config, _ = trained_shop
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    n = config.serve.top_n
    interactions = lake.read(spark, INTERACTIONS)
    newest = interactions.agg(F.max("last_event_time")).first()[0]
    catalog_rows = Path(config.catalog.path).read_text().splitlines()
    categories = sorted({json.loads(line)["category"] for line in catalog_rows})
    fresh = {"brand-new-1": categories[0], "brand-new-2": categories[1]}
    catalog_path = tmp_path / "catalog.jsonl"
    catalog_path.write_text(
        "\n".join(catalog_rows)
        + "\n"
        + "".join(
            json.dumps(
                {"item_id": i, "title": i, "category": c, "price": 1.0, "available": True,
                 "updated_at": newest.isoformat() + "Z"}
            ) + "\n"
            for i, c in fresh.items()
        )
    )  # fmt: skip
    known = sorted(
        r["count"] for r in interactions.where("strength > 0").groupBy("user_id").count().collect()
    )
    threshold = known[len(known) // 5]  # about a fifth of the users count as cold
    rules = _with_serve(
        replace(config, catalog=replace(config.catalog, path=str(catalog_path))),
        min_history=threshold,
        new_item_share=0.4,
    )
    lists = _rows_by_user(build_recommendations(spark, rules, lake, champion))

    catalog = {r["item_id"]: r["category"] for r in read_catalog(spark, str(catalog_path)).collect()}
    strength: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for r in interactions.where("strength > 0").collect():
        by_category = strength.setdefault(r["user_id"], {})
        by_category[catalog[r["item_id"]]] = by_category.get(catalog[r["item_id"]], 0.0) + r["strength"]
        counts[r["user_id"]] = counts.get(r["user_id"], 0) + 1
    # Category sources draw from a user's train.favourite_categories strongest categories.
    touched = {
        user: set(sorted(by, key=lambda c: (-by[c], c))[: config.train.favourite_categories])
        for user, by in strength.items()
    }
    new_rows = 0
    for user, rows in lists.items():
        assert len(rows) == n
        sources = [r["source"] for r in rows]
        if counts.get(user, 0) < threshold:
            assert "als" not in sources, user
        for r in rows:
            if r["source"] in ("category_popular", "new_item"):
                assert catalog[r["item_id"]] in touched[user], (user, r)
        new_ranks = [r["rank"] for r in rows if r["source"] == "new_item"]
        assert new_ranks == list(range(n - len(new_ranks) + 1, n + 1))  # the last slots
        assert len(new_ranks) <= 2 or len([s for s in sources if s != "new_item"]) < n - 2
        if touched.get(user, set()) & set(fresh.values()):
            assert new_ranks, user  # a user of those categories sees new items
        new_rows += len(new_ranks)
    assert new_rows
    served = {r["item_id"] for rows in lists.values() for r in rows}
    assert set(fresh) <= served  # items without factors reach users through their category
    cold_sources = {r["source"] for u, rows in lists.items() if counts.get(u, 0) < threshold for r in rows}
    assert "category_popular" in cold_sources


def _published(spark: SparkSession, users: int, n: int, version: str) -> DataFrame:
    return (
        spark.range(users * n)
        .repartition(4)
        .select(
            F.format_string("u%05d", (F.col("id") / n).cast("int")).alias("user_id"),
            ((F.col("id") % n) + 1).cast("int").alias("rank"),
            F.format_string("i%03d", (F.col("id") % 97).cast("int")).alias("item_id"),
            (F.lit(1.0) / (F.col("id") % n + 1)).alias("score"),
            F.lit("als").alias("source"),
            F.lit(version).alias("model_version"),
            F.current_timestamp().alias("generated_at"),
            F.lit(None).cast("string").alias("because_item_id"),
        )
    )


def test_full_refresh_is_atomic_for_a_concurrent_reader(spark: SparkSession, tmp_path: Path) -> None:
    lake = Lake.at(str(tmp_path / "lake"))
    lake.ensure(spark, RECOMMENDATIONS)
    users, n = 3000, 5
    publish_recommendations(lake, _published(spark, users, n, "1"), 0)
    done = threading.Event()
    seen: list[tuple[set[tuple[str, datetime]], int, int]] = []
    failures: list[BaseException] = []

    def read_until_done() -> None:
        try:
            while True:
                finished = done.is_set()
                summary = (
                    lake.read(spark, RECOMMENDATIONS)
                    .groupBy("user_id")
                    .agg(
                        F.count(F.lit(1)).alias("rows"),
                        F.collect_set(F.struct("model_version", "generated_at")).alias("versions"),
                    )
                    .collect()
                )
                versions = {(v["model_version"], v["generated_at"]) for r in summary for v in r["versions"]}
                seen.append((versions, len(summary), min(r["rows"] for r in summary)))
                first_read.set()
                if finished:
                    return
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)
            first_read.set()

    first_read = threading.Event()
    reader = threading.Thread(target=read_until_done)
    reader.start()
    first_read.wait(timeout=120)  # the reader has seen the old version before the refresh starts
    try:
        for version in ("2", "3"):
            publish_recommendations(lake, _published(spark, users, n, version), 0)
    finally:
        done.set()
        reader.join(timeout=300)
    assert not failures, failures
    assert len(seen) >= 2
    for versions, user_count, fewest_rows in seen:
        assert len(versions) == 1, versions  # one publish per read, never a mix
        assert user_count == users and fewest_rows == n  # and complete
    assert next(iter(seen[0][0]))[0] == "1" and next(iter(seen[-1][0]))[0] == "3"  # old, then new


def test_an_older_serving_table_gets_the_because_item_id_column(spark: SparkSession, tmp_path: Path) -> None:
    lake = Lake.at(str(tmp_path / "lake"))
    old_schema = T.StructType([f for f in RECOMMENDATIONS.schema if f.name != "because_item_id"])
    old = _published(spark, 2, 3, "1").drop("because_item_id")
    spark.createDataFrame(old.collect(), old_schema).write.format("delta").save(
        lake.path(RECOMMENDATIONS.name)
    )

    lake.ensure(spark, RECOMMENDATIONS)
    table = lake.read(spark, RECOMMENDATIONS)
    assert "because_item_id" in table.columns
    assert table.count() == 6 and table.where(F.col("because_item_id").isNotNull()).count() == 0
    fresh = _published(spark, 1, 3, "2").withColumn("because_item_id", F.lit("i001"))
    merge_user_rows(spark, lake, fresh, fresh.select("user_id").distinct())  # what refresh does
    merged = lake.read(spark, RECOMMENDATIONS)
    assert merged.count() == 6
    assert {r["because_item_id"] for r in merged.where("user_id = 'u00000'").collect()} == {"i001"}
    publish_recommendations(lake, _published(spark, 4, 3, "3"), 0)  # and what a full refresh does
    assert lake.read(spark, RECOMMENDATIONS).count() == 12


@pytest.fixture
def six_files_per_write(spark: SparkSession) -> Iterator[None]:
    """Writes after a shuffle make six files, however small (as a large table would)."""
    keys = {"spark.sql.shuffle.partitions": "6", "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    before = {key: spark.conf.get(key) for key in keys}
    for key, value in keys.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


@pytest.mark.slow
def test_a_full_publish_clusters_users_so_a_lookup_reads_only_their_files(
    spark: SparkSession, tmp_path: Path, six_files_per_write: None
) -> None:
    lake = Lake.at(str(tmp_path / "lake"))
    lake.ensure(spark, RECOMMENDATIONS)
    publish_recommendations(lake, _published(spark, 600, 3, "1"), 0)
    table = lake.read(spark, RECOMMENDATIONS)
    assert len(table.inputFiles()) == 6
    assert len(table.where(F.col("user_id") == "u00007").inputFiles()) == 1
    # Two users far apart: Delta reads IN as one min..max range (every file between them), the
    # OR of equalities that any_of builds as two points.
    apart = ["u00003", "u00590"]
    assert len(table.where(F.col("user_id").isin(apart)).inputFiles()) == 6
    assert len(table.where(any_of(F.col("user_id"), apart)).inputFiles()) == 2
    assert table.where(any_of(F.col("user_id"), [*apart, "u00300"])).count() == 9

    # A refresh appends a file spanning its users' range; maintain's Z-order restores the layout.
    fresh = _published(spark, 600, 3, "2").where(F.col("user_id").isin(apart))
    merge_user_rows(spark, lake, fresh, fresh.select("user_id").distinct())
    lookup = lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == "u00007")
    assert len(lookup.inputFiles()) > 1
    maintain(spark, lake, retention_hours=168)
    assert len(lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == "u00007").inputFiles()) == 1
    assert lake.read(spark, RECOMMENDATIONS).count() == 1800


@pytest.mark.parametrize("skip_files_up_to", [0, 2, 64])
def test_a_refresh_merge_replaces_only_its_users_rows_with_or_without_naming_them(
    spark: SparkSession, tmp_path: Path, six_files_per_write: None, skip_files_up_to: int
) -> None:
    lake = Lake.at(str(tmp_path / "lake"))
    lake.ensure(spark, RECOMMENDATIONS)
    publish_recommendations(lake, _published(spark, 600, 3, "1"), 0)
    fresh = _published(spark, 600, 2, "2").where(F.col("user_id").isin("u00003", "u00590", "u00300"))
    merge_user_rows(spark, lake, fresh, fresh.select("user_id").distinct(), skip_files_up_to)
    table = lake.read(spark, RECOMMENDATIONS)
    versions = {
        (r["user_id"], r["model_version"]): r["rows"]
        for r in table.groupBy("user_id", "model_version").agg(F.count(F.lit(1)).alias("rows")).collect()
    }
    assert len(versions) == 600
    assert all(versions[(u, "2")] == 2 for u in ("u00003", "u00590", "u00300"))
    assert sum(rows for (_, version), rows in versions.items() if version == "1") == 597 * 3


def _serving_state(spark: SparkSession, lake: Lake) -> tuple[int, list[Row]]:
    """The serving table's Delta version and rows (what a refused publish must leave alone)."""
    rows = lake.read(spark, RECOMMENDATIONS).select("user_id", "rank", "item_id", "model_version")
    return lake.version(spark, RECOMMENDATIONS), sorted(rows.collect())


def _cli(config: Config, *flags: str) -> list[str]:
    settings = [
        f"lake.root={config.lake.root}",
        f"catalog.path={config.catalog.path}",
        f"mlflow.tracking_uri={config.mlflow.tracking_uri}",
        f"mlflow.model_name={config.mlflow.model_name}",
        f"serve.top_n={config.serve.top_n}",
    ]
    return [*flags, *(arg for setting in settings for arg in ("--set", setting))]


@pytest.mark.slow
def test_a_model_name_the_registry_does_not_know_stops_recommend_and_train_until_a_reset(
    spark: SparkSession,
    shop: Config,
    trained: TrainResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A typo in mlflow.model_name reads as "no champion": it must not replace the champion's
    lists with fallback lists, nor let train promote without comparison."""
    config = copy_shop(shop, tmp_path, "mlflow.model_name=typo")
    lake = Lake.at(config.lake.root)
    before = _serving_state(spark, lake)
    assert {r["model_version"] for r in before[1]} == {trained.model_version}

    with pytest.raises(TrackingError) as raised:
        recommend(spark, config, lake, gate=no_gate)
    message = str(raised.value)
    assert f"version {trained.model_version} of model 'typo'" in message
    assert config.mlflow.tracking_uri in message and "--reset-serving" in message
    assert _serving_state(spark, lake) == before

    with pytest.raises(TrackingError, match="model 'typo'"):
        train(spark, config, lake, gate=no_gate)
    configure_mlflow(config.mlflow)
    assert MlflowClient().search_model_versions("name='typo'") == []  # nothing registered

    assert main(["recommend", *_cli(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("recspark recommend: error: ")
    assert _serving_state(spark, lake) == before

    # A deliberate reset: fallback lists for everyone, no model version.
    assert main(["recommend", *_cli(config, "--reset-serving")]) == 0
    served = lake.read(spark, RECOMMENDATIONS)
    assert served.where(F.col("model_version").isNotNull()).count() == 0
    per_user = served.groupBy("user_id").count()
    assert per_user.count() == len({r["user_id"] for r in before[1]})
    assert per_user.where(F.col("count") != config.serve.top_n).count() == 0
    recommend(spark, config, lake, gate=no_gate)  # nothing unknown is served any more


def test_another_tracking_store_with_the_same_model_version_is_not_the_lakes_model(
    spark: SparkSession, shop: Config, trained: TrainResult, tmp_path: Path
) -> None:
    """Another store may well hold version 1 of a model of the same name: the lake's model
    tables name the run that version came from, and the registry must agree."""
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    config = copy_shop(shop, tmp_path, f"mlflow.tracking_uri={other}")
    register_versions(config, int(trained.model_version))
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, "champion", trained.model_version)
    lake = Lake.at(config.lake.root)
    before = _serving_state(spark, lake)

    for publish in (recommend, run_refresh):
        with pytest.raises(TrackingError) as raised:
            publish(spark, config, lake, **({"once": True} if publish is run_refresh else {}), gate=no_gate)
        message = str(raised.value)
        assert f"version {trained.model_version} of model '{config.mlflow.model_name}'" in message
        assert trained.run_id in message and other in message
        assert _serving_state(spark, lake) == before


@pytest.mark.slow
def test_lists_are_filled_from_every_eligible_item_when_the_popular_ones_run_out(
    spark: SparkSession, tmp_path: Path
) -> None:
    """A user who bought all but one of the items anyone interacted with still gets N rows, from
    the catalog items nobody touched yet (source all_items: by popularity, then item id); a user
    with fewer eligible items left than N gets all of them, and the gate accepts that list."""
    catalog = tmp_path / "catalog.jsonl"
    items = {"p1": "k", "p2": "k", "p3": "k", "p4": "m", "z3": "m", "z1": "m", "z2": "k"}
    catalog.write_text("".join(json.dumps({"item_id": i, "category": c}) + "\n" for i, c in items.items()))
    config = config_under(
        tmp_path,
        "serve.top_n=4",
        "serve.trending_days=0",
        "quality.data_docs=false",
        f"catalog.path={catalog}",
    )
    lake = Lake.at(config.lake.root)
    now = datetime(2026, 11, 20)
    crowd = [(f"c{n}", item, 0) for n in range(4) for item in ("p1", "p2", "p3", "p4")[: 4 - n]]
    bought = [("u", item, 1) for item in ("p1", "p2", "p3")]
    bought += [("v", item, 1) for item in ("p1", "p2", "p3", "p4")]
    rows = [
        (user, item, 1, 0, 0, purchases, 0, None, now, now, 1.0 + 5 * purchases, 1.0 + 5 * purchases, now)
        for user, item, purchases in crowd + bought
    ]
    lake.ensure(spark, INTERACTIONS)
    spark.createDataFrame(rows, INTERACTIONS.schema).write.format("delta").mode("append").save(
        lake.path(INTERACTIONS.name)
    )

    recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"))

    lists = _rows_by_user(lake.read(spark, RECOMMENDATIONS))
    assert [(r["item_id"], r["source"]) for r in lists["u"]] == [
        ("p4", "popular"),
        ("z1", "all_items"),
        ("z2", "all_items"),
        ("z3", "all_items"),
    ]
    # v bought every item with interactions: three eligible items are left, and v gets them.
    assert [(r["item_id"], r["source"]) for r in lists["v"]] == [(z, "all_items") for z in ("z1", "z2", "z3")]
    assert all(len(served) == 4 for user, served in lists.items() if user.startswith("c"))
    for served in lists.values():
        assert [r["score"] for r in served] == sorted((r["score"] for r in served), reverse=True)

"""Fresh recommendations between retrains: fold-in, incremental MERGE, full refresh on a new champion."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import read_catalog
from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.registry import TrackingError, champion_version, configure_mlflow, promote
from recspark.core.tables import INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, Lake
from recspark.ingest.stream import run_ingest
from recspark.model.candidates.sources import newest_event_time
from recspark.model.training.train import TrainResult, train
from recspark.ops.quality.gate import gate_for
from recspark.serve.publish import load_champion, recommend
from recspark.serve.refresh import QUERY_NAME as REFRESH_QUERY
from recspark.serve.refresh import (
    RefreshBatchWriter,
    folded_in_vectors,
    refresh_users,
    run_refresh,
    start_refresh,
)
from tests.conftest import copy_shop, nothing_cached
from tests.kafka_broker import free_port
from tests.ops.test_concurrency import _a_change_waiting_for_refresh, _event, _land


@pytest.mark.parametrize("max_items_per_block", [100_000, 7])  # broadcast, or joined in item blocks
def test_fold_in_reproduces_als_user_factors(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], max_items_per_block: int
) -> None:
    config, _ = trained_shop
    config = replace(config, serve=replace(config.serve, max_items_per_block=max_items_per_block))
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    interactions = lake.read(spark, INTERACTIONS)
    users = interactions.select("user_id").distinct().orderBy("user_id").limit(40)
    theirs = interactions.join(users, "user_id")
    folded = {
        r["user_id"]: np.array(r["features"])
        for r in folded_in_vectors(config, champion, theirs, newest_event_time(interactions)).collect()
    }
    user_factors = champion.model.user_factors
    trained = {r["user_id"]: np.array(r["features"]) for r in user_factors.join(users, "user_id").collect()}
    assert len(folded) == len(trained) == 40
    for user, vector in trained.items():
        np.testing.assert_allclose(folded[user], vector, rtol=2e-3, atol=2e-4 * np.abs(vector).max())


def _event_line(event_id: str, user: str, item: str, kind: str, time: str) -> str:
    return json.dumps(
        {"event_id": event_id, "event_time": time, "user_id": user, "item_id": item, "event_type": kind}
    )


@pytest.mark.slow
def test_refresh_touches_only_active_users_and_follows_the_champion(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    n = config.serve.top_n
    run_refresh(spark, config, lake, once=True, gate=no_gate)  # starts following the change feed
    before = {
        (r["user_id"], r["rank"]): (r["item_id"], r["generated_at"])
        for r in lake.read(spark, RECOMMENDATIONS).collect()
    }
    users = sorted({u for u, _ in before})
    items = [r[0] for r in lake.read(spark, ITEM_IDS).orderBy("item_idx").limit(6).collect()]
    last = newest_event_time(lake.read(spark, INTERACTIONS))
    when = (last.replace(microsecond=0)).isoformat() + "Z"
    active = [users[0], users[1], "brand-new-user"]
    lines = [
        _event_line(f"fresh-{i}", user, item, kind, when)
        for i, (user, item, kind) in enumerate(
            [
                (active[0], items[0], "purchase"),
                (active[1], items[1], "add_to_cart"),
                (active[2], items[2], "view"),
                (active[2], items[3], "add_to_cart"),
                (active[2], items[4], "purchase"),
            ]
        )
    ]
    Path(config.ingest.path, "events-fresh.jsonl").write_text("\n".join(lines) + "\n")
    run_ingest(spark, config, lake, once=True)
    run_refresh(spark, config, lake, once=True, gate=no_gate)

    history = lake.delta(spark, RECOMMENDATIONS).history(1).first()
    assert history["operation"] == "MERGE"
    metrics = history["operationMetrics"]
    # The active users' lists are replaced; nobody else's rows are rewritten or deleted.
    assert int(metrics["numTargetRowsDeleted"]) == (len(active) - 1) * n  # the new user had none
    assert int(metrics["numTargetRowsInserted"]) == len(active) * n
    assert int(metrics["numTargetRowsUpdated"]) == 0 and int(metrics["numTargetRowsCopied"]) == 0

    after = lake.read(spark, RECOMMENDATIONS)
    untouched = {
        (r["user_id"], r["rank"]): (r["item_id"], r["generated_at"])
        for r in after.where(~F.col("user_id").isin(active)).collect()
    }
    assert untouched == {k: v for k, v in before.items() if k[0] not in active}
    new_user = after.where(F.col("user_id") == "brand-new-user").collect()
    assert len(new_user) == n and {r["source"] for r in new_user} == {"als"}
    assert items[4] not in {r["item_id"] for r in new_user}  # just purchased
    assert items[0] not in {r["item_id"] for r in after.where(F.col("user_id") == active[0]).collect()}

    # A new champion (an operator promotes another version) means a full refresh.
    configure_mlflow(config.mlflow)
    champion = str(champion_version(config.mlflow).version)
    versions = MlflowClient().search_model_versions(f"name='{config.mlflow.model_name}'")
    other = next((str(v.version) for v in versions if str(v.version) != champion), None)
    if other is None:  # run alone: register a second version by retraining
        other = train(spark, config, lake, gate=no_gate).model_version
    promote(spark, lake, config.mlflow, other, "test: switch champion")
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    served = lake.read(spark, RECOMMENDATIONS)
    assert {r[0] for r in served.select("model_version").distinct().collect()} == {other}
    assert lake.delta(spark, RECOMMENDATIONS).history(1).first()["operation"] in (
        "WRITE",
        "CREATE OR REPLACE TABLE",
    )
    per_user = served.groupBy("user_id").count()
    assert per_user.where(F.col("count") != n).count() == 0


def test_refresh_applies_the_same_rules_as_the_full_publish(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    n = config.serve.top_n
    served = lake.read(spark, RECOMMENDATIONS)
    users = spark.createDataFrame(
        served.where("source = 'als'").select("user_id").distinct().orderBy("user_id").limit(8).collect(),
        "user_id string",
    )  # fixed now: the table changes under the test
    favourite = served.groupBy("item_id").count().orderBy(F.desc("count"), "item_id").first()["item_id"]
    ruled = replace(config, serve=replace(config.serve, max_per_category=1, exclude_items=[favourite]))
    categories = {r["item_id"]: r["category"] for r in read_catalog(spark, config.catalog.path).collect()}
    history: dict[str, set[str]] = {}
    for r in lake.read(spark, INTERACTIONS).join(users, "user_id").where("strength > 0").collect():
        history.setdefault(r["user_id"], set()).add(r["item_id"])
    refresh_users(spark, ruled, lake, champion, users)
    refreshed = lake.read(spark, RECOMMENDATIONS).join(users, "user_id").collect()
    lists: dict[str, list] = {}
    for r in refreshed:
        lists.setdefault(r["user_id"], []).append(r)
    assert len(lists) == 8
    for user, rows in lists.items():
        assert sorted(r["rank"] for r in rows) == list(range(1, n + 1))
        items = [r["item_id"] for r in rows]
        assert favourite not in items
        assert len({categories[i] for i in items}) == n, user  # the category cap of 1
        for r in rows:
            if r["source"] == "als":
                assert r["because_item_id"] in history[user]
    per_user = lake.read(spark, RECOMMENDATIONS).groupBy("user_id").count()
    assert per_user.where(F.col("count") != n).count() == 0


def test_a_refresh_leaves_nothing_cached(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    # The refresh stream runs for weeks: whatever one batch leaves cached stays for good.
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    users = lake.read(spark, INTERACTIONS).select("user_id").distinct().orderBy("user_id").limit(20)
    spark.catalog.clearCache()  # whatever the fixtures left: the test measures refresh alone
    assert refresh_users(spark, config, lake, champion, users) == 20
    assert lake.read(spark, RECOMMENDATIONS).join(users, "user_id").select("user_id").distinct().count() == 20
    assert nothing_cached(spark)


@pytest.mark.slow
def test_a_lower_top_n_republishes_every_list_at_the_new_length(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    shorter = replace(config, serve=replace(config.serve, top_n=config.serve.top_n - 3))
    # The champion's full lists are published: only the shorter N can make the refresh republish.
    run_refresh(spark, shorter, lake, once=True, gate=no_gate)
    assert lake.delta(spark, RECOMMENDATIONS).history(1).first()["operation"] in (
        "WRITE",
        "CREATE OR REPLACE TABLE",
    )
    lengths = lake.read(spark, RECOMMENDATIONS).groupBy("user_id").agg(F.max("rank").alias("longest"))
    assert {r["longest"] for r in lengths.select("longest").distinct().collect()} == {shorter.serve.top_n}


def _refresh_writer(
    spark: SparkSession, shop: Config, tmp_path: Path
) -> tuple[Config, Lake, RefreshBatchWriter, str, str]:
    """A copy of the shop with its serving table published by the champion, a refresh batch
    writer on it (as the running query holds one), and its first user and one of their items."""
    config = copy_shop(shop, tmp_path / "shop")
    lake = Lake.at(config.lake.root)
    run_refresh(spark, config, lake, once=True, gate=no_gate)  # the champion's table: batches refresh users
    checkpoint = str(tmp_path / "checkpoint")  # a real query's checkpoint, for the writer's txnAppId
    spark.readStream.format("delta").load(lake.path(INTERACTIONS.name)).writeStream.format("noop").option(
        "checkpointLocation", checkpoint
    ).trigger(availableNow=True).start().awaitTermination()
    writer = RefreshBatchWriter(config, lake, checkpoint, no_gate)
    user, item = (
        lake.read(spark, INTERACTIONS).select("user_id", "item_id").orderBy("user_id", "item_id").first()
    )
    return config, lake, writer, user, item


def _batch_after_a_view(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    writer: RefreshBatchWriter,
    user: str,
    item: str,
    batch_id: int,
) -> None:
    """One more view of ``item`` by ``user``, a minute after the newest event, ingested; then the
    writer's batch ``batch_id`` over its change (as the running query would call it)."""
    newest = newest_event_time(lake.read(spark, INTERACTIONS)).replace(microsecond=0)
    when = (newest + timedelta(minutes=1)).isoformat() + "Z"
    Path(config.ingest.path, f"events-view-{batch_id}.jsonl").write_text(
        _event_line(f"view-{batch_id}", user, item, "view", when) + "\n"
    )
    version = lake.version(spark, INTERACTIONS) + 1
    run_ingest(spark, config, lake, once=True)
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", version)
        .load(lake.path(INTERACTIONS.name))
    )
    writer(changes, batch_id)


def test_a_running_refresh_fires_on_its_own_trigger_not_the_ingest_one(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    """serve.trigger_seconds paces the running refresh; ingest.trigger_seconds paces ingest."""
    config = copy_shop(trained_shop[0], tmp_path, "ingest.trigger_seconds=7", "serve.trigger_seconds=42")
    query = start_refresh(spark, config, Lake.at(config.lake.root), once=False, gate=no_gate)
    try:
        trigger = query._jsq.streamingQuery().trigger().toString()
    finally:
        query.stop()
    assert trigger == "ProcessingTimeTrigger(42000)"


@pytest.mark.slow
def test_a_running_refresh_keeps_now_at_the_newest_event_without_rescanning(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    """The recency rules (trending, recently viewed, decay) measure from the newest event; a
    long-running refresh carries it from batch to batch instead of scanning interactions."""
    config, lake, writer, user, item = _refresh_writer(spark, trained_shop[0], tmp_path)

    def land(name: str, when: datetime, who: str = user) -> int:
        """Ingest one view of ``item`` at ``when``; returns the interactions version it made."""
        line = _event_line(name, who, item, "view", when.isoformat() + "Z")
        Path(config.ingest.path, f"events-{name}.jsonl").write_text(line + "\n")
        run_ingest(spark, config, lake, once=True)
        return lake.version(spark, INTERACTIONS)

    def changes_since(version: int) -> DataFrame:
        return (
            spark.read.format("delta")
            .option("readChangeFeed", "true")
            .option("startingVersion", version)
            .load(lake.path(INTERACTIONS.name))
        )

    newest = newest_event_time(lake.read(spark, INTERACTIONS)).replace(microsecond=0)
    first = newest + timedelta(minutes=1)
    writer(changes_since(land("later-0", first)), 0)  # the first batch reads the table once
    assert writer.as_of == first
    # A change the writer is never shown (as if ingested before the stream's start): a writer that
    # rescanned the table would see its later time; one that carries "now" from its batches does not.
    land("unseen", newest + timedelta(hours=2), who="someone-else")
    second = newest + timedelta(minutes=2)
    writer(changes_since(land("later-1", second)), 1)
    assert writer.as_of == second
    assert lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).count() == config.serve.top_n


@pytest.mark.slow
def test_a_running_refresh_ranks_the_shop_once_per_period_and_applies_availability_every_batch(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path, caplog
) -> None:
    """Eligible items, trending, popularity and new items follow all interactions: a long-running
    refresh ranks them once per ``serve.rankings_refresh_minutes``, not in every batch (whose
    cost would then follow the shop). The catalog still reaches every batch: an item out of stock,
    or whose catalog line broke, leaves a refreshed list at once."""
    config, lake, writer, user, item = _refresh_writer(spark, trained_shop[0], tmp_path)

    def refresh_after_a_view(batch_id: int) -> list[str]:
        """One more view by ``user`` ingested, the writer's batch over its change; the list."""
        _batch_after_a_view(spark, config, lake, writer, user, item, batch_id)
        rows = lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).orderBy("rank").collect()
        return [r["item_id"] for r in rows]

    def rankings_built() -> int:
        return sum("shop-wide rankings built" in r.getMessage() for r in caplog.records)

    caplog.set_level(logging.INFO, logger="recspark.serve.refresh")
    caplog.clear()  # run_refresh's own query above ranked the shop for its batch
    first = refresh_after_a_view(0)
    assert len(first) == config.serve.top_n and rankings_built() == 1
    # The list's top item goes out of stock: the next batch drops it without ranking again.
    catalog = Path(config.catalog.path)
    records = [json.loads(line) for line in catalog.read_text().splitlines()]
    for record in records:
        if record["item_id"] == first[0]:
            record["available"] = False
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    second = refresh_after_a_view(1)
    assert first[0] not in second and len(second) == config.serve.top_n
    assert rankings_built() == 1
    # The next top item's catalog line breaks: the catalog no longer vouches for it, so it goes too.
    lines = catalog.read_text().splitlines()
    broken = [line[:-1] if json.loads(line)["item_id"] == second[0] else line for line in lines]
    catalog.write_text("".join(line + "\n" for line in broken))
    third = refresh_after_a_view(2)
    assert second[0] not in third and len(third) == config.serve.top_n
    assert rankings_built() == 1
    # Once the period is over, the next batch ranks the shop again.
    writer.config = config.with_overrides(["serve.rankings_refresh_minutes=0.0001"])
    refresh_after_a_view(3)
    assert rankings_built() == 2


@pytest.mark.slow
def test_a_running_refresh_serves_on_with_its_champion_while_the_registry_is_away(
    spark: SparkSession,
    trained_shop: tuple[Config, TrainResult],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry outage (here: the tracking server is down) must not stop the stream: its
    batches refresh the active users with the champion the writer holds, say so once, and ask
    the registry again in the next batch."""
    config, lake, writer, user, item = _refresh_writer(spark, trained_shop[0], tmp_path)
    champion = str(champion_version(config.mlflow).version)
    _batch_after_a_view(spark, config, lake, writer, user, item, 0)  # the writer loads the champion
    caplog.set_level(logging.INFO, logger="recspark.serve.refresh")

    def users_list() -> list[Row]:
        return lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).collect()

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # released: nothing listens there
    try:
        for batch_id in (1, 2):
            before = max(r["generated_at"] for r in users_list())
            _batch_after_a_view(spark, config, lake, writer, user, item, batch_id)
            rows = users_list()
            assert len(rows) == config.serve.top_n
            assert {r["model_version"] for r in rows} == {champion}
            assert min(r["generated_at"] for r in rows) > before
    finally:
        configure_mlflow(config.mlflow)
    away = [r.getMessage() for r in caplog.records if "cannot reach the model registry" in r.getMessage()]
    assert len(away) == 1 and f"champion {champion}" in away[0]
    _batch_after_a_view(spark, config, lake, writer, user, item, 3)
    assert any("model registry answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_an_item_out_of_stock_leaves_the_lists_of_users_who_do_nothing(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    """The refresh rewrites the lists of its active users; an item the catalog takes out of
    stock must leave every list at the next batch, including those of users who did nothing."""
    config, lake, writer, user, item = _refresh_writer(spark, trained_shop[0], tmp_path)
    _batch_after_a_view(spark, config, lake, writer, user, item, 0)  # the catalog as it was
    served = lake.read(spark, RECOMMENDATIONS)
    listed = {r[0] for r in served.select("user_id").distinct().collect()}
    gone = served.groupBy("item_id").count().orderBy(F.desc("count"), "item_id").first()["item_id"]
    holders = {r[0] for r in served.where(F.col("item_id") == gone).select("user_id").distinct().collect()}
    assert holders - {user}, "the item is in the lists of users who stay inactive"
    catalog = Path(config.catalog.path)
    records = [json.loads(line) for line in catalog.read_text().splitlines()]
    for record in records:
        if record["item_id"] == gone:
            record["available"] = False
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))

    _batch_after_a_view(spark, config, lake, writer, user, item, 1)  # only ``user`` is active

    served = lake.read(spark, RECOMMENDATIONS)
    assert served.where(F.col("item_id") == gone).count() == 0
    per_user = {r["user_id"]: r["count"] for r in served.groupBy("user_id").count().collect()}
    assert set(per_user) == listed and set(per_user.values()) == {config.serve.top_n}


@pytest.mark.slow
def test_an_item_item_champion_refreshes_from_fresh_history_without_fold_in(
    spark: SparkSession, item_item_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config = copy_shop(item_item_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    champion = load_champion(spark, config, lake)
    assert champion is not None and champion.family == "ease" and champion.model.item_factors is None
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    weights = champion.model.similarity.toPandas()
    # A newcomer who bought one item: its strongest positive neighbours are their list.
    bought = str(weights.groupby("item_id")["weight"].apply(lambda w: (w > 0).sum()).idxmax())
    last = newest_event_time(lake.read(spark, INTERACTIONS))
    Path(config.ingest.path, "events-new.jsonl").write_text(
        _event_line("new-1", "newcomer", bought, "purchase", last.replace(microsecond=0).isoformat() + "Z")
        + "\n"
    )
    run_ingest(spark, config, lake, once=True)
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    rows = lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == "newcomer").orderBy("rank").collect()
    assert len(rows) == config.serve.top_n and bought not in {r["item_id"] for r in rows}
    unavailable = {r[0] for r in read_catalog(spark, config.catalog.path).where("NOT available").collect()}
    neighbours = weights[(weights["item_id"] == bought) & (weights["weight"] > 0)]
    neighbours = neighbours[~neighbours["similar_item_id"].isin(unavailable | {bought})]
    expected = list(
        neighbours.sort_values(["weight", "similar_item_id"], ascending=[False, True])["similar_item_id"]
    )
    personal = [r for r in rows if r["source"] == "ease"]
    assert [r["item_id"] for r in personal] == expected[: len(personal)] and personal
    assert {r["because_item_id"] for r in personal} == {bought}


@pytest.mark.slow
def test_without_a_champion_every_user_gets_fallback_lists_until_a_model_is_promoted(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    shop = trained_shop[0]
    config = copy_shop(shop, tmp_path, "mlflow.model_name=recspark-never-promoted")
    lake = Lake.at(config.lake.root)
    n = config.serve.top_n
    users = lake.read(spark, INTERACTIONS).select("user_id").distinct().count()

    # The copy's serving table holds the shop's champion's lists, which this model name's
    # registry does not know: replacing them is deliberate.
    recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"), reset_serving=True)
    served = lake.read(spark, RECOMMENDATIONS)
    per_user = served.groupBy("user_id").count()
    assert per_user.count() == users and per_user.where(F.col("count") != n).count() == 0
    assert served.where(F.col("model_version").isNotNull()).count() == 0
    sources = {r[0] for r in served.select("source").distinct().collect()}
    assert "category_popular" in sources and sources <= {"category_popular", "trending", "popular"}

    # A refresh without a champion keeps newcomers served too.
    last = newest_event_time(lake.read(spark, INTERACTIONS))
    item = served.select("item_id").first()[0]
    Path(config.ingest.path, "events-new.jsonl").write_text(
        _event_line("new-1", "newcomer", item, "view", last.replace(microsecond=0).isoformat() + "Z") + "\n"
    )
    run_ingest(spark, config, lake, once=True)
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    assert lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == "newcomer").count() == n

    # A later champion replaces the fallback lists.
    promoted = train(spark, config, lake, gate=no_gate)
    assert promoted.promoted
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    versions = {r[0] for r in lake.read(spark, RECOMMENDATIONS).select("model_version").distinct().collect()}
    assert versions == {promoted.model_version}


@pytest.mark.slow
def test_a_refresh_with_one_batch_behind_it_resumes_from_its_checkpoint_after_a_full_publish(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    """Delta resumes a query whose offset log holds a single batch from its ``startingVersion``
    option rather than its checkpoint. A full publish since that batch reflects newer
    interactions, so a start computed afresh lies past the batch's end: the restart failed with
    DELTA_INVALID_CDC_RANGE on every retry, and the pending change must still be refreshed."""
    config, lake, user = _a_change_waiting_for_refresh(spark, trained_shop[0], tmp_path)
    item = lake.read(spark, ITEM_IDS).select("item_id").first()[0]
    _land(Path(config.ingest.path), "later.jsonl", [_event("later", user, item)])
    run_ingest(spark, config, lake, once=True)  # the batch on record ends two versions back
    recommend(spark, config, lake, gate=no_gate)  # its commit reflects the newest interactions
    published = lake.read(spark, RECOMMENDATIONS).agg(F.max("generated_at")).first()[0]
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    rows = lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).collect()
    assert len(rows) == config.serve.top_n
    assert min(r["generated_at"] for r in rows) > published  # the batch after the one on record


@pytest.mark.slow
def test_a_refresh_query_without_its_checkpoint_resumes_where_the_serving_table_left_off(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    config = copy_shop(trained_shop[0], tmp_path)
    lake = Lake.at(config.lake.root)
    run_refresh(spark, config, lake, once=True, gate=no_gate)
    last = newest_event_time(lake.read(spark, INTERACTIONS)).replace(microsecond=0).isoformat() + "Z"
    item = lake.read(spark, RECOMMENDATIONS).select("item_id").first()[0]
    for user in ("newcomer-a", "newcomer-b"):  # two ingest commits the refresh has not seen
        Path(config.ingest.path, f"{user}.jsonl").write_text(
            _event_line(user, user, item, "view", last) + "\n"
        )
        run_ingest(spark, config, lake, once=True)
    shutil.rmtree(lake.checkpoint(REFRESH_QUERY))  # lost, or reset by an operator

    run_refresh(spark, config, lake, once=True, gate=no_gate)

    served = lake.read(spark, RECOMMENDATIONS).where(F.col("user_id").startswith("newcomer-"))
    assert {r.user_id: r["count"] for r in served.groupBy("user_id").count().collect()} == {
        "newcomer-a": config.serve.top_n,
        "newcomer-b": config.serve.top_n,
    }


@pytest.mark.slow
def test_a_refresh_against_a_registry_that_does_not_know_the_served_model_fails_without_publishing(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    """The stream's start and its batches both refuse to replace the champion's lists with
    fallback lists when the registry (here a typo in the model name) does not know their model;
    ``reset_serving`` is the deliberate way."""
    shop, trained = trained_shop
    config = copy_shop(shop, tmp_path, "mlflow.model_name=typo")
    lake = Lake.at(config.lake.root)
    state = lake.version(spark, RECOMMENDATIONS), lake.read(spark, RECOMMENDATIONS).collect()

    with pytest.raises(TrackingError, match=f"version {trained.model_version} of model 'typo'"):
        run_refresh(spark, config, lake, once=True, gate=no_gate)
    writer = RefreshBatchWriter(config, lake, str(tmp_path / "checkpoint"), no_gate)
    changes = spark.createDataFrame([], "user_id string, _change_type string, _commit_version long")
    with pytest.raises(TrackingError, match=f"version {trained.model_version} of model 'typo'"):
        writer(changes, 0)  # a running stream whose champion vanished fails its batch
    assert (lake.version(spark, RECOMMENDATIONS), lake.read(spark, RECOMMENDATIONS).collect()) == state

    run_refresh(spark, config, lake, once=True, gate=no_gate, reset_serving=True)
    served = lake.read(spark, RECOMMENDATIONS)
    assert served.where(F.col("model_version").isNotNull()).count() == 0
    assert served.groupBy("user_id").count().where(F.col("count") != config.serve.top_n).count() == 0

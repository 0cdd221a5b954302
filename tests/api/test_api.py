"""`recspark api`, the lookup service, through real HTTP requests to the running server: it answers
what Spark reads from the tables recspark wrote, follows a refresh MERGE and forget-user's DELETE
through the change feed (no full reload), survives OPTIMIZE, REORG and a checkpoint, reloads in
full after a full publish, filters and fills lists, logs every list it serves as an impression
ingest accepts, and keeps the last good version when a table goes missing or a commit is broken.
No JVM is started by the service."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
from delta.tables import DeltaTable as SparkDeltaTable
from prometheus_client.parser import text_string_to_metric_families
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import read_catalog
from recspark.core.config import Config
from recspark.core.gates import no_gate
from recspark.core.recommendation_ids import is_recommendation_id
from recspark.core.tables import FALLBACK_ITEMS, INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, SIMILAR_ITEMS, Lake
from recspark.ingest.parse import TimeBounds, parse_events
from recspark.ingest.stream import run_ingest
from recspark.model.candidates.sources import newest_event_time
from recspark.model.training.train import TrainResult
from recspark.ops.forget import forget_user
from recspark.serve.publish import recommend
from recspark.serve.refresh import run_refresh
from tests.conftest import copy_shop
from tests.processes import api_command, free_port, stop

ROOT = Path(__file__).resolve().parents[2]
JSON = dict[str, Any]


class Service:
    """`recspark api` in a subprocess on 127.0.0.1 (a free port), polling every 0.2 s, its
    impressions landing in a folder of their own (``impressions``) every 0.2 s."""

    def __init__(self, config: Config, log: Path, *settings: str) -> None:
        self.port = free_port()
        self.impressions = log.parent / f"{log.stem}-impressions"
        overrides = [
            f"lake.root={config.lake.root}",
            f"catalog.path={config.catalog.path}",
            f"serve.top_n={config.serve.top_n}",
            f"api.port={self.port}",
            "api.poll_seconds=0.2",
            f"ingest.path={self.impressions}",
            "impressions.flush_seconds=0.2",
            *settings,
        ]
        self.command = api_command(overrides)
        self.log = log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Service:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                self.get("/health")
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the service did not start: {self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        stop(self.process)

    def request(self, path: str, method: str = "GET") -> tuple[int, bytes, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers.get("content-type", "")

    def get(self, path: str, method: str = "GET") -> tuple[int, JSON]:
        status, body, kind = self.request(path, method)
        assert kind.startswith("application/json"), (path, status, kind, body[:200])
        return status, json.loads(body)

    def health(self) -> JSON:
        return self.get("/health")[1]

    def table(self, name: str = RECOMMENDATIONS.name) -> JSON:
        return self.health()["tables"][name]

    def wait(self, check: Any, what: str, timeout: float = 60) -> JSON:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if check(health):
                return health
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(self.health(), indent=1)}")

    def wait_version(self, version: int, table: str = RECOMMENDATIONS.name) -> JSON:
        return self.wait(
            lambda h: h["tables"][table]["loaded_version"] == version, f"{table} version {version}"
        )["tables"][table]

    def user(self, user_id: str, query: str = "") -> tuple[int, JSON]:
        return self.get(f"/v1/users/{quote(user_id, safe='')}/recommendations{query}")

    def similar(self, item_id: str, query: str = "") -> tuple[int, JSON]:
        return self.get(f"/v1/items/{quote(item_id, safe='')}/similar{query}")


@pytest.fixture
def lake_copy(trained_shop: tuple[Config, TrainResult], tmp_path: Path) -> Iterator[tuple[Config, Lake]]:
    config = copy_shop(trained_shop[0], tmp_path)
    yield config, Lake.at(config.lake.root)


# --------------------------------------------------------------------------------------------
# oracles: what Spark reads


Served = tuple[str, float, str | None, str | None]


def spark_lists(spark: SparkSession, lake: Lake) -> dict[str, tuple[list[Served], str | None]]:
    """Every user's list in rank order, with its model version, as Spark reads the table."""
    lists: dict[str, tuple[list[Served], str | None]] = {}
    rows = (
        lake.read(spark, RECOMMENDATIONS)
        .select("user_id", "rank", "item_id", "score", "source", "because_item_id", "model_version")
        .orderBy("user_id", "rank")
        .collect()
    )
    for row in rows:
        items, _ = lists.setdefault(row["user_id"], ([], row["model_version"]))
        items.append((row["item_id"], row["score"], row["source"], row["because_item_id"]))
    return lists


def served(body: JSON) -> list[Served]:
    return [(i["item_id"], i["score"], i["source"], i["because_item_id"]) for i in body["items"]]


def assert_serves_the_table(
    service: Service, spark: SparkSession, lake: Lake, gone: tuple[str, ...] = ()
) -> int:
    """Every user's list from the service equals Spark's read of the table (the catalog has not
    changed since the lists were written, so nothing is dropped or filled); users without a
    list (``gone``) get the fallback list. Returns how many users were checked."""
    expected = spark_lists(spark, lake)
    for user, (items, version) in expected.items():
        status, body = service.user(user, f"?n={len(items)}")
        assert status == 200, body
        assert (served(body), body["model_version"], body["fallback"]) == (items, version, False), user
        assert [i["position"] for i in body["items"]] == list(range(1, len(items) + 1))
    for user in gone:
        assert user not in expected
        status, body = service.user(user)
        assert (
            status == 200
            and body["fallback"] is True
            and all(i["source"] == "fallback" for i in body["items"])
        )
    return len(expected)


def _event_line(event_id: str, user: str, item: str, kind: str, when: str) -> str:
    return json.dumps(
        {"event_id": event_id, "event_time": when, "user_id": user, "item_id": item, "event_type": kind}
    )


def _make_active(spark: SparkSession, config: Config, lake: Lake, users: list[str]) -> None:
    """New events for ``users`` (one may be new to the shop), ingested: the next refresh
    recomputes their lists."""
    items = [r[0] for r in lake.read(spark, ITEM_IDS).orderBy("item_idx").limit(len(users)).collect()]
    when = newest_event_time(lake.read(spark, INTERACTIONS)).replace(microsecond=0).isoformat() + "Z"
    lines = [
        _event_line(f"api-{k}", user, item, "purchase", when)
        for k, (user, item) in enumerate(zip(users, items, strict=True))
    ]
    Path(config.ingest.path, f"events-api-{time.time_ns()}.jsonl").write_text("\n".join(lines) + "\n")
    run_ingest(spark, config, lake, once=True)


def _operation(spark: SparkSession, lake: Lake) -> str:
    return lake.delta(spark, RECOMMENDATIONS).history(1).first()["operation"]


# --------------------------------------------------------------------------------------------
# following the table


@pytest.mark.slow
def test_the_service_follows_refresh_forget_and_maintenance_incrementally_and_a_publish_in_full(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    config, lake = lake_copy
    run_refresh(spark, config, lake, once=True, gate=no_gate)  # the change feed is on from here
    with Service(config, tmp_path / "api.log") as service:
        first = service.wait_version(lake.version(spark, RECOMMENDATIONS))
        assert first["reloads"] == {"full": 1, "incremental": 0}
        users = sorted(spark_lists(spark, lake))
        assert assert_serves_the_table(service, spark, lake) == len(users) > 100

        # A refresh MERGEs a few users' lists (deletion vectors mark their old rows deleted).
        _make_active(spark, config, lake, [users[0], users[1], "brand-new-user"])
        assert service.user("brand-new-user")[1]["fallback"] is True
        run_refresh(spark, config, lake, once=True, gate=no_gate)
        assert _operation(spark, lake) == "MERGE"
        merged = service.wait_version(lake.version(spark, RECOMMENDATIONS))
        assert merged["reloads"]["full"] == 1 and merged["reloads"]["incremental"] >= 1
        assert merged["last_reload"]["kind"] == "incremental"
        assert service.user("brand-new-user")[1]["fallback"] is False
        assert_serves_the_table(service, spark, lake)

        # forget-user deletes a user's rows: the user is gone from the service too.
        forget_user(spark, lake, users[2])
        assert _operation(spark, lake) == "DELETE"
        forgotten = service.wait_version(lake.version(spark, RECOMMENDATIONS))
        assert forgotten["reloads"]["full"] == 1
        assert_serves_the_table(service, spark, lake, gone=(users[2],))

        # Maintenance rewrites files (Z-order, deletion vectors purged) and checkpoints the log:
        # no row changes, so nothing to reload.
        path = lake.path(RECOMMENDATIONS.name)
        SparkDeltaTable.forPath(spark, path).optimize().executeZOrderBy("user_id")
        spark.sql(f"REORG TABLE delta.`{path}` APPLY (PURGE)")
        spark._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path).checkpoint()
        assert Path(path, "_delta_log", "_last_checkpoint").is_file()
        maintained = service.wait_version(lake.version(spark, RECOMMENDATIONS))
        assert maintained["reloads"]["full"] == 1
        assert_serves_the_table(service, spark, lake, gone=(users[2],))

        # Rebuild equals incremental: a second service reading the table afresh (from the
        # checkpoint) answers every user the same.
        with Service(config, tmp_path / "fresh.log") as fresh:
            assert fresh.wait_version(lake.version(spark, RECOMMENDATIONS))["reloads"]["incremental"] == 0
            for user in [*users[:60], "brand-new-user", users[2]]:
                mine, theirs = service.user(user)[1], fresh.user(user)[1]
                assert (served(mine), mine["fallback"]) == (served(theirs), theirs["fallback"])

        # A full publish replaces the table: read again in full, off to the side.
        recommend(spark, config, lake, gate=no_gate)
        published = service.wait_version(lake.version(spark, RECOMMENDATIONS))
        assert published["reloads"]["full"] == 2 and published["last_reload"]["kind"] == "full"
        assert_serves_the_table(service, spark, lake, gone=(users[2],))
        health = service.health()
        assert health["status"] == "ok", health


@pytest.mark.slow
def test_filters_availability_and_the_fallback_list_against_spark(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    """Each filter against a brute-force oracle over Spark's reads of the tables and the
    catalog (Spark's reader, not the service's): exclude, category, n beyond the stored list,
    and items that became unavailable (marked so, or their catalog line broke) after publish."""
    config, lake = lake_copy
    lists = spark_lists(spark, lake)
    fallback = [
        (r["item_id"], r["category"], r["source"])
        for r in lake.read(spark, FALLBACK_ITEMS).orderBy("rank").collect()
    ]
    assert fallback and {s for _, _, s in fallback} <= {"trending", "popular"}
    user = sorted(lists)[3]
    stored = [item for item, *_ in lists[user][0]]
    catalog_path = Path(config.catalog.path)
    lines = catalog_path.read_text().splitlines()
    # After publish: the user's first item goes out of stock, the second one's line breaks.
    out_of_stock, broken = stored[0], stored[1]
    changed = []
    for line in lines:
        record = json.loads(line)
        if record["item_id"] == out_of_stock:
            record["available"] = False
        changed.append(json.dumps(record)[:-2] if record["item_id"] == broken else json.dumps(record))

    with Service(config, tmp_path / "api.log") as service:
        service.wait_version(lake.version(spark, RECOMMENDATIONS))
        catalog_path.write_text("\n".join(changed) + "\n")
        service.wait(lambda h: h["catalog"]["malformed_lines"] == 1, "the changed catalog read")
        # The Spark reader's view: a broken line holds its item back; unlisted items are excluded.
        catalog: dict[str, Any] = {
            r["item_id"]: r.asDict() for r in read_catalog(spark, str(catalog_path)).collect()
        }
        assert catalog[broken]["available"] is False

        def usable(item: str) -> bool:
            return bool(catalog.get(item, {"available": False})["available"])

        def category_of(item: str) -> str | None:
            return catalog[item]["category"] if item in catalog else None

        def oracle(mine: list[str], n: int, exclude: set[str], category: str | None) -> list[tuple[str, str]]:
            picked: list[tuple[str, str]] = []
            for source, items in (("stored", mine), ("fallback", [i for i, _, _ in fallback])):
                for item in items:
                    fits = usable(item) and item not in exclude and item not in [p for p, _ in picked]
                    if fits and (category is None or category_of(item) == category) and len(picked) < n:
                        picked.append((item, source))
            return picked

        categories = sorted({c for _, c, _ in fallback if c is not None})
        cases = [
            ("", len(stored), set(), None),
            ("?n=12", 12, set(), None),
            (f"?exclude={quote(stored[2])},{quote(stored[3])}&n=5", 5, {stored[2], stored[3]}, None),
            (f"?category={quote(categories[0])}&n=7", 7, set(), categories[0]),
            (f"?category={quote(categories[1])}&exclude={quote(stored[4])}", 5, {stored[4]}, categories[1]),
            ("?category=no-such-category", 5, set(), "no-such-category"),
        ]
        sources = {item: source for item, _, source, _ in lists[user][0]}
        for query, n, exclude, category in cases:
            status, body = service.user(user, query)
            assert status == 200, body
            expected = oracle(stored, n, exclude, category)
            assert [
                (i["item_id"], "stored" if i["source"] != "fallback" else "fallback") for i in body["items"]
            ] == [(item, "stored" if source == "stored" else "fallback") for item, source in expected], query
            for item in body["items"]:
                assert item["source"] == (
                    sources[item["item_id"]] if item["source"] != "fallback" else "fallback"
                )
        assert out_of_stock not in [i["item_id"] for i in service.user(user)[1]["items"]]

        # A user the lake has never heard of gets the fallback list, flagged as such.
        status, body = service.user("never-seen", "?n=6")
        assert status == 200 and body["fallback"] is True
        assert [i["item_id"] for i in body["items"]] == [i for i, _ in oracle([], 6, set(), None)]
        assert body["model_version"] == lists[user][1]
        assert {i["source"] for i in body["items"]} == {"fallback"}

        # Every response carries its own recommendation_id (a UUIDv7).
        ids = {service.user(user)[1]["recommendation_id"] for _ in range(20)}
        assert len(ids) == 20 and all(is_recommendation_id(i) for i in ids)


@pytest.mark.slow
def test_similar_items_and_their_fallback(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    config, lake = lake_copy
    similar = (
        lake.read(spark, SIMILAR_ITEMS)
        .orderBy("item_id", "rank")
        .select("item_id", "similar_item_id", "score")
        .collect()
    )
    expected: dict[str, list[tuple[str, float]]] = {}
    for row in similar:
        expected.setdefault(row["item_id"], []).append((row["similar_item_id"], row["score"]))
    with Service(config, tmp_path / "api.log") as service:
        service.wait_version(lake.version(spark, SIMILAR_ITEMS), SIMILAR_ITEMS.name)
        service.wait_version(lake.version(spark, RECOMMENDATIONS))
        for item, rows in list(expected.items())[:40]:
            status, body = service.similar(item, f"?n={len(rows)}")
            assert status == 200 and body["item_id"] == item and body["fallback"] is False
            assert [(i["item_id"], i["score"]) for i in body["items"]] == rows
        status, body = service.similar("no-such-item", "?n=4")
        assert status == 200 and body["fallback"] is True and len(body["items"]) == 4
        assert "no-such-item" not in [i["item_id"] for i in body["items"]]


def _metric_samples(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body, kind = service.request("/metrics")
    assert status == 200 and kind.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.mark.slow
def test_every_list_served_is_logged_as_an_impression_ingest_accepts(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    """Each answer's recommendation_id, items in order, sources, list and user land in the
    landing folder, as lines ingest's parser takes without a quarantine; similar items without a
    user_id are served but not logged (counted); lists are written by the time the service stops."""
    config, lake = lake_copy
    users = sorted(spark_lists(spark, lake))[:30]
    item = lake.read(spark, SIMILAR_ITEMS).select("item_id").first()["item_id"]
    answers: dict[str, tuple[str, str, JSON]] = {}
    with Service(config, tmp_path / "api.log") as service:
        service.wait_version(lake.version(spark, RECOMMENDATIONS))
        service.wait_version(lake.version(spark, SIMILAR_ITEMS), SIMILAR_ITEMS.name)
        for user in [*users, "never-seen"]:
            body = service.user(user, "?n=4")[1]
            answers[body["recommendation_id"]] = (user, RECOMMENDATIONS.name, body)
        body = service.similar(item, f"?n=3&user_id={quote(users[0])}")[1]
        answers[body["recommendation_id"]] = (users[0], SIMILAR_ITEMS.name, body)
        assert service.similar(item, "?n=3")[0] == 200  # nobody named: not an impression
        service.wait(lambda h: h["impressions"]["written"] == len(answers), "the impressions written")
        samples = _metric_samples(service)
    assert samples[("recspark_api_impressions_written_total", ())] == len(answers)
    assert samples[("recspark_api_impressions_offered_total", ())] == len(answers)
    assert samples[("recspark_api_impressions_not_logged_total", (("reason", "no user_id"),))] == 1
    assert samples[("recspark_api_impressions_dropped_total", (("reason", "queue full"),))] == 0

    files = sorted(service.impressions.glob("*.jsonl"))
    assert files and not list(service.impressions.glob(".*"))  # renamed into place, none half-written
    logged = {
        line["recommendation_id"]: line for f in files for line in map(json.loads, f.read_text().splitlines())
    }
    assert logged.keys() == answers.keys()
    for rid, (user, kind, body) in answers.items():
        line = logged[rid]
        assert (line["event_type"], line["event_id"], line["user_id"], line["list"]) == (
            "impression",
            rid,
            user,
            kind,
        )
        assert line["items"] == [i["item_id"] for i in body["items"]]
        sources = [i["source"] for i in body["items"]]  # similar items have none of their own
        assert line.get("sources") == (sources if all(sources) else None)
        assert line["item_id"] == (body["item_id"] if kind == SIMILAR_ITEMS.name else "")
        assert line.get("model_version") == body["model_version"]
    raw = spark.read.text([str(f) for f in files]).withColumnRenamed("value", "raw")
    parsed = parse_events(raw, TimeBounds(datetime(1970, 1, 1, tzinfo=timezone.utc), 1440.0))
    assert parsed.where(F.col("reason").isNotNull()).select("reason").collect() == []
    assert parsed.count() == len(answers)


@pytest.mark.slow
def test_impressions_that_cannot_be_written_never_fail_a_request_and_are_counted(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    config, lake = lake_copy
    not_a_folder = tmp_path / "landing"
    not_a_folder.write_text("a file where the landing folder should be\n")
    users = sorted(spark_lists(spark, lake))[:20]
    with Service(config, tmp_path / "api.log", f"ingest.path={not_a_folder}") as service:
        service.wait_version(lake.version(spark, RECOMMENDATIONS))
        assert all(service.user(user)[0] == 200 for user in users)
        health = service.wait(
            lambda h: h["impressions"]["dropped_write_failed"] == len(users), "the failed writes counted"
        )
        assert health["status"] == "ok" and health["impressions"]["written"] == 0
        assert health["impressions"]["last_error"]
        samples = _metric_samples(service)
    assert samples[("recspark_api_impressions_dropped_total", (("reason", "write failed"),))] == len(users)


@pytest.mark.slow
def test_health_and_metrics(spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path) -> None:
    config, lake = lake_copy
    with Service(config, tmp_path / "api.log") as service:
        version = lake.version(spark, RECOMMENDATIONS)
        table = service.wait_version(version)
        users = sorted(spark_lists(spark, lake))
        health = service.health()
        assert health["status"] == "ok"
        assert table["keys"] == len(users) and table["rows"] == lake.read(spark, RECOMMENDATIONS).count()
        assert table["latest_version"] == version and 0 <= table["newest_commit_age_seconds"] < 3600
        assert table["last_reload"]["status"] == "ok" and table["problem"] is None
        assert health["catalog"]["loaded"] is True and health["catalog"]["malformed_lines"] == 0
        for user in users[:25]:
            assert service.user(user)[0] == 200
        assert service.user("x", "?n=0")[0] == 400
        samples = _metric_samples(service)

        def sample(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert sample("recspark_api_requests_total", endpoint="recommendations", status="200") == 25
        assert sample("recspark_api_requests_total", endpoint="recommendations", status="400") == 1
        assert sample("recspark_api_request_seconds_count", endpoint="recommendations") == 26
        assert sample("recspark_api_request_seconds_bucket", endpoint="recommendations", le="+Inf") == 26
        assert sample("recspark_api_table_version", table="recommendations") == version
        assert sample("recspark_api_table_rows", table="recommendations") == table["rows"]
        assert sample("recspark_api_reloads_total", table="recommendations", kind="full", outcome="ok") == 1
        assert sample("recspark_api_reload_seconds_count", table="recommendations", kind="full") == 1
        assert 0 <= sample("recspark_api_newest_commit_age_seconds", table="recommendations") < 3600
        assert sample("process_resident_memory_bytes") > 0


MALFORMED = [
    ("/v1/users/u1/recommendations?n=0", "n must be a whole number from 1 to 100"),
    ("/v1/users/u1/recommendations?n=101", "n must be a whole number from 1 to 100"),
    ("/v1/users/u1/recommendations?n=abc", "n must be a whole number"),
    ("/v1/users/u1/recommendations?n=-3", "n must be a whole number"),
    ("/v1/users/u1/recommendations?n=1.5", "n must be a whole number"),
    ("/v1/users/u1/recommendations?n=", "n must be a whole number"),
    ("/v1/users/u1/recommendations?n=1&n=2", "parameter 'n' given more than once"),
    ("/v1/users/u1/recommendations?limit=3", "unknown parameter 'limit'"),
    (f"/v1/users/{'u' * 257}/recommendations", "user_id is longer than 256 characters"),
    ("/v1/users/u%01x/recommendations", "user_id contains control characters"),
    ("/v1/users/u1/recommendations?exclude=" + ",".join(f"i{k}" for k in range(101)), "at most 100"),
    (f"/v1/users/u1/recommendations?exclude=i1,{'i' * 300}", "an excluded item id is longer than"),
    ("/v1/users/u1/recommendations?category=", "category is empty"),
    (f"/v1/items/{'i' * 257}/similar", "item_id is longer than 256 characters"),
    ("/v1/items/i1/similar?n=1000", "n must be a whole number from 1 to 100"),
    ("/v1/items/i1/similar?category=x", "unknown parameter 'category'"),
    ("/v1/items/i1/similar?user_id=", "user_id is empty"),
]


@pytest.mark.slow
def test_malformed_requests_get_a_4xx_with_a_json_error(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    config, lake = lake_copy
    with Service(config, tmp_path / "api.log") as service:
        service.wait_version(lake.version(spark, RECOMMENDATIONS))
        for path, message in MALFORMED:
            status, body = service.get(path)
            assert status == 400 and message in body["error"], (path, body)
        assert service.get("/v1/nothing/here")[0] == 404
        assert service.get("/v1/users/u1/recommendations", method="POST")[0] == 405
        # Ids may hold anything but control characters, slashes and quotes included.
        assert service.user("a/b'c\"d ü")[0] == 200


@pytest.mark.slow
def test_a_missing_table_then_a_broken_commit_keep_the_last_good_version(
    spark: SparkSession, trained_shop: tuple[Config, TrainResult], tmp_path: Path
) -> None:
    source = trained_shop[0]
    shop = tmp_path / "shop"
    empty_lake = shop / "lake"
    config = source.with_overrides([f"lake.root={empty_lake}"])
    empty_lake.mkdir(parents=True)
    with Service(config, tmp_path / "api.log") as service:
        # Nothing published yet: 503, and health says why.
        status, body = service.get("/health")
        assert status == 503 and body["status"] == "unavailable"
        assert "not found" in body["tables"]["recommendations"]["problem"]
        assert service.user("u1")[0] == 503

        # The lists are published: the service picks them up.
        for table in (RECOMMENDATIONS, FALLBACK_ITEMS, SIMILAR_ITEMS):
            shutil.copytree(Path(source.lake.root, table.name), empty_lake / table.name)
        lake = Lake.at(str(empty_lake))
        version = lake.version(spark, RECOMMENDATIONS)
        service.wait_version(version)
        lists = spark_lists(spark, lake)
        user = sorted(lists)[0]
        before = service.user(user)[1]
        assert served(before) == lists[user][0]

        # A broken commit: the last good version stays in memory and health says so.
        log = empty_lake / RECOMMENDATIONS.name / "_delta_log"
        broken = log / f"{version + 1:020d}.json"
        broken.write_text('{"commitInfo": {"operation": "WRITE"\n{"add": not json}\n')
        health = service.wait(
            lambda h: h["tables"]["recommendations"]["problem"] is not None, "the broken commit reported"
        )
        assert (
            health["status"] == "degraded"
            and health["tables"]["recommendations"]["loaded_version"] == version
        )
        assert served(service.user(user)[1]) == served(before)
        broken.unlink()
        service.wait(lambda h: h["status"] == "ok", "the service to recover")

        # The table vanishes: still the last good version.
        shutil.rmtree(empty_lake / RECOMMENDATIONS.name)
        health = service.wait(
            lambda h: "not found" in (h["tables"]["recommendations"]["problem"] or ""), "the missing table"
        )
        assert (
            health["status"] == "degraded"
            and health["tables"]["recommendations"]["loaded_version"] == version
        )
        assert served(service.user(user)[1]) == served(before)


@pytest.mark.slow
def test_the_service_starts_no_jvm(
    spark: SparkSession, lake_copy: tuple[Config, Lake], tmp_path: Path
) -> None:
    config, lake = lake_copy
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, recspark.cli, recspark.api.server, recspark.ops.lookup; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'py4j', 'delta', 'mlflow'}))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "[]"
    with Service(config, tmp_path / "api.log") as service:
        service.wait_version(lake.version(spark, RECOMMENDATIONS))
        for user in sorted(spark_lists(spark, lake))[:20]:
            assert service.user(user)[0] == 200
        assert service.process is not None
        children = psutil.Process(service.process.pid).children(recursive=True)
        assert [c.name() for c in children] == []

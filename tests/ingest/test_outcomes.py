"""Impressions and attribution: the contract's new fields, and ``recommendation_outcomes`` equal to
a brute-force recomputation from simulated shoppers, whatever the arrival order, crashes included."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.recommendation_ids import (
    is_recommendation_id,
    new_recommendation_id,
    served_at,
    served_at_ms,
)
from recspark.core.tables import (
    EVENTS,
    INGEST_METRICS,
    INTERACTIONS,
    RECOMMENDATION_OUTCOMES,
    RECOMMENDATIONS,
    Lake,
)
from recspark.ingest.outcomes import KEY
from recspark.ingest.parse import TimeBounds, parse_events
from recspark.ingest.stream import QUERY_NAME
from recspark.ingest.writer import EventBatchWriter
from recspark.ops.status.json_report import status_json
from recspark.ops.status.snapshot import gather_status
from recspark.ops.status.text_report import render_status
from tests.conftest import config_under
from tests.ingest.test_ingest import drop_file, event, ingest, table
from tests.shoppers import Arm, brute_force, iso, prices_for, retried, simulate

WINDOW = timedelta(hours=24)
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def test_recommendation_ids_are_uuid7_that_carry_their_time() -> None:
    at = 1_790_000_000_123
    rid = new_recommendation_id(at)
    assert is_recommendation_id(rid) and len(rid) == 36
    assert served_at_ms(rid) == at
    assert served_at(rid) == datetime.fromtimestamp(at / 1000, timezone.utc)
    assert rid != new_recommendation_id(at)  # random beyond the millisecond
    assert new_recommendation_id() > rid  # later ids sort later
    for bad in (rid.upper(), rid[:-1], rid.replace("-7", "-4", 1), "", None, 7):
        assert not is_recommendation_id(bad)
    with pytest.raises(ValueError, match="not a recommendation_id"):
        served_at_ms("not-an-id")


def impression(rid: str, items: object, **fields: object) -> dict:
    return {
        "event_id": rid,
        "event_time": iso(served_at(rid)),
        "user_id": "u1",
        "event_type": "impression",
        "recommendation_id": rid,
        "items": items,
        **fields,
    }


def test_the_new_fields_are_parsed_and_every_breach_has_a_precise_reason(spark: SparkSession) -> None:
    rid = new_recommendation_id(int((NOW - timedelta(hours=1)).timestamp() * 1000))
    other = new_recommendation_id(int((NOW - timedelta(hours=5)).timestamp() * 1000))
    t = iso(served_at(rid))
    full = impression(
        rid,
        ["i1", "i2"],
        list="recommendations",
        model_version="3",
        variant="challenger",
        sources=["als", "popular"],
    )
    valid = {
        "full impression": full,
        "bare impression": impression(other, ["i1"]),
        "similar items": impression(new_recommendation_id(), ["i3"], item_id="i9", list="similar_items"),
        "click": json.loads(event("c1", t, "u1", "i1", "view")) | {"recommendation_id": rid},
        "purchase": json.loads(event("p1", t, "u1", "i1", "purchase", 2)) | {"recommendation_id": rid},
        "a view ignores impression fields": json.loads(event("v1", t, "u1", "i1", "view")) | {"items": 5},
        "an old event": json.loads(event("o1", t, "u1", "i1", "rating", 4)),
    }
    broken = {
        json.dumps(json.loads(event("b1", t, "u1", "i1", "view")) | {"recommendation_id": "abc"}): (
            "malformed recommendation_id 'abc' (a lowercase UUID version 7)"
        ),
        json.dumps(json.loads(event("b2", t, "u1", "i1", "view")) | {"recommendation_id": rid.upper()}): (
            f"malformed recommendation_id '{rid.upper()}' (a lowercase UUID version 7)"
        ),
        json.dumps(json.loads(event("b3", t, "u1", "i1", "view")) | {"recommendation_id": 5}): (
            "recommendation_id is not a string: 5"
        ),
        json.dumps({k: v for k, v in full.items() if k != "items"}): "impression without items",
        json.dumps({k: v for k, v in full.items() if k != "recommendation_id"}): (
            "impression without recommendation_id"
        ),
        json.dumps(full | {"event_id": "imp-1"}): "impression event_id is not its recommendation_id",
        json.dumps(full | {"items": "i1"}): "items is not an array of strings: i1",
        json.dumps(full | {"items": [1, 2]}): "items is not an array of strings: [1,2]",
        json.dumps(full | {"items": [], "sources": []}): "impression with an empty items list",
        json.dumps(full | {"items": ["i1", None]}): "items holds an empty, over-long or null item id",
        json.dumps(full | {"items": ["i1", " "]}): "items holds an empty, over-long or null item id",
        json.dumps(full | {"items": ["i1", "i1"]}): "items repeats an item",
        json.dumps(full | {"items": [f"i{k}" for k in range(201)], "sources": None}): "items longer than 200",
        json.dumps(full | {"list": "cart"}): (
            "impression for an unknown list 'cart' (known: recommendations, similar_items)"
        ),
        json.dumps(full | {"model_version": 3}): "model_version is not a string: 3",
        json.dumps(full | {"sources": ["als"]}): "sources has 1 entries for 2 items",
        json.dumps(full | {"sources": "als"}): "sources is not an array of strings: als",
        json.dumps(full | {"sources": ["als", ""]}): (
            "sources holds an empty, null or over-long (> 64) source"
        ),
        json.dumps(full | {"event_time": iso(served_at(rid) + timedelta(hours=2))}): (
            f"impression event_time '{iso(served_at(rid) + timedelta(hours=2))}' is more than 60 minutes "
            "from its recommendation_id's time"
        ),
        json.dumps(full | {"item_id": 7}): "item_id is not a string: 7",
    }
    lines = [json.dumps(v) for v in valid.values()] + list(broken)
    raw = spark.createDataFrame([(line,) for line in lines], "raw string")
    parsed = parse_events(raw, TimeBounds(datetime(1970, 1, 1), 1440.0)).collect()
    reasons = {r["raw"]: r["reason"] for r in parsed}
    assert {line: reasons[line] for line in broken} == broken
    assert all(reasons[json.dumps(v)] is None for v in valid.values()), reasons
    by_id = {r["event_id"]: r for r in parsed if r["reason"] is None}
    assert by_id[rid]["items"] == ["i1", "i2"] and by_id[rid]["sources"] == ["als", "popular"]
    assert (by_id[rid]["list"], by_id[rid]["model_version"], by_id[rid]["variant"]) == (
        "recommendations",
        "3",
        "challenger",
    )
    assert by_id[rid]["item_id"] == "" and by_id[other]["item_id"] == ""
    assert by_id["c1"]["recommendation_id"] == rid and by_id["c1"]["items"] is None
    assert by_id["v1"]["items"] is None and by_id["o1"]["recommendation_id"] is None


# --------------------------------------------------------------------------------------------
# Attribution against simulated shoppers

ARMS = [
    Arm("7", None, click=0.30, cart=0.5, buy=0.6, sources=("als", "popular")),
    Arm("8", "challenger", click=0.15, cart=0.4, buy=0.5, sources=("ease", "blend")),
    Arm(None, None, click=0.10, cart=0.3, buy=0.3, sources=("popular", "trending")),
]
FILES = 5


def outcome_config(root: Path) -> Config:
    return config_under(root, "ingest.max_files_per_trigger=1", "catalog.path=" + str(root / "catalog.jsonl"))


def shopper_files(config: Config, seed: int) -> tuple[list[dict], dict[str, float]]:
    """Two days of simulated lists, shuffled across ``FILES`` files (one batch each), with retried
    events, the newest impressions held back to the last file (their clicks arrive first), an
    item missing from the catalog, and events that carry no id."""
    start = NOW - timedelta(days=3)
    events = simulate(lists=160, start=start, hours=48, arms=ARMS, window=WINDOW, seed=seed)
    events += [json.loads(event(f"plain{k}", iso(start), "u1", f"i{k:04d}", "view")) for k in range(5)]
    prices = prices_for(120)
    shown = {e["recommendation_id"]: e["items"] for e in events if e["event_type"] == "impression"}
    credited = [
        e["item_id"]
        for e in events
        if e["event_type"] == "purchase" and e["item_id"] in shown.get(e["recommendation_id"], [])
    ]
    for item in set(credited[:3]):  # purchases credited without revenue
        del prices[item]
    lines = [json.dumps(e) for e in retried(events, 0.05)]
    rng = random.Random(seed)
    rng.shuffle(lines)
    late = [line for line in lines if '"impression"' in line][-15:]
    rest = [line for line in lines if line not in late]
    for k in range(FILES):
        chunk = rest[k::FILES] + (late if k == FILES - 1 else [])
        drop_file(config, f"f{k}.jsonl", chunk)
    catalog = [json.dumps({"item_id": i, "price": p, "available": True}) for i, p in prices.items()]
    Path(config.catalog.path).write_text("\n".join(catalog) + "\n")
    return events, prices


def outcomes_of(spark: SparkSession, config: Config) -> dict[tuple, dict[str, float]]:
    rows = table(spark, config, RECOMMENDATION_OUTCOMES).collect()
    assert len(rows) == len({tuple(r[k] for k in KEY) for r in rows}), "one row per key"
    metrics = ("impressions", "clicks", "add_to_carts", "purchases", "revenue")
    return {tuple(r[k] for k in KEY): {m: r[m] for m in metrics} for r in rows}


def issues_of(spark: SparkSession, config: Config) -> Counter:
    standing: Counter = Counter()
    for row in table(spark, config, INGEST_METRICS).collect():
        standing.update(row["outcome_issues"] or {})
    return +standing  # drops reasons whose changes added up to zero


@pytest.fixture(scope="module")
def attributed(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory):
    config = outcome_config(tmp_path_factory.mktemp("attributed"))
    events, prices = shopper_files(config, seed=3)
    ingest(spark, config)
    return config, events, prices


@pytest.mark.slow
def test_outcomes_equal_a_brute_force_attribution_whatever_the_arrival_order(
    spark: SparkSession, attributed
) -> None:
    config, events, prices = attributed
    expected_rows, expected_issues = brute_force(events, prices, WINDOW)
    assert table(spark, config, INGEST_METRICS).count() == FILES
    assert outcomes_of(spark, config) == expected_rows
    assert issues_of(spark, config) == +expected_issues
    # The simulation exercised every rule, and the better arm won.
    assert {"no impression (yet)", "item not in the list", "outside the attribution window"} <= set(
        expected_issues
    )
    assert "purchase without a catalog price" in expected_issues
    clicks: defaultdict[tuple, float] = defaultdict(float)
    shown: defaultdict[tuple, float] = defaultdict(float)
    for key, metrics in expected_rows.items():
        clicks[key[1:3]] += metrics["clicks"]
        shown[key[1:3]] += metrics["impressions"]
    assert clicks[("7", None)] / shown[("7", None)] > clicks[("8", "challenger")] / shown[("8", "challenger")]


@pytest.mark.slow
def test_impressions_never_reach_interactions(spark: SparkSession, attributed) -> None:
    config, _, _ = attributed
    events = table(spark, config, EVENTS)
    assert events.where("event_type = 'impression'").count() > 100
    interactions = table(spark, config, INTERACTIONS)
    assert interactions.where("item_id = ''").count() == 0
    rebuilt = aggregate_events(events, config.interactions).drop("updated_at")
    views = events.where("event_type = 'view'").count()
    assert interactions.agg(F.sum("view_count")).first()[0] == views
    assert_df_equality(
        interactions.drop("updated_at").select(*rebuilt.columns).orderBy("user_id", "item_id"),
        rebuilt.orderBy("user_id", "item_id"),
        ignore_nullable=True,
        allow_nan_equality=True,
    )


def click(rid: str, item: str, at: datetime) -> str:
    return json.dumps(
        json.loads(event(f"c-{rid}-{item}", iso(at), "u1", item, "view")) | {"recommendation_id": rid}
    )


@pytest.mark.slow
def test_impressions_alone_leave_interactions_untouched_and_ended_variants_keep_their_credit(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = outcome_config(tmp_path)
    lake = Lake.at(config.lake.root)
    lake.ensure(spark, RECOMMENDATIONS)  # lists published outside any experiment: no variant now
    drop_file(config, "views.jsonl", [event("v1", iso(NOW - timedelta(hours=2)), "u1", "i1", "view")])
    ingest(spark, config)
    version = lake.version(spark, INTERACTIONS)
    rid = new_recommendation_id(int((NOW - timedelta(hours=1)).timestamp() * 1000))
    drop_file(config, "shown.jsonl", [json.dumps(impression(rid, ["i1", "i2"], model_version="1"))])
    ingest(spark, config)
    assert lake.version(spark, INTERACTIONS) == version  # no commit: nothing for the refresh to see
    metrics = table(spark, config, INGEST_METRICS).orderBy("started_at").collect()[-1]
    assert (metrics["impressions_written"], metrics["interactions_touched"], metrics["outcome_rows"]) == (
        1,
        0,
        2,
    )

    ended = new_recommendation_id(int((NOW - timedelta(hours=3)).timestamp() * 1000))
    lines = [
        json.dumps(impression(ended, ["i3"], model_version="2", variant="challenger")),
        click(ended, "i3", NOW - timedelta(minutes=170)),
        click(rid, "i2", NOW - timedelta(minutes=50)),
    ]
    drop_file(config, "clicks.jsonl", lines)
    ingest(spark, config)
    metrics = table(spark, config, INGEST_METRICS).orderBy("started_at").collect()[-1]
    assert metrics["outcome_issues"] == {"credited to a variant no longer served": 1}
    clicks = {(k[1], k[2], k[5]): m["clicks"] for k, m in outcomes_of(spark, config).items()}
    assert clicks == {("1", None, 1): 0, ("1", None, 2): 1, ("2", "challenger", 1): 1}


def stable_outcomes(spark: SparkSession, config: Config) -> DataFrame:
    return table(spark, config, RECOMMENDATION_OUTCOMES).drop("updated_at")


@pytest.mark.slow
def test_crashes_around_the_outcomes_write_then_restarts_equal_an_uninterrupted_run(
    spark: SparkSession, attributed, tmp_path: Path
) -> None:
    reference, _, _ = attributed
    crashed = outcome_config(tmp_path)
    shopper_files(crashed, seed=3)
    lake = Lake.at(crashed.lake.root)

    class CrashAround(EventBatchWriter):
        """Dies just before or just after the outcomes MERGE of one batch."""

        def __init__(self, batch: int, when: str) -> None:
            super().__init__(crashed, lake, lake.checkpoint(QUERY_NAME))
            self.batch, self.when = batch, when

        def write_outcomes(self, events: DataFrame, app_id: str, batch_id: int) -> tuple[int, dict[str, int]]:
            if (batch_id, self.when) == (self.batch, "before"):
                raise RuntimeError("simulated crash before the outcomes write")
            written = super().write_outcomes(events, app_id, batch_id)
            if (batch_id, self.when) == (self.batch, "after"):
                raise RuntimeError("simulated crash after the outcomes write")
            return written

    for batch, when in ((1, "before"), (2, "after"), (FILES - 1, "after")):
        with pytest.raises(StreamingQueryException, match=f"simulated crash {when}"):
            ingest(spark, crashed, CrashAround(batch, when))
    ingest(spark, crashed)

    assert_df_equality(
        stable_outcomes(spark, crashed),
        stable_outcomes(spark, reference),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert issues_of(spark, crashed) == issues_of(spark, reference)


@pytest.mark.slow
def test_status_shows_click_through_and_conversion_per_model_version(spark: SparkSession, attributed) -> None:
    config, events, prices = attributed
    rows, issues = brute_force(events, prices, WINDOW)
    snapshot = gather_status(spark, config, Lake.at(config.lake.root))
    by_arm = {(o.model_version, o.variant): o for o in snapshot.outcomes}
    for arm in ARMS:
        mine = [m for k, m in rows.items() if k[1:3] == (arm.model_version, arm.variant)]
        shown, clicked = sum(m["impressions"] for m in mine), sum(m["clicks"] for m in mine)
        bought = sum(m["purchases"] for m in mine)
        state = by_arm[(arm.model_version, arm.variant)]
        assert (state.impressions, state.clicks, state.purchases) == (shown, clicked, bought)
        assert state.ctr == clicked / shown and state.conversion == bought / shown
    assert snapshot.outcome_issues == dict(+issues)
    text = render_status(snapshot)
    assert "Shoppers (lists served" in text and "(no model)" in text and "challenger" in text
    assert f"{by_arm[('7', None)].ctr:.2%}" in text
    assert status_json(snapshot)["outcomes"][0]["ctr"] == snapshot.outcomes[0].ctr

"""`recspark show USER_ID`: one user's list as the serving table holds it, their newest events,
and a clear exit 2 for a user the lake has never heard of."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.cli import main
from recspark.core.config import Config
from recspark.core.tables import EVENTS, RECOMMENDATIONS, Lake
from recspark.model.families.model import ALL_FAMILIES
from recspark.ops.lookup import HISTORY_EVENTS, lookup_user, render_lookup
from tests.conftest import config_under


def cli_settings(config: Config) -> list[str]:
    settings = [f"lake.root={config.lake.root}", f"mlflow.tracking_uri={config.mlflow.tracking_uri}"]
    return [arg for setting in settings for arg in ("--set", setting)]


def _personalised_user(spark: SparkSession, lake: Lake) -> str:
    row = (
        lake.read(spark, RECOMMENDATIONS)
        .where(F.col("source").isin(*ALL_FAMILIES))
        .select(F.min("user_id").alias("user_id"))
        .first()
    )
    assert row is not None and row["user_id"] is not None
    return row["user_id"]


def test_show_json_is_the_users_rows(
    spark: SparkSession, shop: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = Lake.at(shop.lake.root)
    user = _personalised_user(spark, lake)

    assert main(["show", user, "--json", *cli_settings(shop)]) == 0
    shown = json.loads(capsys.readouterr().out)

    listed = lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user)
    columns = ["rank", "item_id", "score", "source", "because_item_id"]
    assert_df_equality(
        spark.createDataFrame(shown["recommendations"], listed.select(*columns).schema),
        listed.select(*columns),
        ignore_row_order=True,
        ignore_nullable=True,
    )
    assert [r["rank"] for r in shown["recommendations"]] == sorted(
        r["rank"] for r in shown["recommendations"]
    )
    meta = (
        listed.select("model_version", F.col("generated_at").cast("double").alias("at")).distinct().collect()
    )
    assert len(meta) == 1
    assert shown["model_version"] == meta[0]["model_version"]
    assert datetime.fromisoformat(shown["generated_at"]).timestamp() == pytest.approx(meta[0]["at"])

    newest = (
        lake.read(spark, EVENTS)
        .where(F.col("user_id") == user)
        .orderBy(F.col("event_time").desc(), "event_id")
        .limit(HISTORY_EVENTS)
        .select(F.col("event_time").cast("double").alias("at"), "event_type", "item_id", "value")
        .collect()
    )
    assert len(shown["history"]) == len(newest) > 0
    for event, row in zip(shown["history"], newest, strict=True):
        assert datetime.fromisoformat(event["event_time"]).timestamp() == pytest.approx(row["at"])
        assert (event["event_type"], event["item_id"], event["value"]) == (
            row["event_type"],
            row["item_id"],
            row["value"],
        )


def test_show_prints_the_list_in_rank_order(
    spark: SparkSession, shop: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = Lake.at(shop.lake.root)
    user = _personalised_user(spark, lake)
    items = [
        r["item_id"]
        for r in lake.read(spark, RECOMMENDATIONS).where(F.col("user_id") == user).orderBy("rank").collect()
    ]

    assert main(["show", user, *cli_settings(shop)]) == 0
    out = capsys.readouterr().out

    assert out.startswith(f"User {user}\nRecommendations (model version ")
    listed = out.split("\n  rank ", 1)[1].split("\n\nRecent history", 1)[0].splitlines()[1:]
    assert [line.split()[1] for line in listed] == items
    assert "\n\nRecent history (newest first)\n  time (UTC)" in out


def test_show_an_unknown_user_exits_2_with_one_line(
    spark: SparkSession, shop: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "no-such-user", "--json", *cli_settings(shop)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if line.startswith("recspark show:")]
    assert errors == [
        f"recspark show: error: unknown user 'no-such-user': no recommendations and no events in the lake "
        f"at {Lake.at(shop.lake.root).root}"
    ]


def _event(user: str, n: int, at: datetime) -> tuple:
    return (
        f"e{user}{n}",
        at,
        user,
        f"i{n}",
        "view",
        None,
        "s1",
        at,
        at.date(),
        "app",
        0,
        date(at.year, at.month, 1),
        *(None,) * (len(EVENTS.schema) - 12),  # the optional impression and attribution fields
    )


def test_a_user_with_events_but_no_list_shows_the_newest_events(spark: SparkSession, tmp_path: Path) -> None:
    """Between ingest and the next refresh a new user has history but no list yet."""
    lake = Lake.at(config_under(tmp_path).lake.root)
    lake.ensure(spark, EVENTS)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rows = [_event("new", n, start + timedelta(minutes=n)) for n in range(HISTORY_EVENTS + 3)]
    rows.append(_event("other", 99, start + timedelta(days=1)))
    spark.createDataFrame(rows, EVENTS.schema).write.format("delta").mode("append").save(lake.path("events"))

    found = lookup_user(lake.root, "new")

    assert found.known and found.recommendations == [] and found.model_version is None
    assert [e.item_id for e in found.history] == [f"i{n}" for n in range(HISTORY_EVENTS + 2, 2, -1)]
    assert found.history[0].event_time == (start + timedelta(minutes=HISTORY_EVENTS + 2)).timestamp()
    text = render_lookup(found)
    assert "Recommendations: none" in text
    history = text.split("Recent history (newest first)\n", 1)[1].splitlines()
    assert len(history) == 1 + HISTORY_EVENTS and history[1].split()[3] == f"i{HISTORY_EVENTS + 2}"
    assert not lookup_user(lake.root, "nobody").known

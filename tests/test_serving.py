"""Cold start: users the model cannot personalise for get trending, else popular, items."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pyspark.sql import SparkSession

from recspark.serving import fallback_popularity
from tests.conftest import config_under


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
    trending_config = config_under(tmp_path, "catalog.path=null", "serve.top_n=2", "serve.trending_days=7")
    items, source = fallback_popularity(spark, trending_config, interactions)
    assert source == "trending"
    assert {r["item_id"]: r["popularity"] for r in items.collect()} == {"b": 2.0, "c": 1.0}

    too_few = config_under(tmp_path, "catalog.path=null", "serve.top_n=3", "serve.trending_days=7")
    items, source = fallback_popularity(spark, too_few, interactions)
    assert source == "popular"
    assert {r["item_id"]: r["popularity"] for r in items.collect()} == {"a": 4.0, "b": 2.0, "c": 1.0}

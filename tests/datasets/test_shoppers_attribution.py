"""The loop closed: simulated shoppers in front of the real lookup service, the service's impressions
and the shoppers' events in one landing folder, one ingest run, and ``recommendation_outcomes``
equal, position by position, to what the simulator reports the shoppers did."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from pyspark.sql import SparkSession

from recspark.core.recommendation_ids import served_at
from recspark.core.tables import INGEST_METRICS, RECOMMENDATION_OUTCOMES
from recspark.datasets.shoppers.simulation import simulate_shoppers
from recspark.datasets.shoppers.tastes import Tastes
from recspark.ingest.outcomes import KEY
from tests.conftest import config_under
from tests.datasets.test_shoppers import SPEC, Api, N, top_lists, write_lake
from tests.ingest.test_ingest import ingest, table

PRICE = 2.5  # every item's catalog price: revenue is purchases x 2.5, exact in floating point


def test_ingest_credits_each_list_with_exactly_what_its_shopper_did(
    spark: SparkSession, tmp_path: Path
) -> None:
    tastes = Tastes(SPEC)
    config = config_under(tmp_path / "pipeline")
    landing = Path(config.ingest.path)
    served_lake = write_lake(tmp_path / "served", top_lists(tastes))
    with Api(served_lake, landing, tmp_path / "api.log") as api:
        report = simulate_shoppers(tastes, api.url, landing, days=2, visits_per_day=30, list_size=N, seed=2)
        api.written(len(report.lists))
    catalog = Path(config.catalog.path)
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(
        "".join(
            json.dumps({"item_id": item, "price": PRICE, "available": True}) + "\n" for item in tastes.items
        )
    )
    ingest(spark, config)

    expected: dict[tuple, dict[str, float]] = defaultdict(
        lambda: {"impressions": 0, "clicks": 0, "add_to_carts": 0, "purchases": 0, "revenue": 0.0}
    )
    for seen in report.lists:
        day = served_at(seen.served.recommendation_id).date()
        for position, item in enumerate(seen.served.items, start=1):
            row = expected[(day, "1", None, "recommendations", "als", position)]
            row["impressions"] += 1
            row["clicks"] += item in seen.clicked
            row["add_to_carts"] += item in seen.carted
            row["purchases"] += item in seen.bought
            row["revenue"] += PRICE * (item in seen.bought)
    rows = table(spark, config, RECOMMENDATION_OUTCOMES).collect()
    metrics = ("impressions", "clicks", "add_to_carts", "purchases", "revenue")
    found = {tuple(r[k] for k in KEY): {m: r[m] for m in metrics} for r in rows}
    assert found == dict(expected)
    assert sum(row["clicks"] for row in found.values()) == report.totals()["clicks"] > 10
    issues: Counter = Counter()
    for metric in table(spark, config, INGEST_METRICS).collect():
        issues.update(metric["outcome_issues"] or {})
    assert +issues == Counter()

"""The whole pipeline on the embedded default, and a report a newcomer can read."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.session import build_spark
from recspark.core.tables import EVENTS, INTERACTIONS, QUARANTINE, RECOMMENDATIONS, Lake
from recspark.ingest.stream import run_ingest
from recspark.model.train import TrainResult, train
from recspark.ops.generate import ShopSpec, write_shop
from recspark.ops.quality import gate_for
from recspark.serve.publish import recommend

log = logging.getLogger(__name__)

REPORT_METRICS = (
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "map_at_k",
    "hit_rate_at_k",
    "coverage_at_k",
    "novelty_at_k",
)


def _local_paths(config: Config) -> list[Path]:
    """The demo's own local state; remote URIs are never deleted."""
    candidates = [
        config.lake.root,
        config.ingest.path,
        config.catalog.path,
        config.mlflow.artifact_location,
    ]
    if config.mlflow.tracking_uri.startswith("sqlite:///"):
        candidates.append(config.mlflow.tracking_uri.removeprefix("sqlite:///"))
    return [Path(c) for c in candidates if c and "://" not in c]


def reset_local_state(config: Config) -> None:
    for path in _local_paths(config):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_demo(config: Config, fresh: bool) -> None:
    if fresh:
        reset_local_state(config)
    timings: dict[str, float] = {}
    g = config.generate
    started = time.time()
    assert config.catalog.path is not None, "the demo needs catalog.path"
    write_shop(
        ShopSpec(
            users=g.users,
            items=g.items,
            categories=g.categories,
            events=g.events,
            days=g.days,
            seed=g.seed,
            bad_fraction=g.bad_fraction,
            duplicate_fraction=g.duplicate_fraction,
        ),
        Path(config.ingest.path),
        Path(config.catalog.path),
    )
    timings["generate"] = time.time() - started
    spark = build_spark(config, "demo")
    lake = Lake.at(config.lake.root, config.lake.database)
    for stage, action in (
        ("ingest", lambda: run_ingest(spark, config, lake, once=True)),
        ("train", lambda: train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))),
        (
            "recommend",
            lambda: recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend")),
        ),
    ):
        started = time.time()
        outcome = action()
        timings[stage] = time.time() - started
        if isinstance(outcome, TrainResult):
            result = outcome
    print(render_report(spark, config, lake, result, timings))


def render_report(
    spark: SparkSession, config: Config, lake: Lake, result: TrainResult, timings: dict[str, float]
) -> str:
    lines = [
        "",
        "=" * 72,
        "recspark demo report",
        "=" * 72,
        "",
        f"Tables (Delta, under {lake.root}):",
    ]
    for spec in (EVENTS, QUARANTINE, INTERACTIONS, RECOMMENDATIONS):
        count = lake.read(spark, spec).count()
        lines.append(f"  {spec.name:<20} {count:>10,} rows   (version {lake.version(spark, spec)})")
    reasons = (
        lake.read(spark, QUARANTINE).groupBy("reason").count().orderBy(F.desc("count")).limit(5).collect()
    )
    for row in reasons:
        lines.append(f"      quarantined: {row['count']:>5} x {row['reason']}")
    k = config.train.k
    m = result.metrics
    lines += [
        "",
        f"Evaluation on the last {config.train.test_days:g} days "
        f"({int(m.get('test_users', 0))} test users), K={k}:",
        f"  {'metric':<16}{'ALS':>10}{'popular':>10}{'category popular':>18}",
    ]
    for name in REPORT_METRICS:
        by_category = m.get(f"category_popular_{name}", float("nan"))
        lines.append(f"  {name:<16}{m[name]:>10.4f}{m['popular_' + name]:>10.4f}{by_category:>18.4f}")
    verdict = "champion" if result.promoted else "challenger"
    lines += [
        "",
        f"Model version {result.model_version} is {verdict}: {result.reason}",
        f"MLflow run {result.run_id} at {config.mlflow.tracking_uri}",
        "",
    ]
    lines += _sample_users(spark, lake)
    lines += ["", "Stage timings: " + ", ".join(f"{s} {t:.0f}s" for s, t in timings.items()), ""]
    return "\n".join(lines)


def _sample_users(spark: SparkSession, lake: Lake, users: int = 3) -> list[str]:
    recs = lake.read(spark, RECOMMENDATIONS)
    sample = [
        r["user_id"]
        for r in recs.where("source = 'als'")
        .select("user_id")
        .distinct()
        .orderBy("user_id")
        .limit(users)
        .collect()
    ]
    events = lake.read(spark, EVENTS)
    lines = []
    for user in sample:
        history = (
            events.where(F.col("user_id") == user)
            .orderBy(F.desc("event_time"))
            .limit(8)
            .select("event_time", "event_type", "item_id")
            .collect()
        )
        top = recs.where(F.col("user_id") == user).orderBy("rank").collect()
        lines.append(f"User {user}:")
        lines.append("  recent history: " + ", ".join(f"{h['event_type']} {h['item_id']}" for h in history))
        lines.append("  recommended:    " + ", ".join(f"{r['item_id']} ({r['score']:.2f})" for r in top))
    return lines

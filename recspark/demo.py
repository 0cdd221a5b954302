"""The whole pipeline on the embedded default, and a report a newcomer can read."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.secrets import redact
from recspark.core.session import build_spark
from recspark.core.tables import EVENTS, INTERACTIONS, QUARANTINE, RECOMMENDATIONS, Lake
from recspark.datasets.shop.files import LandingNotEmptyError
from recspark.jobs import JOBS, Outcome, run_job
from recspark.model.families.model import ALL_FAMILIES
from recspark.model.training.train import TrainResult

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


MARKER = ".recspark-demo"
MARKER_TEXT = (
    "Written by `recspark demo`: this directory holds demo state. `recspark demo --fresh` deletes\n"
    "a configured path only when it is missing, empty, or marked by this file (a file path: in\n"
    "its directory), so a lake.root pointing at other data is never wiped.\n"
)


# The notebook the report points a newcomer to (relative to the repository root).
NOTEBOOK = "notebooks/explore_recspark.ipynb"


class UnsafeResetError(ValueError):
    """``--fresh`` was asked to delete a path the demo did not create."""


def _local_paths(config: Config) -> tuple[list[Path], list[Path]]:
    """The demo's own local state as (directories, files); remote URIs are never deleted."""
    dirs = [config.lake.root, config.ingest.path, config.mlflow.artifact_location]
    files = [config.catalog.path]
    if config.mlflow.tracking_uri.startswith("sqlite:///"):
        files.append(config.mlflow.tracking_uri.removeprefix("sqlite:///"))

    def local(paths: list[str | None]) -> list[Path]:
        return [Path(p) for p in paths if p and "://" not in p]

    return local(dirs), local(files)


def _marked(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def _deletable(path: Path, is_dir: bool) -> bool:
    """Missing, an empty directory, or marked as the demo's: a file by its directory's marker."""
    if not path.exists():
        return True
    if is_dir:
        return path.is_dir() and (_marked(path) or _absent_or_empty(path))
    return path.is_file() and _marked(path.parent)


def _absent_or_empty(directory: Path) -> bool:
    return not directory.exists() or (directory.is_dir() and not any(directory.iterdir()))


def mark_local_state(config: Config) -> None:
    """Create the demo's directories (and those of its files); mark those the demo creates.

    A directory that already held something unmarked stays unmarked: running the demo once
    against other data must not make it deletable by a later ``--fresh``.
    """
    dirs, files = _local_paths(config)
    directories = list(dict.fromkeys([*dirs, *(f.parent for f in files)]))
    ours = [d for d in directories if _absent_or_empty(d)]  # decided before mkdir creates parents
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for directory in ours:
        (directory / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def reset_local_state(config: Config) -> None:
    """Delete the demo's local state; refuse (deleting nothing) if any of it is not the demo's."""
    dirs, files = _local_paths(config)
    targets = [(p, True) for p in dirs] + [(p, False) for p in files]
    for path, is_dir in targets:
        if not _deletable(path, is_dir):
            holder = path if is_dir else path.parent
            raise UnsafeResetError(
                f"--fresh refuses to delete {path}: {holder} has no {MARKER} marker, so recspark "
                f"demo did not create it; delete it yourself or configure another path"
            )
    for path, _ in targets:
        if path.is_dir():
            log.info("demo --fresh: deleting %s", path)
            shutil.rmtree(path)
        elif path.exists():
            log.info("demo --fresh: deleting %s", path)
            path.unlink()


# After `generate`, the demo's stages: these jobs of the registry with these arguments.
STAGES: tuple[tuple[str, dict[str, object]], ...] = (
    ("ingest", {"once": True}),
    ("train", {}),
    ("recommend", {}),
)


def _stage(name: str, options: dict[str, object], config: Config) -> tuple[float, Outcome]:
    """Run one job as the CLI runs it; returns the seconds it took and what it reported."""
    job = JOBS[name]
    started = time.time()
    outcome = run_job(job, job.options(**options), config)
    return time.time() - started, outcome


def run_demo(config: Config, fresh: bool) -> None:
    """``recspark generate``, ``ingest --once``, ``train`` and ``recommend`` exactly as the CLI
    runs them (the same functions, gates and ``job_runs`` rows), then the report.

    Generating needs no Spark, and a generate that failed (files already landed) says so at
    once: the session every later stage reuses starts after it."""
    if fresh:
        reset_local_state(config)
    mark_local_state(config)
    lake = Lake.at(config.lake.root, config.lake.database)
    try:
        timings = {"generate": _stage("generate", {}, config)[0]}
    except LandingNotEmptyError as exc:
        raise LandingNotEmptyError(f"{exc}; or run `recspark demo --fresh` to start over") from exc
    spark = build_spark(config, "demo")
    result: TrainResult | None = None
    for name, options in STAGES:
        timings[name], outcome = _stage(name, options, config)
        if isinstance(outcome.result, TrainResult):
            result = outcome.result
    assert result is not None, "the demo's stages include train"
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
        f"Evaluation on {result.test_period} ({int(m.get('test_users', 0))} test users "
        f"with a new item), K={k}:",
        f"  {'metric':<16}{result.family.upper():>10}{'popular':>10}{'category popular':>18}",
    ]
    for name in REPORT_METRICS:
        by_category = m.get(f"category_popular_{name}", float("nan"))
        lines.append(f"  {name:<16}{m[name]:>10.4f}{m['popular_' + name]:>10.4f}{by_category:>18.4f}")
    verdict = "champion" if result.promoted else f"challenger ({result.status})"
    lines += [
        "",
        f"Model version {result.model_version} ({result.family}) is {verdict}: {result.reason}",
        f"MLflow run {result.run_id} at {redact(config.mlflow.tracking_uri)}",
        "",
    ]
    sample = _sample_user_ids(spark, lake)
    lines += _sample_users(spark, lake, sample)
    lines += ["", "Stage timings: " + ", ".join(f"{s} {t:.0f}s" for s, t in timings.items()), ""]
    lines += next_steps(config, sample[0] if sample else None)
    return "\n".join(lines)


def next_steps(config: Config, user_id: str | None) -> list[str]:
    """Where a newcomer goes from here: the report's last lines, commands to copy."""
    steps = [("recspark status", "tables, champion, job runs (ingest, train, recommend), quality gates")]
    if user_id is not None:
        steps.append((f"recspark show {user_id}", "one user's list, why, and their recent history"))
    tracking = redact(config.mlflow.tracking_uri)
    steps.append((f"mlflow ui --backend-store-uri {tracking}", "the training runs and registered models"))
    steps.append((NOTEBOOK, "open in Jupyter or VS Code: tables, time travel, runs (notebooks/README.md)"))
    width = max(len(command) for command, _ in steps)
    return [
        "Next, from the repository root (the commands are in .venv/bin):",
        *(f"  {command:<{width}}  # {what}" for command, what in steps),
        "",
    ]


def _sample_user_ids(spark: SparkSession, lake: Lake, users: int = 3) -> list[str]:
    """A few users with personalised lists (any users with a list if none has one)."""
    recs = lake.read(spark, RECOMMENDATIONS).select("user_id", "source")
    for rows in (recs.where(F.col("source").isin(*ALL_FAMILIES)), recs):
        sample = [
            r["user_id"] for r in rows.select("user_id").distinct().orderBy("user_id").limit(users).collect()
        ]
        if sample:
            return sample
    return []


def _sample_users(spark: SparkSession, lake: Lake, sample: list[str]) -> list[str]:
    recs = lake.read(spark, RECOMMENDATIONS)
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

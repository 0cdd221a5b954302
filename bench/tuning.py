"""Benchmark: `recspark train` at its defaults (tuning included), phase by phase and trial by trial.

    .venv/bin/python bench/tuning.py --log generated --events 100000   # a generated 100k-event shop
    .venv/bin/python bench/tuning.py --log demo        # the demo shop (`recspark generate` defaults)
    .venv/bin/python bench/tuning.py --log retail      # the shop log's past, as bench/quality.py

1. Writes the log's events into a fresh lake (``events`` and ``interactions`` as Delta tables,
   the catalog as JSON lines; the ingest job has its own benchmark) and leaves every setting at
   the embedded default except the paths.
2. Runs the real training job (`recspark.model.training.train.train`) ``--trains`` times: the first tunes
   (no plan yet), a second runs as the next nightly train would (the plan is fresh). Prints wall
   time per phase (``seconds_read|tune|evaluate|fit|log``), the family chosen, NDCG@K, and how
   many Spark jobs each phase ran.
3. With ``--profile``, times tuning's own steps as it runs them: each trial's fit and scoring
   (and their Spark jobs), what is built once before the first trial. It wraps the functions the
   search calls by name, so it works on any revision that has them (old code in its own clone).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _spark_jobs(spark: Any) -> int:
    """How many Spark jobs the session has started so far (job ids are consecutive)."""
    ids = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    return (max(ids) + 1) if ids else 0


class Profile:
    """Wall time and Spark jobs of named steps, in the order they ran."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.steps: list[dict[str, Any]] = []

    def wrap(self, module: Any, name: str, label: Callable[..., str]) -> None:
        """Time every call of ``module.name`` (if the revision has it) as one step."""
        original = getattr(module, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            jobs, started = _spark_jobs(self.spark), time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self.steps.append(
                    {
                        "step": label(*args, **kwargs),
                        "seconds": round(time.time() - started, 2),
                        "jobs": _spark_jobs(self.spark) - jobs,
                    }
                )

        setattr(module, name, timed)


def install_profile(spark: Any) -> Profile:
    import recspark.model.tuning.search as tune

    profile = Profile(spark)

    def spec_of(*args: Any, **kwargs: Any) -> str:
        spec = next((a for a in args if hasattr(a, "label") and hasattr(a, "family")), None)
        return f"fit {spec.label()}" if spec is not None else "fit"

    def trial_of(*args: Any, **kwargs: Any) -> str:
        spec = next((a for a in args if hasattr(a, "label") and hasattr(a, "family")), None)
        return f"score {spec.label()}" if spec is not None else "score"

    for name in ("fit_model", "fit_family"):
        profile.wrap(tune, name, spec_of)
    profile.wrap(tune, "_trial", trial_of)
    profile.wrap(tune, "measure_fallback", lambda *a, **k: "fallback: trending vs popular")
    profile.wrap(tune, "split_period", lambda *a, **k: "validation training data")
    profile.wrap(tune, "choose_split", lambda *a, **k: "validation split")
    profile.wrap(tune, "Holdout", lambda *a, **k: "validation holdout")
    # What train does around tuning (old and new code alike).
    import recspark.model.evaluation.holdout as holdout
    import recspark.model.training.train as train

    profile.wrap(train, "read_inputs", lambda *a, **k: "train: read inputs")
    profile.wrap(train, "split_period", lambda *a, **k: "train: test split's training data")
    profile.wrap(train, "judge", lambda *a, **k: "train: judge (fits, scores, decision)")
    profile.wrap(train, "fit_model", lambda spark, spec, *a, **k: f"train: fit {spec.family}")
    profile.wrap(train, "training_data", lambda *a, **k: "train: all data")
    profile.wrap(train, "_log_run", lambda *a, **k: "train: MLflow run and registered model")
    profile.wrap(train, "write_model_tables", lambda *a, **k: "train: model tables")
    profile.wrap(train, "move_alias", lambda *a, **k: "train: alias")
    profile.wrap(holdout.Holdout, "score", lambda self, name, *a, **k: f"holdout: score {name}")
    return profile


def logged_trials(config: Any, run_id: str) -> list[dict[str, Any]]:
    """The tuning run's trials as MLflow has them (fit and scoring seconds where logged)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    parent = mlflow.get_run(run_id)
    children = MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    keys = ("family", "rank", "reg_param", "alpha", "max_iter", "ease_l2", "ease_signal", "blend_weight")
    return [
        {
            "settings": ", ".join(f"{k}={c.data.params[k]}" for k in keys if k in c.data.params),
            "ndcg_at_k": round(c.data.metrics.get("ndcg_at_k", float("nan")), 4),
            "fit_seconds": round(c.data.metrics.get("fit_seconds", float("nan")), 2),
            "score_seconds": round(c.data.metrics.get("score_seconds", float("nan")), 2),
        }
        for c in children
    ]


def events_of(
    log: str, events: int, path: Path | None, users: int | None, items: int | None
) -> tuple[Any, Any]:
    """(catalog or None, events) of the log, as pandas frames in the contract's columns."""
    import pandas as pd

    from recspark.core.config.operations import GenerateConfig
    from recspark.datasets.shop.events import generate_events
    from recspark.datasets.shop.spec import ShopSpec

    if log == "retail":
        sys.path.insert(0, str(ROOT / "bench"))
        from quality import RETAIL, retail_events, split_newest

        past, _ = split_newest(retail_events(path or RETAIL))
        return None, past.reset_index(drop=True)
    spec = ShopSpec.from_config(GenerateConfig())
    if log == "generated":
        spec = ShopSpec(
            users=users or spec.users,
            items=items or spec.items,
            categories=spec.categories,
            events=events,
            days=spec.days,
        )
    catalog, frame = generate_events(spec)
    return catalog, pd.DataFrame(frame)


def prepare_lake(spark: Any, config: Any, lake: Any, catalog: Any, events: Any) -> int:
    from recspark.datasets.history import load_history

    if catalog is not None:
        path = Path(config.catalog.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        catalog.assign(updated_at=catalog["updated_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_json(
            path, orient="records", lines=True
        )
    columns = ["event_id", "event_time", "user_id", "item_id", "event_type", "value", "session_id"]
    frame = spark.createDataFrame(
        events.reindex(columns=columns).astype({"value": "float64", "session_id": "object"}),
        "event_id string, event_time timestamp, user_id string, item_id string, event_type string, "
        "value double, session_id string",
    )
    return load_history(spark, config, lake, frame, "bench")


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(Path.cwd()), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", choices=("generated", "demo", "retail"), default="generated")
    parser.add_argument("--events", type=int, default=100_000, help="generated: events (else ignored)")
    parser.add_argument("--users", type=int, default=None, help="generated: users (default: generate's)")
    parser.add_argument("--items", type=int, default=None, help="generated: items (default: generate's)")
    parser.add_argument("--path", type=Path, default=None, help="retail: the log file")
    parser.add_argument("--trains", type=int, default=1, help="training runs in a row")
    parser.add_argument("--profile", action="store_true", help="time tuning's steps trial by trial")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recspark config override"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "mlflow", "alembic", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from recspark.core.config import load_config
    from recspark.core.session import build_spark
    from recspark.core.tables import EVENTS, Lake
    from recspark.model.training.train import train
    from recspark.ops.quality.gate import gate_for

    root = args.workdir or Path(tempfile.mkdtemp(prefix="recspark-bench-tuning-"))
    catalog, events = events_of(args.log, args.events, args.path, args.users, args.items)
    config = load_config(
        None,
        [
            f"lake.root={root / 'lake'}",
            f"ingest.path={root / 'incoming' / 'events'}",
            f"catalog.path={root / 'incoming' / 'catalog.jsonl'}"
            if catalog is not None
            else "catalog.path=null",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"mlflow.artifact_location={root / 'mlartifacts'}",
            "spark.conf.spark.ui.retainedJobs=100000",
            *args.set,
        ],
        environ={},
    )
    spark = build_spark(config, "bench-tuning")
    lake = Lake.at(config.lake.root)
    started = time.time()
    pairs = prepare_lake(spark, config, lake, catalog, events)
    n_events = lake.read(spark, EVENTS).count()
    print(
        f"{args.log}: {n_events:,} events, {pairs:,} user-item pairs in {time.time() - started:.0f} s",
        flush=True,
    )
    profile = install_profile(spark) if args.profile else None

    runs = []
    for attempt in range(1, args.trains + 1):
        jobs, started = _spark_jobs(spark), time.time()
        result = train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))
        total = time.time() - started
        run: dict[str, Any] = {
            "train_seconds": round(total, 1),
            "phases": result.phase_seconds,
            "spark_jobs": _spark_jobs(spark) - jobs,
            "family": result.family,
            "status": result.status,
            "ndcg_at_k": round(result.metrics["ndcg_at_k"], 4),
            "popular_ndcg_at_k": round(result.metrics["popular_ndcg_at_k"], 4),
        }
        runs.append(run)
        print(f"train run {attempt}: {json.dumps(run)}", flush=True)
        if result.tuned_from_run is not None and attempt == 1:
            run["trials"] = logged_trials(config, result.tuned_from_run)
            for trial in run["trials"]:
                print(
                    f"  trial: fit {trial['fit_seconds']} s, scoring {trial['score_seconds']} s, "
                    f"ndcg {trial['ndcg_at_k']}  {trial['settings']}",
                    flush=True,
                )
        if profile is not None and attempt == 1:
            for step in profile.steps:
                print(f"  {step['seconds']:7.2f} s {step['jobs']:5d} jobs  {step['step']}", flush=True)
            fits = [s for s in profile.steps if s["step"].startswith("fit")]
            scores = [s for s in profile.steps if s["step"].startswith("score")]
            run["profile"] = {
                "fit_seconds": round(sum(s["seconds"] for s in fits), 1),
                "fit_jobs": sum(s["jobs"] for s in fits),
                "score_seconds": round(sum(s["seconds"] for s in scores), 1),
                "score_jobs": sum(s["jobs"] for s in scores),
                "steps": profile.steps,
            }
    print(
        json.dumps(
            {
                "log": args.log,
                "events": n_events,
                "pairs": pairs,
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "commit": commit(),
                "runs": runs,
            }
        )
    )
    spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

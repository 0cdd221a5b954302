"""``recspark`` command line: one subcommand per pipeline stage, all configured the same way."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recspark.core.config import Config, ConfigError, load_config
from recspark.core.secrets import redact, redact_handlers

log = logging.getLogger("recspark")

DEFAULT_CONF = "conf/local.yaml"


# What a tracked command reports for its job_runs row (rows_in, rows_out, model_version).
RunFigures = dict[str, Any] | None


class UsageError(RuntimeError):
    """A command was called in a way that cannot work; the message says how to fix it."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from recspark.core.catalog import CatalogError
    from recspark.core.registry import TrackingError
    from recspark.core.tables import MissingTableError
    from recspark.datasets.shop import LandingNotEmptyError
    from recspark.model.evaluation.metrics import EvaluationError
    from recspark.model.families.data import TrainingError
    from recspark.ops.quality import QualityGateError

    return (
        ConfigError,
        UsageError,
        MissingTableError,
        TrainingError,
        TrackingError,
        CatalogError,
        EvaluationError,
        QualityGateError,
        LandingNotEmptyError,
    )


def setup_logging(job: str) -> None:
    """INFO to stderr; every line redacted, since messages may quote URIs with credentials."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {job} %(name)s: %(message)s",
        force=True,
    )
    redact_handlers(logging.getLogger())
    for noisy in ("py4j", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", default=None, help=f"YAML config (default: {DEFAULT_CONF})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set serve.top_n=20 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    path = args.conf
    if path is None:
        path = DEFAULT_CONF if Path(DEFAULT_CONF).is_file() else None
    return load_config(path, args.overrides)


def _lake(config: Config):
    from recspark.core.tables import Lake

    return Lake.at(config.lake.root, config.lake.database)


def _spark(config: Config, job: str):
    from recspark.core.session import build_spark

    return build_spark(config, job)


# Runs of these commands are recorded in the job_runs table (success or failure).
TRACKED_JOBS = {
    "ingest",
    "train",
    "tune",
    "recommend",
    "refresh",
    "rebuild-interactions",
    "maintain",
    "check",
    "forget-user",
    "promote",
    "rollback",
}


def cmd_generate(args: argparse.Namespace, config: Config) -> None:
    from recspark.datasets.shop import ShopSpec, write_shop

    sizes = {name: getattr(args, name) for name in ("users", "items", "events", "days", "seed")}
    try:
        spec = ShopSpec.from_config(config.generate, **{k: v for k, v in sizes.items() if v is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if config.catalog.path is None:
        raise UsageError("catalog.path is not set: generate needs somewhere to write the catalog")
    summary = write_shop(spec, Path(config.ingest.path), Path(config.catalog.path))
    print(
        f"generated {summary.events} events ({summary.duplicates} duplicates, {summary.bad_lines} "
        f"broken lines) for {summary.users} users and {summary.items} items in {summary.files} "
        f"files under {config.ingest.path}; catalog at {config.catalog.path}"
    )


def cmd_ingest(args: argparse.Namespace, config: Config) -> RunFigures:
    from recspark.ingest.stream import run_ingest

    if (
        config.ingest.source == "files"
        and not Path(config.ingest.path).is_dir()
        and "://" not in config.ingest.path
    ):
        raise UsageError(f"ingest.path {config.ingest.path} is not a directory (run `recspark generate`?)")
    from recspark.core.tables import EVENTS, INTERACTIONS
    from recspark.ops.quality import gate_table
    from recspark.ops.runs import ingest_counts

    started = datetime.now(timezone.utc)
    spark, lake = _spark(config, "ingest"), _lake(config)
    run_ingest(spark, config, lake, once=args.once)
    if not args.once:
        return None
    # This run's rows only: the whole tables are checked on a schedule (`recspark check`).
    for spec in (EVENTS, INTERACTIONS):
        gate_table(spark, config, lake, spec, job="ingest", written_since=started)
    rows_in, rows_out = ingest_counts(spark, lake, started)  # from the ingest_metrics rows it wrote
    return {"rows_in": rows_in, "rows_out": rows_out}


def cmd_train(args: argparse.Namespace, config: Config) -> RunFigures:
    from recspark.model.training.train import train
    from recspark.ops.quality import gate_for

    spark, lake = _spark(config, "train"), _lake(config)
    result = train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))
    verdict = {
        "promoted": "promoted to champion",
        "challenger": "registered as challenger",
        "insufficient_evidence": "registered as challenger (insufficient evidence)",
    }[result.status]
    print(
        f"model version {result.model_version} ({result.family}) {verdict}: {result.reason} "
        f"(run {result.run_id})"
    )
    return {"model_version": result.model_version, "rows_out": 1}


def cmd_tune(args: argparse.Namespace, config: Config) -> RunFigures:
    from recspark.model.tuning.search import tune

    result = tune(_spark(config, "tune"), config, _lake(config))
    plan = result.plan
    scores = ", ".join(f"{family} {score:.4f}" for family, score in sorted(plan.scores.items()))
    print(
        f"best: {plan.spec(config).label()} ({plan.metric} {plan.value:.4f} on {plan.validation}; "
        f"each family's best: {scores}), written to {result.path} (run {result.run_id})"
    )
    return {"rows_out": len(plan.scores)}


def cmd_recommend(args: argparse.Namespace, config: Config) -> RunFigures:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality import gate_for
    from recspark.serve.publish import published_model_version, recommend

    spark, lake = _spark(config, "recommend"), _lake(config)
    users = recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"))
    print(f"recommendations written for {users} users")
    return {
        "rows_out": lake.read(spark, RECOMMENDATIONS).count(),
        "model_version": published_model_version(spark, lake),
    }


def cmd_refresh(args: argparse.Namespace, config: Config) -> RunFigures:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality import gate_for, gate_table
    from recspark.serve.publish import published_model_version, unavailable_item_ids
    from recspark.serve.refresh import run_refresh

    started = datetime.now(timezone.utc)
    spark, lake = _spark(config, "refresh"), _lake(config)
    run_refresh(spark, config, lake, once=args.once, gate=gate_for(spark, config, lake, "refresh"))
    if args.once:
        # The lists this run wrote (every list when it published in full).
        gate_table(
            spark,
            config,
            lake,
            RECOMMENDATIONS,
            job="refresh",
            written_since=started,
            unavailable_items=unavailable_item_ids(spark, config),
        )
        return {"model_version": published_model_version(spark, lake)}
    return None


def cmd_promote(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.registry import configure_mlflow, promote

    configure_mlflow(config.mlflow)
    spark, lake = _spark(config, "promote"), _lake(config)
    previous = promote(spark, lake, config.mlflow, str(args.version), "promoted by operator")
    print(f"version {args.version} is champion (was {previous})")


def cmd_rollback(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.registry import configure_mlflow, rollback

    configure_mlflow(config.mlflow)
    spark, lake = _spark(config, "rollback"), _lake(config)
    print(f"version {rollback(spark, lake, config.mlflow)} is champion again")


def cmd_rebuild_interactions(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import rebuild_interactions

    pairs = rebuild_interactions(_spark(config, "rebuild-interactions"), config, _lake(config))
    print(f"interactions rebuilt from events: {pairs} user-item pairs")


def cmd_check(args: argparse.Namespace, config: Config) -> RunFigures:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality import check_tables
    from recspark.serve.publish import unavailable_item_ids

    spark, lake = _spark(config, "check"), _lake(config)
    checks = {}
    if lake.exists(spark, RECOMMENDATIONS):  # the catalog matters only to the served lists
        checks[RECOMMENDATIONS.name] = {"unavailable_items": unavailable_item_ids(spark, config)}
    results = check_tables(spark, config, lake, checks)
    for result in results:
        print(result.summary())
    return {"rows_in": sum(r.rows or 0 for r in results)}


def cmd_maintain(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import maintain

    done = maintain(_spark(config, "maintain"), _lake(config), config.maintenance.vacuum_retention_hours)
    for table, outcome in done.items():
        print(f"{table}: {outcome}")


def cmd_forget_user(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.forget import forget_user

    deleted = forget_user(_spark(config, "forget-user"), _lake(config), args.user_id)
    print(
        f"user {args.user_id} deleted: "
        + ", ".join(f"{table} {rows}" for table, rows in deleted.items())
        + ". Run `recspark maintain` after the retention period to remove the old files for good."
    )


def cmd_status(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.runs import gather_status, render_status, status_json

    snapshot = gather_status(_spark(config, "status"), config, _lake(config))
    if args.json:
        print(json.dumps(status_json(snapshot), indent=2))
    else:
        print(render_status(snapshot), end="")


def cmd_show(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.lookup import lookup_json, lookup_user, render_lookup

    lake = _lake(config)
    found = lookup_user(_spark(config, "show"), lake, args.user_id)
    if not found.known:
        raise UsageError(
            f"unknown user {args.user_id!r}: no recommendations and no events in the lake at {lake.root}"
        )
    if args.json:
        print(json.dumps(lookup_json(found), indent=2))
    else:
        print(render_lookup(found), end="")


def cmd_demo(args: argparse.Namespace, config: Config) -> None:
    from recspark.demo import UnsafeResetError, run_demo

    try:
        run_demo(config, fresh=args.fresh)
    except UnsafeResetError as exc:
        raise UsageError(str(exc)) from exc


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Config], RunFigures], str]] = {
    "generate": (cmd_generate, "write a synthetic shop: catalog and event files"),
    "ingest": (cmd_ingest, "stream event files (or Kafka) into the Delta tables"),
    "train": (cmd_train, "train ALS, evaluate it, log to MLflow, promote if better"),
    "tune": (cmd_tune, "search rank/reg_param/alpha on a validation split; train uses the best"),
    "recommend": (cmd_recommend, "write top-N per user from the champion model"),
    "refresh": (cmd_refresh, "keep recommendations fresh for users with new activity"),
    "promote": (cmd_promote, "make a registered model version the champion"),
    "rollback": (cmd_rollback, "give champion back to the previous champion"),
    "rebuild-interactions": (
        cmd_rebuild_interactions,
        "recompute interactions from all events (after changing weights)",
    ),
    "maintain": (cmd_maintain, "OPTIMIZE and VACUUM every table"),
    "check": (cmd_check, "run every quality suite on its whole table (the scheduled check)"),
    "forget-user": (cmd_forget_user, "delete one user's rows from every table"),
    "status": (cmd_status, "on-call overview: tables, champion, recent job runs, quality gates"),
    "show": (cmd_show, "one user's current recommendations, recent history and model version"),
    "demo": (cmd_demo, "generate -> ingest -> train -> recommend, then print a report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recspark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(command)
        if name == "generate":
            for flag in ("users", "items", "events", "days", "seed"):
                command.add_argument(f"--{flag}", type=int, default=None)
        if name in ("ingest", "refresh"):
            command.add_argument(
                "--once", action="store_true", help="process what is available now, then stop"
            )
        if name in ("forget-user", "show"):
            command.add_argument("user_id", help="the shop's user id")
        if name in ("status", "show"):
            command.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        if name == "promote":
            command.add_argument("version", help="registered model version")
        if name == "demo":
            command.add_argument(
                "--fresh", action="store_true", help="delete the demo lake and MLflow store first"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.command)
    handler, _ = COMMANDS[args.command]
    started = time.time()
    try:
        config = config_from_args(args)
        if args.command in TRACKED_JOBS:
            from recspark.ops.runs import active_spark, track_job

            with track_job(active_spark, _lake(config), args.command) as run:
                for name, value in (handler(args, config) or {}).items():
                    setattr(run, name, value)  # what the job_runs row reports
        else:
            handler(args, config)
    except _expected_errors() as exc:
        print(redact(f"recspark {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recspark {args.command}: interrupted", file=sys.stderr)
        return 130
    log.info("%s finished in %.1fs", args.command, time.time() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

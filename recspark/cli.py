"""``recspark`` command line: one subcommand per pipeline stage, all configured the same way."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recspark.core.config import Config, ConfigError, load_config

log = logging.getLogger("recspark")

DEFAULT_CONF = "conf/local.yaml"


class UsageError(RuntimeError):
    """A command was called in a way that cannot work; the message says how to fix it."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from recspark.core.catalog import CatalogError
    from recspark.core.registry import TrackingError
    from recspark.core.tables import MissingTableError
    from recspark.model.evaluation import EvaluationError
    from recspark.model.train import TrainingError
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
    )


def setup_logging(job: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {job} %(name)s: %(message)s",
        force=True,
    )
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
    "forget-user",
}


def _gate(spark, config: Config, lake, spec, job: str, **kwargs) -> None:
    """Validate a table at its current version with the quality suite of the same name."""
    from recspark.ops.quality import run_gate

    version = lake.version(spark, spec)
    run_gate(spark, config, lake, spec.name, lake.read(spark, spec, version), job, version, **kwargs)


def cmd_generate(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.generate import ShopSpec, write_shop

    g = config.generate
    try:
        spec = ShopSpec(
            users=args.users or g.users,
            items=args.items or g.items,
            categories=g.categories,
            events=args.events or g.events,
            days=args.days or g.days,
            seed=args.seed if args.seed is not None else g.seed,
            bad_fraction=g.bad_fraction,
            duplicate_fraction=g.duplicate_fraction,
        )
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


def cmd_ingest(args: argparse.Namespace, config: Config) -> None:
    from recspark.ingest.stream import run_ingest

    if (
        config.ingest.source == "files"
        and not Path(config.ingest.path).is_dir()
        and "://" not in config.ingest.path
    ):
        raise UsageError(f"ingest.path {config.ingest.path} is not a directory (run `recspark generate`?)")
    from recspark.core.tables import EVENTS, INTERACTIONS

    spark, lake = _spark(config, "ingest"), _lake(config)
    run_ingest(spark, config, lake, once=args.once)
    if args.once:
        _gate(spark, config, lake, EVENTS, "ingest")
        _gate(spark, config, lake, INTERACTIONS, "ingest")
        _record_ingest_rows(spark, lake, args)


def cmd_train(args: argparse.Namespace, config: Config) -> None:
    from recspark.model.train import train
    from recspark.ops.quality import gate_for

    spark, lake = _spark(config, "train"), _lake(config)
    result = train(spark, config, lake, gate=gate_for(spark, config, lake, "train"))
    if args.job_run is not None:
        args.job_run.model_version = result.model_version
        args.job_run.rows_out = 1
    verdict = "promoted to champion" if result.promoted else "registered as challenger"
    print(f"model version {result.model_version} {verdict}: {result.reason} (run {result.run_id})")


def cmd_tune(args: argparse.Namespace, config: Config) -> None:
    from recspark.model.tune import tune

    result = tune(_spark(config, "tune"), config, _lake(config))
    if args.job_run is not None:
        args.job_run.rows_out = len(result.trials)
    print(
        f"best of {len(result.trials)} trials: {result.best.params} ({result.best.metric} "
        f"{result.best.value:.4f} on the validation period), written to {result.path} (run {result.run_id})"
    )


def cmd_recommend(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality import gate_for
    from recspark.serve.publish import published_model_version, recommend

    spark, lake = _spark(config, "recommend"), _lake(config)
    users = recommend(spark, config, lake, gate=gate_for(spark, config, lake, "recommend"))
    if args.job_run is not None:
        args.job_run.rows_out = lake.read(spark, RECOMMENDATIONS).count()
        args.job_run.model_version = published_model_version(spark, lake)
    print(f"recommendations written for {users} users")


def cmd_refresh(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality import gate_for
    from recspark.serve.publish import published_model_version, unavailable_item_ids
    from recspark.serve.refresh import run_refresh

    spark, lake = _spark(config, "refresh"), _lake(config)
    run_refresh(spark, config, lake, once=args.once, gate=gate_for(spark, config, lake, "refresh"))
    if args.once:
        _gate(
            spark,
            config,
            lake,
            RECOMMENDATIONS,
            "refresh",
            top_n=config.serve.top_n,
            unavailable_items=unavailable_item_ids(spark, config),
        )
        if args.job_run is not None:
            args.job_run.model_version = published_model_version(spark, lake)


def cmd_promote(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.registry import configure_mlflow, promote

    configure_mlflow(config.mlflow)
    previous = promote(config.mlflow, str(args.version), "promoted by operator")
    print(f"version {args.version} is champion (was {previous})")


def cmd_rollback(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.registry import configure_mlflow, rollback

    configure_mlflow(config.mlflow)
    print(f"version {rollback(config.mlflow)} is champion again")


def cmd_rebuild_interactions(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import rebuild_interactions

    pairs = rebuild_interactions(_spark(config, "rebuild-interactions"), config, _lake(config))
    print(f"interactions rebuilt from events: {pairs} user-item pairs")


def cmd_maintain(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import maintain

    done = maintain(_spark(config, "maintain"), _lake(config), config.maintenance.vacuum_retention_hours)
    for table, outcome in done.items():
        print(f"{table}: {outcome}")


def cmd_forget_user(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import forget_user

    deleted = forget_user(_spark(config, "forget-user"), _lake(config), args.user_id)
    print(
        f"user {args.user_id} deleted: "
        + ", ".join(f"{table} {rows}" for table, rows in deleted.items())
        + ". Run `recspark maintain` after the retention period to remove the old files for good."
    )


def cmd_status(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.runs import status_report

    print(status_report(_spark(config, "status"), config, _lake(config)), end="")


def _record_ingest_rows(spark, lake, args: argparse.Namespace) -> None:
    """Rows in/out of this run, from the ingest_metrics rows it wrote."""
    if args.job_run is None:
        return
    from pyspark.sql import functions as F

    from recspark.core.tables import INGEST_METRICS

    row = (
        lake.read(spark, INGEST_METRICS)
        .where(F.col("started_at") >= F.lit(args.job_run.started_at))
        .agg(F.sum("input_rows"), F.sum("events_written"))
        .first()
    )
    args.job_run.rows_in, args.job_run.rows_out = (int(v or 0) for v in row)


def cmd_demo(args: argparse.Namespace, config: Config) -> None:
    from recspark.demo import run_demo

    run_demo(config, fresh=args.fresh)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Config], None], str]] = {
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
    "forget-user": (cmd_forget_user, "delete one user's rows from every table"),
    "status": (cmd_status, "on-call overview: tables, champion, recent job runs, quality gates"),
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
        if name == "forget-user":
            command.add_argument("user_id", help="the shop's user id")
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
        args.job_run = None
        if args.command in TRACKED_JOBS:
            from recspark.ops.runs import active_spark, track_job

            with track_job(active_spark, _lake(config), args.command) as run:
                args.job_run = run
                handler(args, config)
        else:
            handler(args, config)
    except _expected_errors() as exc:
        print(f"recspark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recspark {args.command}: interrupted", file=sys.stderr)
        return 130
    log.info("%s finished in %.1fs", args.command, time.time() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

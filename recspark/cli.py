"""``recspark`` command line: one subcommand per pipeline stage, all configured the same way."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recspark.config import Config, ConfigError, load_config

log = logging.getLogger("recspark")

DEFAULT_CONF = "conf/local.yaml"


class UsageError(RuntimeError):
    """A command was called in a way that cannot work; the message says how to fix it."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from recspark.catalog import CatalogError
    from recspark.evaluation import EvaluationError
    from recspark.tables import MissingTableError
    from recspark.tracking import TrackingError
    from recspark.training import TrainingError

    return (
        ConfigError,
        UsageError,
        MissingTableError,
        TrainingError,
        TrackingError,
        CatalogError,
        EvaluationError,
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
    from recspark.tables import Lake

    return Lake.at(config.lake.root, config.lake.database)


def _spark(config: Config, job: str):
    from recspark.session import build_spark

    return build_spark(config, job)


def cmd_generate(args: argparse.Namespace, config: Config) -> None:
    from recspark.generate import ShopSpec, write_shop

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
    from recspark.ingest import run_ingest

    if (
        config.ingest.source == "files"
        and not Path(config.ingest.path).is_dir()
        and "://" not in config.ingest.path
    ):
        raise UsageError(f"ingest.path {config.ingest.path} is not a directory (run `recspark generate`?)")
    run_ingest(_spark(config, "ingest"), config, _lake(config), once=args.once)


def cmd_train(args: argparse.Namespace, config: Config) -> None:
    from recspark.training import train

    result = train(_spark(config, "train"), config, _lake(config))
    verdict = "promoted to champion" if result.promoted else "registered as challenger"
    print(f"model version {result.model_version} {verdict}: {result.reason} (run {result.run_id})")


def cmd_recommend(args: argparse.Namespace, config: Config) -> None:
    from recspark.serving import recommend

    users = recommend(_spark(config, "recommend"), config, _lake(config))
    print(f"recommendations written for {users} users")


def cmd_promote(args: argparse.Namespace, config: Config) -> None:
    from recspark.tracking import configure_mlflow, promote

    configure_mlflow(config.mlflow)
    previous = promote(config.mlflow, str(args.version), "promoted by operator")
    print(f"version {args.version} is champion (was {previous})")


def cmd_rollback(args: argparse.Namespace, config: Config) -> None:
    from recspark.tracking import configure_mlflow, rollback

    configure_mlflow(config.mlflow)
    print(f"version {rollback(config.mlflow)} is champion again")


def cmd_demo(args: argparse.Namespace, config: Config) -> None:
    from recspark.demo import run_demo

    run_demo(config, fresh=args.fresh)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Config], None], str]] = {
    "generate": (cmd_generate, "write a synthetic shop: catalog and event files"),
    "ingest": (cmd_ingest, "stream event files (or Kafka) into the Delta tables"),
    "train": (cmd_train, "train ALS, evaluate it, log to MLflow, promote if better"),
    "recommend": (cmd_recommend, "write top-N per user from the champion model"),
    "promote": (cmd_promote, "make a registered model version the champion"),
    "rollback": (cmd_rollback, "give champion back to the previous champion"),
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
        if name == "ingest":
            command.add_argument(
                "--once", action="store_true", help="process what is available now, then stop"
            )
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

"""``recspark`` command line: one subcommand per job of the registry (``recspark/jobs.py``), all
configured the same way."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from recspark.core.config import Config, ConfigError, load_config
from recspark.core.console import keep_terminal_for_people, setup_logging
from recspark.core.secrets import redact, redact_standard_streams
from recspark.jobs import JOBS, Argument, Job, UsageError, run_job

log = logging.getLogger("recspark")

DEFAULT_CONF = "conf/local.yaml"


def _expected_errors() -> tuple[type[BaseException], ...]:
    from recspark.core.catalog import CatalogError
    from recspark.core.registry import TrackingError
    from recspark.core.tables import MissingTableError
    from recspark.datasets.shop.files import LandingNotEmptyError
    from recspark.datasets.shoppers.lookup_client import LookupServiceError
    from recspark.model.evaluation.metrics import EvaluationError
    from recspark.model.families.data import TrainingError
    from recspark.ops.quality.result import QualityGateError

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
        LookupServiceError,
    )


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
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print library and JVM logs here too (else they go to <lake>/_logs/<command>.log)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    path = args.conf
    if path is None:
        path = DEFAULT_CONF if Path(DEFAULT_CONF).is_file() else None
    return load_config(path, args.overrides)


def run_demo(args: argparse.Namespace, config: Config) -> None:
    from recspark.demo import UnsafeResetError, run_demo

    try:
        run_demo(config, fresh=args.fresh)
    except UnsafeResetError as exc:
        raise UsageError(str(exc)) from exc


# The subcommands: every job of the registry, and the demo, which runs four of them.
COMMANDS: dict[str, Job] = {
    **JOBS,
    "demo": Job(
        "demo",
        "generate -> ingest -> train -> recommend, then print a report",
        run_demo,
        tracked=False,
        submit=False,
        arguments=(Argument("--fresh", "delete the demo lake and MLflow store first"),),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """A subcommand per job of the registry, and the demo, each with its arguments."""
    parser = argparse.ArgumentParser(prog="recspark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, job in COMMANDS.items():
        command = sub.add_parser(name, help=job.help, description=job.help)
        add_config_arguments(command)
        for argument in job.arguments:
            command.add_argument(argument.name, **argument.argparse_options())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    redact_standard_streams()  # first: a usage error quotes the arguments it was given
    args = build_parser().parse_args(argv)
    setup_logging(args.command)
    started = time.time()
    try:
        config = config_from_args(args)
        if not args.verbose:
            keep_terminal_for_people(args.command, config.lake.root)
        run_job(COMMANDS[args.command], args, config)
    except (ConfigError, UsageError) as exc:  # told apart without importing every stage (Spark, MLflow)
        print(redact(f"recspark {args.command}: error: {exc}"), file=sys.stderr)
        return 2
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

"""Every recspark job in one table: its name, what it runs, whether its runs are recorded in
``job_runs``, the gates on the rows it wrote, and its command-line arguments.

The ``recspark`` command (a subcommand per job), the demo (its stages), ``jobs/run.py`` (the
spark-submit entry point), ``deploy/submit.sh`` (``python -m recspark.jobs --names``), the
Airflow DAGs and the crontab all read this table, so each job has one name and one wiring.

Importing this module needs the standard library only: the Airflow scheduler, which has neither
pyspark nor recspark installed, executes this file on its own (``runpy.run_path``). The run
functions import the library inside their bodies, when a job runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recspark.core.config import Config
    from recspark.core.tables import Lake


class UsageError(RuntimeError):
    """A job was called in a way that cannot work; the message says how to fix it."""


class UnknownJobError(ValueError):
    """A name that is no registered job (or none that spark-submit can run)."""


@dataclass
class Outcome:
    """What a run reports: the figures of its ``job_runs`` row, and the library's own result
    for a caller that reports on it (the demo's report reads ``train``'s)."""

    rows_in: int | None = None
    rows_out: int | None = None
    model_version: str | None = None
    catalog_malformed_lines: int | None = None  # None: the job read no catalog
    result: object = None


FLAG, NUMBER, TEXT = "flag", "number", "text"


@dataclass(frozen=True)
class Argument:
    """One command-line argument of a job: ``--name`` is an option (a switch when ``kind`` is
    ``flag``), a bare name a positional argument."""

    name: str
    help: str
    kind: str = FLAG

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    @property
    def default(self) -> object:
        return False if self.kind == FLAG else None

    def argparse_options(self) -> dict[str, Any]:
        if self.kind == FLAG:
            return {"action": "store_true", "help": self.help}
        options: dict[str, Any] = {"help": self.help}
        if self.kind == NUMBER:
            options["type"] = int
        if self.name.startswith("-"):
            options["default"] = None
        return options


RunFunction = Callable[[argparse.Namespace, "Config"], "Outcome | None"]


@dataclass(frozen=True)
class Job:
    """A job: ``run(args, config)`` does the work and returns its figures.

    ``tracked``: each run appends a row to ``job_runs`` (succeeded, or failed with the error).
    ``gates``: the tables whose rows this run wrote are validated when it ends (the quality
    suite of the same name; a failing ``fail`` suite fails the run).
    ``submit``: a Spark application that ``jobs/run.py`` / ``deploy/submit.sh`` can run.
    ``scheduled_args``: what cron and Airflow add (streams stop once caught up).
    ``aliases``: former names that ``jobs/run.py`` and ``deploy/submit.sh`` still accept.
    """

    name: str
    help: str
    run: RunFunction
    tracked: bool
    submit: bool = True
    gates: tuple[str, ...] = ()
    arguments: tuple[Argument, ...] = ()
    scheduled_args: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def bounded(self, args: argparse.Namespace) -> bool:
        """Whether this run ends by itself once its input is processed: a stream with ``--once``,
        or any job that is no stream. Only a bounded run's rows are gated when it ends."""
        return bool(getattr(args, "once", True))

    def options(self, **given: object) -> argparse.Namespace:
        """This job's arguments at their defaults, with ``given`` values: what a caller other than
        the command line passes to :func:`run_job`."""
        known = {argument.dest: argument.default for argument in self.arguments}
        unknown = set(given) - set(known)
        if unknown:
            raise TypeError(f"job {self.name} has no argument {', '.join(sorted(unknown))}")
        return argparse.Namespace(**{**known, **given})


# --------------------------------------------------------------------------------------------
# Running a job


def run_job(job: Job, args: argparse.Namespace, config: Config) -> Outcome:
    """Run ``job`` the way every entry point does: when tracked, inside a ``job_runs`` record
    that the run's figures fill in, with the gates on the rows a bounded run wrote checked
    before the run counts as succeeded (a stream left running has no end to gate at)."""
    if not job.tracked:
        return job.run(args, config) or Outcome()
    from recspark.ops.runs import active_spark, track_job

    lake = _lake(config)
    with track_job(active_spark, lake, job.name) as run:
        outcome = job.run(args, config) or Outcome()
        run.rows_in, run.rows_out = outcome.rows_in, outcome.rows_out
        run.model_version = outcome.model_version
        run.catalog_malformed_lines = outcome.catalog_malformed_lines
        for table in job.gates if job.bounded(args) else ():
            _gate_written(
                active_spark() or _spark(config, job.name), config, lake, table, job.name, run.started_at
            )
    return outcome


def _gate_written(
    spark: SparkSession, config: Config, lake: Lake, table: str, job: str, since: datetime
) -> None:
    """The table's quality suite on the rows written at or after ``since`` (so the cost follows
    the run; ``check`` validates whole tables on a schedule)."""
    from recspark.ops.quality.gate import gate_table
    from recspark.ops.quality.suites import CHECKED_TABLES

    spec = {spec.name: spec for spec in CHECKED_TABLES}[table]
    checks = _table_checks(spark, config, lake, table, since)
    gate_table(spark, config, lake, spec, job=job, written_since=since, **checks)


def _table_checks(
    spark: SparkSession, config: Config, lake: Lake, table: str, since: datetime | None = None
) -> dict[str, Any]:
    """What a table's suite needs beyond its rows: the served lists (those written since
    ``since``, or all) are checked against the items that may not be recommended and the room
    of users whose lists are short."""
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.serve.publish import serving_checks

    if table == RECOMMENDATIONS.name:
        return serving_checks(spark, config, lake, written_since=since)
    return {}


def _catalog_malformed_lines(spark: SparkSession, config: Config) -> int | None:
    """The catalog's malformed lines, for the job_runs row of a job that read it (None when
    there is no catalog, or it cannot be read now: the job has said so itself)."""
    from recspark.core.catalog import CatalogError, load_catalog, summarize

    if config.catalog.path is None:
        return None
    try:
        return summarize(load_catalog(spark, config.catalog.path)).malformed_lines
    except CatalogError:
        return None


def _lake(config: Config) -> Lake:
    from recspark.core.tables import Lake

    return Lake.at(config.lake.root, config.lake.database)


def _spark(config: Config, job: str) -> SparkSession:
    from recspark.core.session import build_spark

    return build_spark(config, job)


# --------------------------------------------------------------------------------------------
# What each job runs (the library imported when the job runs)


def run_generate(args: argparse.Namespace, config: Config) -> None:
    from recspark.datasets.shop.files import write_shop
    from recspark.datasets.shop.spec import ShopSpec

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


def run_ingest(args: argparse.Namespace, config: Config) -> Outcome | None:
    from recspark.ingest.stream import run_ingest as stream_events
    from recspark.ops.runs import ingest_counts

    if (
        config.ingest.source == "files"
        and not Path(config.ingest.path).is_dir()
        and "://" not in config.ingest.path
    ):
        raise UsageError(f"ingest.path {config.ingest.path} is not a directory (run `recspark generate`?)")
    started = datetime.now(timezone.utc)
    spark, lake = _spark(config, "ingest"), _lake(config)
    stream_events(spark, config, lake, once=args.once)
    if not args.once:
        return None
    rows_in, rows_out = ingest_counts(spark, lake, started)  # from the ingest_metrics rows it wrote
    return Outcome(rows_in=rows_in, rows_out=rows_out)


def run_train(args: argparse.Namespace, config: Config) -> Outcome:
    from recspark.model.training.train import train
    from recspark.ops.quality.gate import gate_for

    spark, lake = _spark(config, "train"), _lake(config)
    gate = gate_for(spark, config, lake, "train")
    result = train(spark, config, lake, gate=gate, reset_serving=args.reset_serving)
    print(f"model version {result.model_version} ({result.family}) {result.outcome()} (run {result.run_id})")
    return Outcome(
        model_version=result.model_version,
        rows_out=1,
        catalog_malformed_lines=_catalog_malformed_lines(spark, config),
        result=result,
    )


def run_tune(args: argparse.Namespace, config: Config) -> Outcome:
    from recspark.model.tuning.search import tune

    result = tune(_spark(config, "tune"), config, _lake(config))
    plan = result.plan
    scores = ", ".join(f"{family} {score:.4f}" for family, score in sorted(plan.scores.items()))
    print(
        f"best: {plan.spec(config).label()} ({plan.metric} {plan.value:.4f} on {plan.validation}; "
        f"each family's best: {scores}), written to {result.path} (run {result.run_id})"
    )
    return Outcome(rows_out=len(plan.scores))


def run_recommend(args: argparse.Namespace, config: Config) -> Outcome:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality.gate import gate_for
    from recspark.serve.publish import published_model_version, recommend

    spark, lake = _spark(config, "recommend"), _lake(config)
    gate = gate_for(spark, config, lake, "recommend")
    users = recommend(spark, config, lake, gate=gate, reset_serving=args.reset_serving)
    print(f"recommendations written for {users} users")
    return Outcome(
        rows_out=lake.read(spark, RECOMMENDATIONS).count(),
        model_version=published_model_version(spark, lake),
        catalog_malformed_lines=_catalog_malformed_lines(spark, config),
    )


def run_refresh(args: argparse.Namespace, config: Config) -> Outcome | None:
    from recspark.ops.quality.gate import gate_for
    from recspark.serve.publish import published_model_version
    from recspark.serve.refresh import run_refresh as refresh_lists

    spark, lake = _spark(config, "refresh"), _lake(config)
    gate = gate_for(spark, config, lake, "refresh")
    refresh_lists(spark, config, lake, once=args.once, gate=gate, reset_serving=args.reset_serving)
    if not args.once:
        return None
    return Outcome(
        model_version=published_model_version(spark, lake),
        catalog_malformed_lines=_catalog_malformed_lines(spark, config),
    )


def run_promote(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.registry import configure_mlflow, promote

    configure_mlflow(config.mlflow)
    spark, lake = _spark(config, "promote"), _lake(config)
    previous = promote(spark, lake, config.mlflow, str(args.version), "promoted by operator")
    print(f"version {args.version} is champion (was {previous})")


def run_rollback(args: argparse.Namespace, config: Config) -> None:
    from recspark.core.registry import configure_mlflow, rollback

    configure_mlflow(config.mlflow)
    spark, lake = _spark(config, "rollback"), _lake(config)
    print(f"version {rollback(spark, lake, config.mlflow)} is champion again")


def run_rebuild_interactions(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import rebuild_interactions

    pairs = rebuild_interactions(_spark(config, "rebuild-interactions"), config, _lake(config))
    print(f"interactions rebuilt from events: {pairs} user-item pairs")


def run_check(args: argparse.Namespace, config: Config) -> Outcome:
    from recspark.core.tables import RECOMMENDATIONS
    from recspark.ops.quality.gate import check_tables

    spark, lake = _spark(config, "check"), _lake(config)
    checks = {}
    if lake.exists(spark, RECOMMENDATIONS):  # the catalog and exclusions matter only to the lists
        checks[RECOMMENDATIONS.name] = _table_checks(spark, config, lake, RECOMMENDATIONS.name)
    results = check_tables(spark, config, lake, checks)
    for result in results:
        print(result.summary())
    return Outcome(
        rows_in=sum(r.rows or 0 for r in results),
        catalog_malformed_lines=_catalog_malformed_lines(spark, config),
    )


def run_maintain(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.maintenance import maintain, tables_to_maintain

    tables = [name.strip() for name in (args.tables or "").split(",") if name.strip()]
    try:
        tables_to_maintain(tables)  # before a session starts
    except ValueError as exc:
        raise UsageError(f"--tables: {exc}") from exc
    done = maintain(
        _spark(config, "maintain"), _lake(config), config.maintenance.vacuum_retention_hours, tables
    )
    for table, outcome in done.items():
        print(f"{table}: {outcome}")


def run_forget_user(args: argparse.Namespace, config: Config) -> None:
    from recspark.ops.forget import forget_user

    deleted = forget_user(_spark(config, "forget-user"), _lake(config), args.user_id)
    print(
        f"user {args.user_id} deleted: "
        + ", ".join(f"{table} {rows}" for table, rows in deleted.items())
        + ". Run `recspark maintain` after the retention period to remove the old files for good."
    )


def run_status(args: argparse.Namespace, config: Config) -> None:
    import json

    from recspark.ops.status.json_report import status_json
    from recspark.ops.status.snapshot import gather_status
    from recspark.ops.status.text_report import render_status

    snapshot = gather_status(_spark(config, "status"), config, _lake(config))
    if args.json:
        print(json.dumps(status_json(snapshot), indent=2))
    else:
        print(render_status(snapshot), end="")


def run_show(args: argparse.Namespace, config: Config) -> None:
    import json

    from recspark.core.table_names import lake_root
    from recspark.ops.lookup import lookup_json, lookup_user, render_lookup

    root = lake_root(config.lake.root)  # read with delta-rs: no Spark session, no JVM
    found = lookup_user(root, args.user_id)
    if not found.known:
        raise UsageError(
            f"unknown user {args.user_id!r}: no recommendations and no events in the lake at {root}"
        )
    if args.json:
        print(json.dumps(lookup_json(found), indent=2))
    else:
        print(render_lookup(found), end="")


def run_api(args: argparse.Namespace, config: Config) -> None:
    from recspark.api.server import serve

    serve(config)


def run_simulate_shoppers(args: argparse.Namespace, config: Config) -> Outcome:
    from recspark.datasets.shop.spec import ShopSpec
    from recspark.datasets.shoppers.simulation import DEFAULT_VISITS_PER_DAY, simulate_shoppers
    from recspark.datasets.shoppers.tastes import Tastes

    landing = config.ingest.path
    if config.ingest.source != "files" or "://" in landing:
        raise UsageError(
            f"simulate-shoppers writes event files into a local ingest.path; ingest.source is "
            f"{config.ingest.source} and ingest.path {landing}"
        )
    api_url = args.api_url or f"http://{config.api.host}:{config.api.port}"
    try:
        spec = ShopSpec.from_config(config.generate)  # the shop `generate` wrote: its users' tastes
        report = simulate_shoppers(
            Tastes(spec),
            api_url,
            Path(landing),
            days=1 if args.days is None else args.days,
            visits_per_day=min(DEFAULT_VISITS_PER_DAY, spec.users) if args.visits is None else args.visits,
            list_size=args.n,
            seed=0 if args.seed is None else args.seed,
            time_limit=300 if args.time_limit is None else args.time_limit,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(report.render(), end="")
    totals = report.totals()
    print(
        f"{totals['lists']:.0f} lists from {api_url}: {totals['clicks']:.0f} clicks "
        f"({totals['expected_clicks']:.1f} expected), {totals['purchases']:.0f} purchases "
        f"({totals['expected_purchases']:.2f} expected); events in {landing}"
    )
    return Outcome(result=report)


# --------------------------------------------------------------------------------------------
# The registry

ONCE = Argument("--once", "process what is available now, then stop")
JSON = Argument("--json", "print one JSON object instead of text")
USER_ID = Argument("user_id", "the shop's user id", TEXT)
# The flag the registry's "does not know the served model" error names.
RESET_SERVING = Argument(
    "--reset-serving",
    "go ahead although the model registry does not know the model version the recommendations "
    "table's lists came from (after changing mlflow.model_name or mlflow.tracking_uri on purpose): "
    "those lists are replaced",
)
SHOP_SIZES = tuple(
    Argument(f"--{size}", f"the shop's {size}", NUMBER) for size in ("users", "items", "events", "days")
)

JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job(
            "generate",
            "write a synthetic shop: catalog and event files",
            run_generate,
            tracked=False,
            submit=False,
            arguments=(*SHOP_SIZES, Argument("--seed", "the generator's seed", NUMBER)),
        ),
        Job(
            "ingest",
            "stream event files (or Kafka) into the Delta tables",
            run_ingest,
            tracked=True,
            gates=("events", "interactions"),
            arguments=(ONCE,),
            scheduled_args=("--once",),
            aliases=("ingest_events",),
        ),
        Job(
            "train",
            "train ALS, evaluate it, log to MLflow, promote if better",
            run_train,
            tracked=True,
            arguments=(RESET_SERVING,),
            aliases=("train_als",),
        ),
        Job(
            "tune",
            "search rank/reg_param/alpha on a validation split; train uses the best",
            run_tune,
            tracked=True,
        ),
        Job(
            "recommend",
            "write top-N per user from the champion model",
            run_recommend,
            tracked=True,
            arguments=(RESET_SERVING,),
        ),
        Job(
            "refresh",
            "keep recommendations fresh for users with new activity",
            run_refresh,
            tracked=True,
            gates=("recommendations",),
            arguments=(ONCE, RESET_SERVING),
            scheduled_args=("--once",),
            aliases=("refresh_recommendations",),
        ),
        Job(
            "promote",
            "make a registered model version the champion",
            run_promote,
            tracked=True,
            arguments=(Argument("version", "registered model version", TEXT),),
        ),
        Job("rollback", "give champion back to the previous champion", run_rollback, tracked=True),
        Job(
            "rebuild-interactions",
            "recompute interactions from all events (after changing weights)",
            run_rebuild_interactions,
            tracked=True,
        ),
        Job(
            "maintain",
            "OPTIMIZE and VACUUM every table (or the --tables named)",
            run_maintain,
            tracked=True,
            arguments=(Argument("--tables", "comma-separated table names (default: every table)", TEXT),),
        ),
        Job(
            "check",
            "run every quality suite on its whole table (the scheduled check)",
            run_check,
            tracked=True,
        ),
        Job(
            "forget-user",
            "delete one user's rows from every table",
            run_forget_user,
            tracked=True,
            arguments=(USER_ID,),
        ),
        Job(
            "status",
            "on-call overview: tables, champion, recent job runs, quality gates",
            run_status,
            tracked=False,
            arguments=(JSON,),
        ),
        Job(
            "show",
            "one user's current recommendations, recent history and model version",
            run_show,
            tracked=False,
            arguments=(USER_ID, JSON),
        ),
        Job(
            "api",
            "serve the lists to the website over HTTP (the lookup service; no Spark)",
            run_api,
            tracked=False,
            submit=False,
        ),
        Job(
            "simulate-shoppers",
            "simulated shoppers ask the running lookup service for their lists and click, add to "
            "cart and buy with known probabilities; their events land in ingest.path (no Spark)",
            run_simulate_shoppers,
            tracked=False,
            submit=False,
            arguments=(
                Argument("--days", "simulated days (default 1)", NUMBER),
                Argument("--visits", "shoppers visiting each day (default 200, at most the users)", NUMBER),
                Argument("--api-url", "the lookup service (default http://api.host:api.port)", TEXT),
                Argument("--n", "items per list (default: the service's)", NUMBER),
                Argument("--seed", "the shoppers' seed (default 0)", NUMBER),
                Argument("--time-limit", "seconds before the run stops with an error (default 300)", NUMBER),
            ),
        ),
    )
}


def submitted(name: str) -> Job:
    """The job spark-submit runs under ``name`` (its name, or a former name with a notice on
    stderr); :class:`UnknownJobError` names the jobs there are."""
    for job in JOBS.values():
        if job.submit and name in (job.name, *job.aliases):
            if name != job.name:
                print(
                    f"recspark: job {name!r} is now called {job.name!r}; please use that name",
                    file=sys.stderr,
                )
            return job
    known = ", ".join(job.name for job in JOBS.values() if job.submit)
    raise UnknownJobError(f"unknown job {name!r}; spark-submit runs one of: {known}")


def main(argv: Sequence[str]) -> int:
    """``--names``: the jobs spark-submit runs, one per line; ``--usage``: the same with what
    each does; ``--resolve NAME``: the job ``NAME`` stands for (exit 2 if none)."""
    submittable = [job for job in JOBS.values() if job.submit]
    if list(argv) == ["--names"]:
        print("\n".join(job.name for job in submittable))
        return 0
    if list(argv) == ["--usage"]:
        width = max(len(job.name) for job in submittable)
        print("\n".join(f"  {job.name:<{width}}  {job.help}" for job in submittable))
        return 0
    if len(argv) == 2 and argv[0] == "--resolve":
        try:
            print(submitted(argv[1]).name)
        except UnknownJobError as exc:
            print(f"recspark: {exc}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m recspark.jobs --names | --usage | --resolve NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

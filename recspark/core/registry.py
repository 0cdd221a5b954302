"""MLflow: where runs and models live, and the guarded promotion of a model to ``champion``."""

from __future__ import annotations

import fcntl
import getpass
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config.model import MlflowConfig
from recspark.core.secrets import redact
from recspark.core.tables import (
    ALS_ITEM_FACTORS,
    CHAMPION_HISTORY,
    ITEM_SIMILARITY,
    RECOMMENDATIONS,
    Lake,
    model_version_rows,
)
from recspark.core.text import first_line

log = logging.getLogger(__name__)

_Answer = TypeVar("_Answer")

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"  # written by versions before champion_history


class TrackingError(RuntimeError):
    """The tracking store or registry cannot be used, or holds no champion where one is needed."""


class RegistryUnreachableError(TrackingError):
    """The store or server did not answer at all (a store that cannot be opened or is locked, a
    server that is down or overloaded): an outage, which may end by itself. An answer that is
    wrong for the job (no such model, a refused request) is a plain TrackingError."""


# MLflow's error codes for a store or server that did not answer: its REST client's connection
# failures and 5xx responses, SQLAlchemy's operational errors (cannot open, locked), rate limits.
_UNANSWERED = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def _error_class(exc: BaseException) -> type[TrackingError]:
    """RegistryUnreachableError for a store or server that did not answer, else TrackingError."""
    if isinstance(exc, MlflowException) and exc.error_code not in _UNANSWERED:
        return TrackingError
    return RegistryUnreachableError  # connection errors of a remote server come in many types


def _local_uri(location: str) -> str:
    return location if "://" in location else Path(location).expanduser().resolve().as_uri()


@contextmanager
def _store_opened_alone(uri: str) -> Iterator[None]:
    """Whichever process first opens a new SQLite store creates its schema (MLflow's
    migrations), and so does any other that opens it meanwhile: two jobs starting together on a
    fresh store (a train and a scheduled refresh) failed but one. With an exclusive lock on
    ``<db>.lock`` beside the file they take turns opening it; other stores need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db_path = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{db_path}.lock", "a")  # noqa: SIM115 (held across the yield)
    except OSError as exc:
        raise TrackingError(
            f"MLflow tracking store at {redact(uri)} cannot be created: {exc.strerror or exc} "
            f"({db_path.parent}); fix mlflow.tracking_uri"
        ) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def configure_mlflow(config: MlflowConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    uri = config.tracking_uri
    with _store_opened_alone(uri):
        mlflow.set_tracking_uri(uri)
        return _experiment_id(config)


def _experiment_id(config: MlflowConfig) -> str:
    """The configured experiment's id (created when missing), now the active experiment."""
    uri = config.tracking_uri
    try:
        experiment = mlflow.get_experiment_by_name(config.experiment)
        if experiment is None:
            location = _local_uri(config.artifact_location) if config.artifact_location else None
            experiment_id = mlflow.create_experiment(config.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)  # runs go here, not to "Default"
        return experiment_id
    except MlflowException as exc:
        raise _error_class(exc)(
            f"MLflow tracking store at {redact(uri)} is not usable: {redact(exc.message)}"
        ) from exc
    except Exception as exc:  # connection errors of a remote server come in many types
        raise RegistryUnreachableError(
            f"MLflow tracking store at {redact(uri)} is not reachable: {first_line(exc)}"
        ) from exc


def _no_such_alias(exc: MlflowException) -> bool:
    """The registry answered, and there is no such model or alias (as opposed to a fault)."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc).lower() and "not found" in str(exc).lower()
    )


def alias_version(config: MlflowConfig, alias: str) -> ModelVersion | None:
    """The version holding ``alias``; None only when the registry says there is none.

    Any other failure raises TrackingError (RegistryUnreachableError for a locked store, a server
    that is down): reading a fault as "no champion" would let `train` promote without a
    comparison and a refresh commit a batch that refreshed nobody."""
    return _answer_or_none(
        config, f"'{alias}'", lambda: MlflowClient().get_model_version_by_alias(config.model_name, alias)
    )


def _answer_or_none(config: MlflowConfig, looked_up: str, ask: Callable[[], _Answer]) -> _Answer | None:
    """``ask()``'s answer; None only when the registry says there is no such model, version or
    alias. Any other failure raises TrackingError naming the store and what was ``looked_up``
    (RegistryUnreachableError when the store or server did not answer)."""
    try:
        return ask()
    except MlflowException as exc:
        if _no_such_alias(exc):
            return None
        raise _error_class(exc)(
            f"model registry at {redact(config.tracking_uri)} failed looking up {looked_up} of "
            f"'{config.model_name}': {first_line(exc)}"
        ) from exc
    except Exception as exc:  # connection errors of a remote server come in many types
        raise RegistryUnreachableError(
            f"model registry at {redact(config.tracking_uri)} is not reachable: {first_line(exc)}"
        ) from exc


def champion_version(config: MlflowConfig) -> ModelVersion | None:
    return alias_version(config, CHAMPION)


def require_champion(config: MlflowConfig) -> ModelVersion:
    version = champion_version(config)
    if version is None:
        raise TrackingError(
            f"registered model '{config.model_name}' has no '{CHAMPION}' version: run "
            "`recspark train` first (or `recspark promote VERSION`)"
        )
    return version


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias, as the history records it."""

    alias: str
    version: str
    previous_version: str | None
    action: str  # train | promote | rollback
    reason: str


def set_alias(config: MlflowConfig, move: AliasMove) -> None:
    """Point the alias at the version and tag the version with why."""
    client = MlflowClient()
    client.set_registered_model_alias(config.model_name, move.alias, move.version)
    client.set_model_version_tag(config.model_name, move.version, f"{move.alias}_reason", move.reason)
    log.info("model %s version %s is now '%s': %s", config.model_name, move.version, move.alias, move.reason)


def champion_move(config: MlflowConfig, version: str, action: str, reason: str) -> AliasMove:
    """The move that makes ``version`` champion, naming the version it replaces."""
    previous = champion_version(config)
    return AliasMove(CHAMPION, version, None if previous is None else str(previous.version), action, reason)


def require_version(config: MlflowConfig, version: str) -> None:
    try:
        MlflowClient().get_model_version(config.model_name, version)
    except MlflowException as exc:
        if _no_such_alias(exc):
            raise TrackingError(f"model '{config.model_name}' has no version {version}") from exc
        raise TrackingError(f"model registry failed: {first_line(exc)}") from exc


def registered_run_id(config: MlflowConfig, version: str) -> str | None:
    """The run that version ``version`` of ``model_name`` was logged from ('' when the version
    names no run); None only when the registry says there is no such model or version."""
    return _answer_or_none(
        config,
        f"version {version}",
        lambda: MlflowClient().get_model_version(config.model_name, version).run_id or "",
    )


# Every family writes one of these for every version it registers (forget-user leaves them be).
_VERSION_RECORDS = (ALS_ITEM_FACTORS, ITEM_SIMILARITY)
RESET_SERVING = "--reset-serving"


def _served_versions(spark: SparkSession, lake: Lake) -> list[str]:
    """The model versions whose lists ``recommendations`` holds (none: fallback lists or empty)."""
    if not lake.exists(spark, RECOMMENDATIONS):
        return []
    rows = (
        lake.read(spark, RECOMMENDATIONS)
        .where(F.col("model_version").isNotNull())
        .select("model_version")
        .distinct()
        .limit(10)
        .collect()
    )
    return sorted(r[0] for r in rows)


@dataclass(frozen=True)
class _VersionRecord:
    """A model the lake's model tables hold under some version number."""

    model_name: str | None  # None: written before the tables recorded it
    run_id: str
    configured: bool  # the configured model's (see ``model_version_rows``)

    def __str__(self) -> str:
        return f"model '{self.model_name or '?'}' run {self.run_id}"


def _lake_records(
    spark: SparkSession, lake: Lake, config: MlflowConfig, version: str
) -> list[_VersionRecord]:
    """Every model the lake's model tables hold as ``version`` (one partition of each table)."""
    records: set[_VersionRecord] = set()
    for spec in _VERSION_RECORDS:
        if lake.exists(spark, spec):
            rows = (
                lake.read(spark, spec)
                .where(F.col("model_version") == version)
                .select(
                    "model_name",
                    "run_id",
                    model_version_rows(config.model_name, version).alias("configured"),
                )
                .distinct()
                .collect()
            )
            records |= {_VersionRecord(*r) for r in rows}
    return sorted(records, key=str)


def require_served_model_known(spark: SparkSession, lake: Lake, config: MlflowConfig) -> None:
    """Stop with TrackingError unless the registry knows the model behind the serving table.

    ``recommendations`` names the model version its lists came from; the lake's model tables
    name that version's model and run. The registry knows it when it has that version of
    ``model_name``, logged from the same run (another tracking store may well have a version of
    that number under that name). Otherwise the configuration points at another registry (a typo
    in ``mlflow.model_name``, another ``mlflow.tracking_uri``), where "no champion" would replace
    every personalised list with fallback lists and let `train` promote without comparison: a
    deliberate reset passes ``--reset-serving`` instead of calling this."""
    uri, name = redact(config.tracking_uri), config.model_name
    remedy = (
        f"fix mlflow.model_name or mlflow.tracking_uri, or pass {RESET_SERVING} to replace the "
        "served lists on purpose"
    )
    for version in _served_versions(spark, lake):
        records = _lake_records(spark, lake, config, version)
        runs = {r.run_id for r in records if r.configured}
        known = ", ".join(map(str, records)) or "no record"
        registered = registered_run_id(config, version)
        served = (
            f"the serving table holds lists from model version {version} (the lake's model tables: {known})"
        )
        if registered is None:
            raise TrackingError(
                f"{served}, but the model registry at {uri} has no version {version} of model "
                f"'{name}': {remedy}"
            )
        if registered not in runs:
            raise TrackingError(
                f"{served}, but version {version} of model '{name}' in the model registry at {uri} "
                f"comes from run {registered or 'none'}: {remedy}"
            )


def champion_since(spark: SparkSession, lake: Lake, config: MlflowConfig, version: str) -> datetime | None:
    """When ``version`` last became champion, from ``champion_history`` (None if unrecorded)."""
    if not lake.exists(spark, CHAMPION_HISTORY):
        return None
    row = (
        lake.read(spark, CHAMPION_HISTORY)
        .where(
            (F.col("model_name") == config.model_name)
            & (F.col("alias") == CHAMPION)
            & (F.col("version") == version)
        )
        .agg(F.max(F.col("moved_at").cast("double")).alias("at"))
        .first()
    )
    return None if row is None or row["at"] is None else datetime.fromtimestamp(row["at"], timezone.utc)


def moved_by() -> str:
    """Who moves an alias: ``RECSPARK_ACTOR`` when a scheduler sets it, else the OS user."""
    actor = os.environ.get("RECSPARK_ACTOR")
    if actor:
        return actor
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in some containers
        return "unknown"


def move_alias(spark: SparkSession, lake: Lake, config: MlflowConfig, move: AliasMove) -> None:
    """Move the alias and record the move in ``champion_history`` (version, reason, time, who).

    The alias moves first: a move that failed is not in the history. A history that cannot be
    written fails the job loudly, so an operator learns that rollback will not see this move."""
    set_alias(config, move)
    lake.append_row(
        spark,
        CHAMPION_HISTORY,
        (
            config.model_name,
            move.alias,
            move.version,
            move.previous_version,
            move.action,
            move.reason,
            datetime.now(timezone.utc),
            moved_by(),
        ),
    )


def champion_stack(spark: SparkSession, lake: Lake, config: MlflowConfig) -> list[str]:
    """The champions in the order they took over, as the history records them, with every
    rollback undone: the last is the current champion, the one before it what rollback restores."""
    if not lake.exists(spark, CHAMPION_HISTORY):
        return []
    rows = (
        lake.read(spark, CHAMPION_HISTORY)
        .where((F.col("model_name") == config.model_name) & (F.col("alias") == CHAMPION))
        .orderBy("moved_at")
        .collect()
    )
    stack: list[str] = []
    for row in rows:
        if row["action"] == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != row["version"]:
                stack.append(row["version"])
        elif not stack or stack[-1] != row["version"]:
            stack.append(row["version"])
    return stack


def promote(spark: SparkSession, lake: Lake, config: MlflowConfig, version: str, reason: str) -> str | None:
    """Make ``version`` the champion (an operator's override); return the version it replaced."""
    require_version(config, version)
    move = champion_move(config, version, "promote", reason)
    move_alias(spark, lake, config, move)
    return move.previous_version


def rollback(spark: SparkSession, lake: Lake, config: MlflowConfig) -> str:
    """Give ``champion`` back to the version that held it before the current one, whoever moved
    it (train, promote or an earlier rollback: repeated rollbacks walk further back)."""
    current = require_champion(config)
    stack = champion_stack(spark, lake, config)
    if len(stack) < 2 or stack[-1] != str(current.version):
        # Lakes from before the history kept one step back in a registry alias.
        earlier = alias_version(config, PREVIOUS_CHAMPION)
        if earlier is not None and str(earlier.version) != str(current.version):
            stack = [str(earlier.version), str(current.version)]
    if len(stack) < 2 or stack[-1] != str(current.version):
        raise TrackingError(
            f"model '{config.model_name}' has no earlier champion recorded before version "
            f"{current.version} (see the champion_history table); use `recspark promote VERSION`"
        )
    previous = stack[-2]
    move = AliasMove(
        CHAMPION, previous, str(current.version), "rollback", f"rollback of version {current.version}"
    )
    move_alias(spark, lake, config, move)
    return previous

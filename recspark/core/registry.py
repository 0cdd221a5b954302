"""MLflow: where runs and models live, and the guarded promotion of a model to ``champion``."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recspark.core.config import MlflowConfig

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


class TrackingError(RuntimeError):
    """The tracking store or registry cannot be used, or holds no champion where one is needed."""


def _local_uri(location: str) -> str:
    return location if "://" in location else Path(location).expanduser().resolve().as_uri()


def configure_mlflow(config: MlflowConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    uri = config.tracking_uri
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        try:
            db_path.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"MLflow tracking store at {uri} cannot be created: {exc.strerror or exc} "
                f"({db_path.parent}); fix mlflow.tracking_uri"
            ) from exc
    mlflow.set_tracking_uri(uri)
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
        raise TrackingError(f"MLflow tracking store at {uri} is not usable: {exc.message}") from exc
    except Exception as exc:  # connection errors of a remote server come in many types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow tracking store at {uri} is not reachable: {first_line}") from exc


def champion_version(config: MlflowConfig) -> ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(config.model_name, CHAMPION)
    except MlflowException:
        return None


def require_champion(config: MlflowConfig) -> ModelVersion:
    version = champion_version(config)
    if version is None:
        raise TrackingError(
            f"registered model '{config.model_name}' has no '{CHAMPION}' version: run "
            "`recspark train` first (or `recspark promote VERSION`)"
        )
    return version


def set_alias(config: MlflowConfig, alias: str, version: str, reason: str) -> None:
    client = MlflowClient()
    client.set_registered_model_alias(config.model_name, alias, version)
    client.set_model_version_tag(config.model_name, version, f"{alias}_reason", reason)
    log.info("model %s version %s is now '%s': %s", config.model_name, version, alias, reason)


def promote(config: MlflowConfig, version: str, reason: str) -> str | None:
    """Make ``version`` the champion; return the version it replaced."""
    client = MlflowClient()
    try:
        client.get_model_version(config.model_name, version)
    except MlflowException as exc:
        raise TrackingError(f"model '{config.model_name}' has no version {version}") from exc
    previous = champion_version(config)
    if previous is not None and previous.version != version:
        client.set_registered_model_alias(config.model_name, "previous_champion", previous.version)
    set_alias(config, CHAMPION, version, reason)
    return previous.version if previous is not None else None


def rollback(config: MlflowConfig) -> str:
    """Give ``champion`` back to the version that held it before the last promotion."""
    client = MlflowClient()
    try:
        previous = client.get_model_version_by_alias(config.model_name, "previous_champion")
    except MlflowException as exc:
        raise TrackingError(f"model '{config.model_name}' has no previous champion") from exc
    promote(config, previous.version, "rollback by operator")
    return previous.version

"""The status report's model: the registry's champion, its metrics and since when it holds, and
what the newest `train` run decided (from ``champion_history``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.tables import CHAMPION_HISTORY, Lake
from recspark.core.text import first_line

log = logging.getLogger(__name__)

CHAMPION_METRICS = ("ndcg_at_k", "popular_ndcg_at_k", "precision_at_k", "recall_at_k")


@dataclass(frozen=True)
class ChampionState:
    """The registry's answer. ``state``: champion, none, no_store (no local store yet) or
    unreachable (``message`` says why)."""

    model_name: str
    tracking_uri: str
    state: str
    message: str | None = None
    version: str | None = None
    run_id: str | None = None
    family: str | None = None
    registered_at: float | None = None
    promoted_at: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    # The newest `train` run's decision (from champion_history; every train moves an alias):
    # its version, whether it was promoted, its promotion_status tag and the reason.
    newest_version: str | None = None
    newest_trained_at: float | None = None
    newest_promoted: bool | None = None
    newest_status: str | None = None
    newest_reason: str | None = None


@contextmanager
def _quick_http_failures() -> Iterator[None]:
    """An unreachable tracking server should cost the on-call seconds, not minutes of retries."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    added = [k for k in settings if k not in os.environ]
    os.environ.update({k: settings[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _promoted_at(spark: SparkSession, lake: Lake, config: Config, version: str) -> float | None:
    """When ``version`` last became champion, from ``champion_history`` (None if unrecorded)."""
    from recspark.core.registry import champion_since

    try:
        since = champion_since(spark, lake, config.mlflow, version)
    except Exception as exc:  # the history is a nicety here; the registry is the truth
        log.warning("status: champion_history not readable: %s", first_line(exc))
        return None
    return None if since is None else since.timestamp()


def _newest_train(spark: SparkSession, lake: Lake, config: Config) -> dict[str, Any]:
    """The newest `train` run's version, time, alias move and reason (the ``newest_*`` fields of
    :class:`ChampionState`), from ``champion_history``; empty when none is recorded."""
    from recspark.core.registry import CHAMPION

    try:
        if not lake.exists(spark, CHAMPION_HISTORY):
            return {}
        row = (
            lake.read(spark, CHAMPION_HISTORY)
            .where((F.col("model_name") == config.mlflow.model_name) & (F.col("action") == "train"))
            .orderBy(F.col("moved_at").desc())
            .select("version", "alias", "reason", F.col("moved_at").cast("double").alias("at"))
            .first()
        )
    except Exception as exc:  # the history is a nicety here; the registry is the truth
        log.warning("status: champion_history not readable: %s", first_line(exc))
        return {}
    if row is None:
        return {}
    promoted = row["alias"] == CHAMPION
    return {
        "newest_version": row["version"],
        "newest_trained_at": float(row["at"]),
        "newest_promoted": promoted,
        "newest_status": "promoted" if promoted else None,  # the registry's tag says which
        "newest_reason": row["reason"],
    }


def _promotion_status(model_name: str, version: str) -> str | None:
    """The version's ``promotion_status`` tag (None when the version is gone from the registry)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return (MlflowClient().get_model_version(model_name, version).tags or {}).get("promotion_status")
    except MlflowException as exc:
        log.warning("status: version %s of %s not readable: %s", version, model_name, first_line(exc))
        return None


def gather_champion(spark: SparkSession, config: Config, lake: Lake) -> ChampionState:
    from mlflow.tracking import MlflowClient

    from recspark.core.registry import champion_version, configure_mlflow

    settings = config.mlflow
    newest = _newest_train(spark, lake, config)
    base: dict[str, Any] = {
        "model_name": settings.model_name,
        "tracking_uri": settings.tracking_uri,
        **newest,
    }
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return ChampionState(**base, state="no_store", message="the tracking store does not exist yet")
    try:
        with _quick_http_failures():
            configure_mlflow(settings)
            if newest and not newest["newest_promoted"]:
                base["newest_status"] = _promotion_status(settings.model_name, newest["newest_version"])
            champion = champion_version(settings)
            if champion is None:
                return ChampionState(
                    **base, state="none", message=f"model '{settings.model_name}' has no champion"
                )
            metrics = MlflowClient().get_run(champion.run_id).data.metrics if champion.run_id else {}
    except Exception as exc:
        return ChampionState(**base, state="unreachable", message=first_line(exc))
    created = champion.creation_timestamp
    return ChampionState(
        **base,
        state="champion",
        version=str(champion.version),
        run_id=champion.run_id,
        family=(champion.tags or {}).get("model_family"),
        registered_at=created / 1000 if created else None,
        promoted_at=_promoted_at(spark, lake, config, str(champion.version)),
        metrics={name: metrics.get(name) for name in CHAMPION_METRICS},
    )

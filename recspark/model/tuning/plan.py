"""The settings tuning found best: where they are kept, when they are stale, how `train` uses them.

They live as a small JSON file next to the tables (``<lake.root>/_tuning/best_params.json`` unless
``tune.best_params_path`` says otherwise), written and read through Hadoop's FileSystem so an
object-store lake works like a local one. The file names the tuning run, so every trained model
can be traced to the search that chose its family and settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from pyspark.sql import SparkSession

from recspark.core.config import Config, ConfigError
from recspark.core.config.model import TuneConfig
from recspark.core.hadoop_files import hadoop_file, session_jvm
from recspark.core.tables import Lake
from recspark.model.candidates.sources import POPULAR, TRENDING
from recspark.model.families.model import ALL_FAMILIES, ALS, ModelSpec


@dataclass(frozen=True)
class TunedPlan:
    family: str  # the family that won on the validation period
    params: dict[str, dict[str, str | int | float]]  # family -> its best settings (ModelSpec.params())
    scores: dict[str, float]  # family -> its best validation score
    metric: str
    run_id: str  # the MLflow run of the search
    created_at: str  # ISO 8601, UTC
    positives: int  # positive user-item pairs in the lake when tuned (for staleness)
    validation: str  # the validation period, in words
    fallback: str = "trending"  # what fills lists after popular-in-your-categories: trending | popular

    def spec(self, config: Config) -> ModelSpec:
        return ModelSpec.from_params(self.params[self.family], config)

    @property
    def value(self) -> float:
        return self.scores[self.family]

    def stale_because(self, tune: TuneConfig, positives: int, now: datetime | None = None) -> str | None:
        """Why these settings should be searched again, or None while they are fresh."""
        now = now or datetime.now(timezone.utc)
        age = now - datetime.fromisoformat(self.created_at)
        if age > timedelta(days=tune.max_age_days):
            return f"tuned {age.days} days ago (tune.max_age_days={tune.max_age_days:g})"
        if self.positives and positives > self.positives * (1 + tune.max_growth):
            return (
                f"interactions grew from {self.positives} to {positives} positive pairs since "
                f"(tune.max_growth={tune.max_growth:g})"
            )
        return None


def tuned_params_path(config: Config, lake: Lake) -> str:
    return config.tune.best_params_path or lake.path("_tuning/best_params.json")


def write_tuned(spark: SparkSession, path: str, plan: TunedPlan) -> str:
    """Replace the file at ``path``; returns the JSON written."""
    text = json.dumps(asdict(plan), indent=2, sort_keys=True) + "\n"
    fs, hadoop_path = hadoop_file(spark, path)
    out = fs.create(hadoop_path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    return text


def read_tuned(spark: SparkSession, config: Config, lake: Lake) -> TunedPlan | None:
    """The stored plan, or None when no tuning has written one."""
    path = tuned_params_path(config, lake)
    fs, hadoop_path = hadoop_file(spark, path)
    if not fs.exists(hadoop_path):
        return None
    stream = fs.open(hadoop_path)
    try:
        raw = bytes(session_jvm(spark).org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()
    hint = "rerun `recspark tune` or set train.use_tuned=false"
    try:
        data = json.loads(raw.decode("utf-8"))
        if "family" not in data:  # written before model families: ALS settings only
            data = {
                **data,
                "family": ALS,
                "params": {ALS: {"family": ALS, **data["params"]}},
                "scores": {ALS: data["value"]},
                "created_at": datetime.now(timezone.utc).isoformat(),
                "positives": 0,
                "validation": data.get("validation_cutoff", "unknown"),
            }
        plan = TunedPlan(
            family=str(data["family"]),
            params={str(k): dict(v) for k, v in data["params"].items()},
            scores={str(k): float(v) for k, v in data["scores"].items()},
            metric=str(data["metric"]),
            run_id=str(data["run_id"]),
            created_at=str(data["created_at"]),
            positives=int(data["positives"]),
            validation=str(data["validation"]),
            fallback=str(data.get("fallback", TRENDING)),
        )
        if plan.fallback not in (TRENDING, POPULAR):
            raise ValueError(f"unknown fallback {plan.fallback!r}")
        if plan.family not in ALL_FAMILIES:
            raise ValueError(f"unknown family {plan.family!r}")
        plan.spec(config)  # the values must make a valid model spec
        datetime.fromisoformat(plan.created_at)
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"tuned settings at {path} are unusable ({exc}): {hint}") from exc
    return plan

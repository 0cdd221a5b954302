"""The settings `recspark tune` found best: where they are kept and how `train` applies them.

They live as a small JSON file next to the tables (``<lake.root>/_tuning/best_params.json`` unless
``tune.best_params_path`` says otherwise), written and read through Hadoop's FileSystem so an
object-store lake works like a local one. The file names the tuning run, so every trained model
can be traced to the search that chose its settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from pyspark.sql import SparkSession

from recspark.core.config import Config, ConfigError, TrainConfig
from recspark.core.tables import Lake

TUNED_KEYS = ("rank", "reg_param", "alpha")


@dataclass(frozen=True)
class TunedParams:
    params: dict[str, float]  # rank, reg_param, alpha
    run_id: str  # the MLflow run of the search
    metric: str
    value: float  # the best trial's validation score
    validation_cutoff: str


def tuned_params_path(config: Config, lake: Lake) -> str:
    return config.tune.best_params_path or lake.path("_tuning/best_params.json")


def _hadoop_file(spark: SparkSession, path: str):  # -> (FileSystem, Path) JVM objects
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def write_tuned(spark: SparkSession, path: str, tuned: TunedParams) -> str:
    """Replace the file at ``path``; returns the JSON written."""
    text = json.dumps(asdict(tuned), indent=2, sort_keys=True) + "\n"
    fs, hadoop_path = _hadoop_file(spark, path)
    out = fs.create(hadoop_path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    return text


def read_tuned(spark: SparkSession, config: Config, lake: Lake) -> TunedParams | None:
    """The stored best settings, or None when `recspark tune` has not written any."""
    path = tuned_params_path(config, lake)
    fs, hadoop_path = _hadoop_file(spark, path)
    if not fs.exists(hadoop_path):
        return None
    stream = fs.open(hadoop_path)
    try:
        raw = bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()
    hint = "rerun `recspark tune` or set train.use_tuned=false"
    try:
        data = json.loads(raw.decode("utf-8"))
        tuned = TunedParams(
            params={key: data["params"][key] for key in TUNED_KEYS},
            run_id=str(data["run_id"]),
            metric=str(data["metric"]),
            value=float(data["value"]),
            validation_cutoff=str(data["validation_cutoff"]),
        )
        apply_tuned(TrainConfig(), tuned)  # the values must make a valid TrainConfig
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"tuned settings at {path} are unusable ({exc}): {hint}") from exc
    return tuned


def apply_tuned(settings: TrainConfig, tuned: TunedParams | None) -> TrainConfig:
    """``settings`` with the tuned rank, reg_param and alpha (unchanged when there are none)."""
    if tuned is None:
        return settings
    p = tuned.params
    if not isinstance(p["rank"], int) or isinstance(p["rank"], bool):
        raise ValueError(f"rank must be a whole number, got {p['rank']!r}")
    return replace(settings, rank=p["rank"], reg_param=float(p["reg_param"]), alpha=float(p["alpha"]))

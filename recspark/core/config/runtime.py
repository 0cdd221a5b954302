"""Where every job runs and stores: the Spark session (``spark.*``) and the lake (``lake.*``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SparkConfig:
    """The Spark session every job builds (recspark.core.session)."""

    master: str | None = "local[2]"
    """Spark master; null on a cluster (spark-submit decides). Under spark-submit its `--master` always
    wins; `deploy/submit.sh` passes this value as `--master` when `SPARK_MASTER` is unset."""
    app_name: str = "recspark"
    """Spark application name (the job name is appended: `recspark-train`)."""
    shuffle_partitions: int = 8
    """`spark.sql.shuffle.partitions`."""
    driver_memory: str | None = "4g"
    """Driver memory when recspark starts the JVM itself."""
    conf: dict[str, str] = field(default_factory=dict)
    """Any further Spark settings (`spark.conf.<name>`), passed to the session builder as they are."""


@dataclass(frozen=True)
class LakeConfig:
    """Where the Delta tables and streaming checkpoints live."""

    root: str = ".recspark/lake"
    """Directory or URI under which every table and checkpoint lives."""
    database: str | None = None
    """When set, every table is also registered in the Spark catalog under this database."""

"""The one way recspark builds a SparkSession: Delta-enabled, sized from config."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark import SparkContext
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.console import divert_library_output
from recspark.core.secrets import LOG4J2_CONFIG_ENV, log4j2_config_file
from recspark.packages import spark_packages

log = logging.getLogger(__name__)

# Generated classes Spark keeps per JVM (static: fixed when the session starts).
CODEGEN_CACHE_ENTRIES = 1024


def build_spark(config: Config, app_suffix: str | None = None) -> SparkSession:
    """Create (or reuse) the session for a job.

    Under ``spark-submit`` the packages come from ``--packages`` and the master from the
    command line; we only add what is missing, so a cluster's settings win. When recspark starts
    the JVM itself, its driver and executors log through the redacting log4j2 configuration of
    :mod:`recspark.core.secrets` (``deploy/submit.sh`` hands spark-submit the same file).
    """
    # Spark skips the local Maven repository (where `make install` put the jars) when it
    # thinks it is testing; never let a stray variable turn that on.
    os.environ.pop("SPARK_TESTING", None)
    settings = config.spark
    if settings.master and settings.master.startswith("local"):
        # Local Python workers must run in this interpreter (it has numpy, pandas, pyarrow).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    name = settings.app_name + (f"-{app_suffix}" if app_suffix else "")
    builder = SparkSession.builder.appName(name)
    if launched_by_spark_submit():
        # spark-submit has already chosen the master (deploy/submit.sh passes the config's
        # spark.master as --master when SPARK_MASTER is not set); setting it here would undo that.
        if settings.master:
            log.info("spark-submit chose the master; config spark.master=%s not applied", settings.master)
    elif settings.master:
        builder = builder.master(settings.master)
    # log4j2 reads its configuration file from an environment variable too: unlike a -D in
    # extraJavaOptions, it replaces no Java options a cluster sets. Executors get it from Spark;
    # the driver JVM (when this process starts it) inherits it.
    log4j2 = str(log4j2_config_file())
    builder = builder.config(f"spark.executorEnv.{LOG4J2_CONFIG_ENV}", log4j2)
    if settings.driver_memory:
        builder = builder.config("spark.driver.memory", settings.driver_memory)
    builder = (
        builder.config("spark.jars.packages", ",".join(spark_packages(kafka=config.ingest.source == "kafka")))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        # Delta replays a table's log in 50 partitions: on a few cores each first read of a new
        # version (several per ingest batch) then runs 50 tasks. Follow the shuffle partitions,
        # up to Delta's default.
        .config("spark.databricks.delta.snapshotPartitions", str(min(50, settings.shuffle_partitions)))
        # VACUUM lists a table's files in this many tasks, 10,000 by default whatever the
        # table's size (docs/operations.md, "Table maintenance"). The shuffle partitions say how
        # parallel the cluster is.
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(settings.shuffle_partitions))
        # Spark keeps the classes it generates for a plan's expressions in a cache of 100 by
        # default. One ingest batch alone needs about 150 (parsing, dedup, Delta's MERGE and
        # statistics), so a stream compiled every one of them again in every batch (about 230
        # Janino compilations), and the JIT worked on the new classes on top (docs/benchmarks.md,
        # "A long backfill").
        .config("spark.sql.codegen.cache.maxEntries", str(CODEGEN_CACHE_ENTRIES))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    for key, value in settings.conf.items():
        builder = builder.config(key, value)
    with _environment(LOG4J2_CONFIG_ENV, log4j2), _jvm_output_to(divert_library_output()):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark session %s ready (master=%s)", name, spark.sparkContext.master)
    return spark


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` inside (for a JVM started there), as it was afterwards."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextmanager
def _jvm_output_to(path: Path | None) -> Iterator[None]:
    """A JVM started inside writes its stdout and stderr to ``path`` (appended): the process's
    file descriptors 1 and 2 point there while it starts, and are restored afterwards."""
    if path is None or launched_by_spark_submit() or SparkContext._active_spark_context is not None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        with open(path, "ab") as log_file:
            for fd in (1, 2):
                os.dup2(log_file.fileno(), fd)
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands its gateway to this Python process."""
    return "PYSPARK_GATEWAY_PORT" in os.environ

"""Operator tasks on the lake: rebuild interactions and table maintenance."""

from __future__ import annotations

import logging

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.interactions import aggregate_events
from recspark.core.tables import (
    ALL_TABLES,
    DELETION_VECTORS,
    EVENTS,
    INTERACTIONS,
    Lake,
    interactions_table,
)

log = logging.getLogger(__name__)


def rebuild_interactions(spark: SparkSession, config: Config, lake: Lake) -> int:
    """Recompute ``interactions`` from all ``events`` (e.g. after changing the weights) and
    replace the table in one commit; returns the number of pairs.

    Stop the ingestion query first: a batch merging while the table is replaced would conflict.
    """
    events = lake.read(spark, EVENTS)
    rebuilt = aggregate_events(events, config.interactions)
    lake.ensure(spark, interactions_table(config.ingest.deletion_vectors))
    rebuilt.write.format("delta").mode("overwrite").save(lake.path(INTERACTIONS.name))
    pairs = lake.read(spark, INTERACTIONS).count()
    log.info("rebuild-interactions: %d user-item pairs from %s", pairs, lake.path(EVENTS.name))
    return pairs


def maintain(spark: SparkSession, lake: Lake, retention_hours: float) -> dict[str, str]:
    """OPTIMIZE (compact small files written by micro-batches; Z-order a clustered table) and
    VACUUM every table.

    The retention (config, at least a week) protects readers and streams on older versions.
    """
    done = {}
    for spec in ALL_TABLES:
        if not lake.exists(spark, spec):
            continue
        table = DeltaTable.forPath(spark, lake.path(spec.name))
        optimize = table.optimize()
        if spec.cluster_by:
            # Refresh batches append files of random users; Z-ordering by the clustering columns
            # restores narrow per-file ranges (it rewrites the whole table, once a week).
            compacted = optimize.executeZOrderBy(*spec.cluster_by)
        else:
            compacted = optimize.executeCompaction()
        metrics = compacted.select("metrics.numFilesRemoved").first()
        done[spec.name] = f"compacted {metrics[0] if metrics else 0} files"
        properties = table.detail().select("properties").collect()[0][0] or {}
        if properties.get(DELETION_VECTORS) == "true":
            # Rows marked deleted (refresh MERGEs, forget-user) are still in their data files
            # until those files are rewritten; VACUUM then removes the old files.
            spark.sql(f"REORG TABLE delta.`{lake.path(spec.name)}` APPLY (PURGE)")
            done[spec.name] += ", deletion vectors purged"
        table.vacuum(retention_hours)
        done[spec.name] += ", vacuumed"
        log.info("maintain: %s %s", spec.name, done[spec.name])
    return done

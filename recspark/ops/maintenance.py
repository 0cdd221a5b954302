"""Operator tasks on the lake: rebuild interactions and table maintenance."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.conflicts import retry_on_conflict
from recspark.core.interactions import aggregate_events
from recspark.core.tables import (
    ALL_TABLES,
    DELETION_VECTORS,
    EVENTS,
    INTERACTIONS,
    Lake,
    TableSpec,
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


def tables_to_maintain(names: Sequence[str] = ()) -> tuple[TableSpec, ...]:
    """The tables called ``names`` (none: every table), in the lake's order; a name no table
    has is a ValueError that lists the names there are."""
    known = [spec.name for spec in ALL_TABLES]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"no table named {', '.join(unknown)}; the tables: {', '.join(known)}")
    return tuple(spec for spec in ALL_TABLES if not names or spec.name in names)


def maintain(
    spark: SparkSession, lake: Lake, retention_hours: float, tables: Sequence[str] = ()
) -> dict[str, str]:
    """OPTIMIZE (compact small files written by micro-batches; Z-order a clustered table) and
    VACUUM every table, or the ``tables`` named (see :func:`tables_to_maintain`).

    The retention (config, at least a week) protects readers and streams on older versions.
    The streams keep writing meanwhile: a rewrite that loses a commit race to one of their
    MERGEs committed nothing and runs again (logged), as does the stream's MERGE that loses.
    """
    done = {}
    for spec in tables_to_maintain(tables):
        if not lake.exists(spark, spec):
            continue
        table = DeltaTable.forPath(spark, lake.path(spec.name))

        def optimize(table: DeltaTable = table, spec: TableSpec = spec) -> int:
            if spec.cluster_by:
                # Refresh batches append files of random users; Z-ordering by the clustering
                # columns restores narrow per-file ranges (it rewrites the whole table, weekly).
                compacted = table.optimize().executeZOrderBy(*spec.cluster_by)
            else:
                compacted = table.optimize().executeCompaction()
            metrics = compacted.select("metrics.numFilesRemoved").collect()
            return int(metrics[0][0]) if metrics else 0

        removed = retry_on_conflict(optimize, f"maintain: OPTIMIZE {spec.name}")
        done[spec.name] = f"compacted {removed} files"
        properties = table.detail().select("properties").collect()[0][0] or {}
        if properties.get(DELETION_VECTORS) == "true":
            # Rows marked deleted (refresh MERGEs, forget-user) are still in their data files
            # until those files are rewritten; VACUUM then removes the old files.
            purge = f"REORG TABLE delta.`{lake.path(spec.name)}` APPLY (PURGE)"
            retry_on_conflict(partial(spark.sql, purge), f"maintain: REORG {spec.name}")
            done[spec.name] += ", deletion vectors purged"
        retry_on_conflict(partial(table.vacuum, retention_hours), f"maintain: VACUUM {spec.name}")
        done[spec.name] += ", vacuumed"
        log.info("maintain: %s %s", spec.name, done[spec.name])
    return done

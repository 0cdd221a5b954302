"""Benchmark: what one ingest batch costs to fold into ``interactions`` as the table grows.

    .venv/bin/python bench/merge.py --pairs 1000000 --sizes 3 --batch-pairs 20000 --batches 4

Three table designs, each at ``--sizes`` doubling sizes (``--pairs``, 2x, 4x ...):

- ``copy-on-write``: a batch folded as ingestion folds it (``fold_increments``: a MERGE that
  updates the known pairs, an append of the new ones) into a table without deletion vectors
  (``ingest.deletion_vectors: false``): every data file holding a pair the batch updates is read
  and rewritten whole;
- ``deletion vectors``: the same fold into a table with ``delta.enableDeletionVectors`` (the
  default since #15): an updated pair's old row is only marked deleted, its new row lands in a
  new file;
- ``increments``: no MERGE at all; each batch is appended to a side table, and readers see
  base + increments aggregated per pair (their cost is timed too, as one aggregation read).

Until 2026-12-06 the fold was one MERGE with an insert clause: run this script from a checkout
of 89488f3 to time that.

A batch is ``--batch-pairs`` aggregated pairs, half of them pairs the table holds (random users,
so a batch touches pairs in every file, as a real shop's batch does) and half new ones. The base
table is written in one file per 250,000 pairs, random users in each. The figure is the median
per-batch time over the batches after the first (which pays for planning and the JIT), plus
the files each batch's MERGE added and removed and the deletion vectors it wrote (Delta's own
operation metrics). Change data feed is on, as on the real table.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import load_config
from recspark.core.config.ingest import InteractionsConfig
from recspark.core.session import build_spark
from recspark.core.tables import Lake, interactions_table
from recspark.datasets.lakes import base_pairs, batch_increments, last_commit_metrics
from recspark.ingest.fold import fold_increments

DESIGNS = ("copy-on-write", "deletion vectors", "increments")
MERGE_FILE_METRICS = ("numTargetFilesAdded", "numTargetFilesRemoved", "numTargetDeletionVectorsAdded")


def run_design(
    spark: SparkSession, settings: InteractionsConfig, root: Path, design: str, pairs: int, args
) -> dict[str, object]:
    lake = Lake.at(str(root / design.replace(" ", "-") / str(pairs)))
    spec = interactions_table(deletion_vectors=design == "deletion vectors")
    lake.ensure(spark, spec)
    base_pairs(spark, settings, pairs).write.format("delta").mode("append").save(lake.path(spec.name))
    increments_path = lake.path("interactions_increments")
    seconds: list[float] = []
    files: list[dict[str, int]] = []
    for batch in range(args.batches):
        increments = batch_increments(spark, settings, pairs, args.batch_pairs, batch)
        began = time.time()
        if design == "increments":
            increments.write.format("delta").mode("append").save(increments_path)
        else:
            fold_increments(spark, lake.path(spec.name), increments, settings, "bench-merge", batch)
            metrics = last_commit_metrics(lake.delta(spark, spec), "MERGE")
            files.append({key: int(metrics.get(key, 0)) for key in MERGE_FILE_METRICS})
        seconds.append(time.time() - began)
        increments.unpersist()
    result: dict[str, object] = {
        "design": design,
        "pairs": pairs,
        "per batch (median after the first)": round(statistics.median(seconds[1:]), 2),
        "batches": [round(s, 2) for s in seconds],
        "files": files[-1] if files else {},
    }
    if design == "increments":
        began = time.time()
        base = lake.read(spark, spec)
        pending = spark.read.format("delta").load(increments_path)
        base.unionByName(pending).groupBy("user_id", "item_id").agg(
            F.sum("view_count").alias("view_count"), F.max("last_event_time").alias("last_event_time")
        ).write.format("noop").mode("overwrite").save()
        result["reader: base + increments per pair"] = round(time.time() - began, 2)
        began = time.time()
        lake.read(spark, spec).select("user_id", "item_id", "view_count", "last_event_time").write.format(
            "noop"
        ).mode("overwrite").save()
        result["reader: the table alone"] = round(time.time() - began, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="the smallest table")
    parser.add_argument("--sizes", type=int, default=3, help="doubling sizes from --pairs")
    parser.add_argument("--batch-pairs", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.root or Path(tempfile.mkdtemp(prefix="recspark-merge-"))
    config = load_config(None, [f"lake.root={root}", "spark.shuffle_partitions=4"])
    spark = build_spark(config, "bench-merge")
    stamp = f"{datetime.now():%Y-%m-%d %H:%M}"
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, {stamp}")
    print(f"batch: {args.batch_pairs:,} pairs (half known, half new), {args.batches} per design and size")
    for size in range(args.sizes):
        pairs = args.pairs * 2**size
        for design in args.designs.split(","):
            print(run_design(spark, config.interactions, root, design, pairs, args), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()

"""Folding one ingest batch's per-pair aggregates into ``interactions``: the ingest writer's MERGE.

The aggregates themselves (weights, decay, :func:`aggregate_events`) live in
:mod:`recspark.core.interactions`, which training and maintenance share.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.config.ingest import InteractionsConfig
from recspark.core.interactions import COUNT_COLUMNS, PAIR_KEYS, SECONDS_PER_DAY
from recspark.core.streaming import append_idempotent, commit_user_metadata, idempotent_session_writes

# The Delta transaction id of a batch's new pairs is the stream's own with this suffix.
NEW_PAIRS_APP_SUFFIX = "-new-pairs"
# How many of the newest commits are searched for a fold's own MERGE (others may land between).
FOLD_HISTORY_DEPTH = 20


def holds_any_pair(interactions: DataFrame, increments: DataFrame) -> bool:
    """Whether ``interactions`` already holds any (user, item) pair of ``increments``. It stops at
    the first pair found, so a batch of returning users costs a short scan. The batch's keys are
    broadcast, as the MERGE broadcasts the batch: the table is scanned, never shuffled."""
    keys = F.broadcast(increments.select(*PAIR_KEYS))
    return not interactions.select(*PAIR_KEYS).join(keys, PAIR_KEYS, "left_semi").isEmpty()


def fold_increments(
    spark: SparkSession,
    path: str,
    increments: DataFrame,
    config: InteractionsConfig,
    app_id: str,
    version: int,
) -> int:
    """Fold per-pair aggregates of new events into the ``interactions`` table at ``path``, once
    per (``app_id``, ``version``); return the pairs updated or added.

    Two commits: a matched-only MERGE updates the pairs the table holds (it broadcasts the batch,
    so the table is scanned, never shuffled), then the pairs it did not update, read from that
    commit's change feed, are appended. A batch whose pairs are all new is appended in one commit.

    Invariant: a replay counts each event once. The batch's first commit (the MERGE, which Delta
    commits even when it matches nothing, or the all-new append) carries (``app_id``,
    ``version``); a replay holds some of its pairs, so it takes the MERGE path, Delta skips the
    MERGE as committed, and the new pairs are the batch's pairs the table lacks: none once their
    append (``app_id`` + ``NEW_PAIRS_APP_SUFFIX``, or the all-new first commit) is there."""
    table = spark.read.format("delta").load(path)
    if not holds_any_pair(table, increments):
        append_idempotent(increments, path, app_id, version)
        return increments.count()
    marker = f"recspark fold {app_id} {version}"
    with idempotent_session_writes(spark, app_id, version), commit_user_metadata(spark, marker):
        updated = _update_known_pairs(DeltaTable.forPath(spark, path), increments, config)
    # A skipped MERGE committed nothing, so ``table`` still shows what the replay needs to scan.
    held = table.select(*PAIR_KEYS) if updated is None else _updated_pairs(spark, path, marker)
    new = increments.join(held, PAIR_KEYS, "left_anti").localCheckpoint(eager=True)
    new_pairs = new.count()
    if new_pairs:
        append_idempotent(new, path, app_id + NEW_PAIRS_APP_SUFFIX, version)
    return (updated or 0) + new_pairs


def _updated_pairs(spark: SparkSession, path: str, marker: str) -> DataFrame:
    """The pairs the commit stamped ``marker`` updated, from its change feed (a few small files)."""
    commit = (
        DeltaTable.forPath(spark, path)
        .history(FOLD_HISTORY_DEPTH)
        .where(F.col("userMetadata") == marker)
        .select("version")
        .first()
    )
    if commit is None:
        raise RuntimeError(f"the MERGE stamped {marker!r} is not among the newest commits of {path}")
    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", commit[0])
        .option("endingVersion", commit[0])
        .load(path)
    )
    return changes.where(F.col("_change_type") == "update_postimage").select(*PAIR_KEYS)


def _update_known_pairs(target: DeltaTable, increments: DataFrame, config: InteractionsConfig) -> int | None:
    """Add the batch's aggregates to the pairs the table holds; the pairs updated, or None when
    Delta skipped the MERGE as already committed."""
    t, s = "t", "s"
    last = f"greatest({t}.last_event_time, {s}.last_event_time)"
    combined_signal = _combine_signal_sql(t, s, last, config)
    updates: dict[str, str | Column] = {c: f"{t}.{c} + {s}.{c}" for c in COUNT_COLUMNS.values()}
    updates |= {
        "last_rating": (
            f"CASE WHEN {s}.last_rating IS NOT NULL AND ({t}.last_rating IS NULL "
            f"OR {s}.last_event_time >= {t}.last_event_time) THEN {s}.last_rating "
            f"ELSE {t}.last_rating END"
        ),
        "first_event_time": f"least({t}.first_event_time, {s}.first_event_time)",
        "last_event_time": last,
        "signal": combined_signal,
        "strength": f"greatest({combined_signal}, 0.0)",
        "updated_at": f"{s}.updated_at",
    }
    metrics = (
        target.alias(t)
        .merge(increments.alias(s), f"{t}.user_id = {s}.user_id AND {t}.item_id = {s}.item_id")
        .whenMatchedUpdate(set=updates)
        .execute()
        .first()
    )
    return int(metrics["num_affected_rows"]) if metrics is not None else None


def _combine_signal_sql(t: str, s: str, last: str, config: InteractionsConfig) -> str:
    if config.half_life_days is None:
        return f"({t}.signal + {s}.signal)"
    half_life = config.half_life_days * SECONDS_PER_DAY

    def decayed(side: str) -> str:
        age = f"(CAST({last} AS DOUBLE) - CAST({side}.last_event_time AS DOUBLE))"
        return f"{side}.signal * pow(0.5, {age} / {half_life})"

    return f"({decayed(t)} + {decayed(s)})"

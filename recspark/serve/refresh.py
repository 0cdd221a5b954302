"""Keep the serving table fresh between retrains.

A micro-batch stream over the Change Data Feed of ``interactions``: each batch takes the users
whose interactions changed, folds their vectors in against the champion's fixed item factors,
recomputes their top-N, and MERGEs only their rows into ``recommendations``. The cost of a batch
follows the number of active users, not the number of users. When the ``champion`` alias has
moved (a retrain promoted a new model, or an operator rolled back), the batch publishes a full
refresh from the new champion instead.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from recspark.core.config import Config
from recspark.core.gates import Gate
from recspark.core.interactions import strength_as_of
from recspark.core.registry import TrackingError, champion_version, configure_mlflow
from recspark.core.streaming import await_query, idempotent_session_writes, start_query, streaming_app_id
from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS, Lake
from recspark.model.foldin import fold_in_users
from recspark.model.train import preference
from recspark.serve.publish import (
    Champion,
    build_recommendations,
    champion_factors,
    load_champion,
    newest_event_time,
    publish_full,
    published_model_version,
    recommend,
)

log = logging.getLogger(__name__)

QUERY_NAME = "refresh_recommendations"
CHANGED = ("insert", "update_postimage")


def folded_in_vectors(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion,
    users: DataFrame,
    item_factors: DataFrame | None = None,
    interactions: DataFrame | None = None,
    as_of: datetime | None = None,
) -> DataFrame:
    """Fresh ALS vectors for ``users`` from their current interactions (decayed to ``as_of``,
    default the newest event). Pass what the caller already read to avoid reading it again."""
    if interactions is None:
        interactions = lake.read(spark, INTERACTIONS)
    if as_of is None:
        as_of = newest_event_time(interactions)
    if item_factors is None:
        item_factors = champion_factors(spark, lake, champion)[1]
    ratings = strength_as_of(interactions.join(users, "user_id"), as_of, config.interactions).select(
        "user_id", "item_id", preference(champion.settings).alias("rating")
    )
    return fold_in_users(spark, ratings, item_factors, champion.settings.alpha, champion.settings.reg_param)


def longest_list(spark: SparkSession, lake: Lake) -> int:
    """The highest rank in the serving table (a scan: the refresh does it once, at start)."""
    return lake.read(spark, RECOMMENDATIONS).agg(F.max("rank")).first()[0] or 0


def merge_user_rows(spark: SparkSession, lake: Lake, fresh: DataFrame, users: DataFrame) -> None:
    """Replace the rows of ``users`` (and only theirs) with ``fresh`` in one MERGE.

    The source holds each user once as a key, which matches (and deletes) all of their current
    rows, and the fresh rows with a null key, which never match and are inserted. One commit, so
    readers see a user's old list or the new one; with deletion vectors the old rows are only
    marked deleted, and a list that got shorter needs nothing extra. The source is checkpointed
    first: Delta materialises a MERGE source it cannot prove deterministic (Python UDFs), and
    would otherwise run the whole fold-in and scoring plan again to do so.
    """
    source = (
        users.select(F.col("user_id").alias("_replaces"))
        .unionByName(fresh.withColumn("_replaces", F.lit(None).cast("string")), allowMissingColumns=True)
        .localCheckpoint(eager=True)
    )
    (
        lake.delta(spark, RECOMMENDATIONS)
        .alias("t")
        .merge(source.alias("s"), "t.user_id = s._replaces")
        .whenMatchedDelete()
        .whenNotMatchedInsert(
            condition="s._replaces IS NULL",
            values={c: f"s.{c}" for c in RECOMMENDATIONS.schema.fieldNames()},
        )
        .execute()
    )


def refresh_users(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion,
    users: DataFrame,
    as_of: datetime | None = None,
    item_factors: DataFrame | None = None,
) -> int:
    """Recompute and MERGE the recommendations of ``users``; returns how many users.

    ``as_of``: the newest event time in ``interactions`` (read from it when not given; the
    refresh job carries it from batch to batch instead of scanning the table each time).
    ``item_factors``: the champion's (read when not given; the job keeps them cached while the
    champion stays the same)."""
    users = users.select("user_id").distinct().persist()
    try:
        count = users.count()
        if count:
            interactions = lake.read(spark, INTERACTIONS)
            if as_of is None:
                as_of = newest_event_time(interactions)
            # Their own interactions, read once for the fold-in, exclusions and explanations.
            theirs = interactions.join(F.broadcast(users), "user_id").persist()
            own_factors = item_factors is None
            if own_factors:
                item_factors = champion_factors(spark, lake, champion)[1].persist()
            vectors = folded_in_vectors(
                spark, config, lake, champion, users, item_factors, theirs, as_of
            ).persist()
            fresh = build_recommendations(
                spark, config, lake, champion, users, vectors, item_factors, interactions, as_of, theirs
            )
            merge_user_rows(spark, lake, fresh, users)  # its checkpoint computes fresh once
            for frame in (vectors, theirs):
                frame.unpersist()
            if own_factors:
                item_factors.unpersist()
        return count
    finally:
        users.unpersist()


class RefreshBatchWriter:
    """The ``foreachBatch`` function of the refresh query."""

    def __init__(
        self, config: Config, lake: Lake, checkpoint: str, gate: Gate, covered_version: int | None = None
    ) -> None:
        self.config = config
        self.gate = gate
        self.lake = lake
        self.checkpoint = checkpoint
        self.champion: Champion | None = None
        self._app_id: str | None = None
        # Changes up to this interactions version are already in a full refresh just published.
        self.covered_version = covered_version
        self.as_of: datetime | None = None  # the newest event time in interactions
        self.item_factors: DataFrame | None = None  # the champion's, cached while it is champion

    def _advance_as_of(self, spark: SparkSession, changes: DataFrame) -> None:
        """Interactions only gain newer events, so the newest so far and the batch's changes
        give the table's newest event time without scanning all of it again."""
        if self.as_of is None:
            self.as_of = newest_event_time(self.lake.read(spark, INTERACTIONS))
            return
        newest = changes.agg(F.max("last_event_time")).first()[0]
        if newest is not None and newest > self.as_of:
            self.as_of = newest

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        current = champion_version(self.config.mlflow)
        if current is None:
            log.warning("refresh batch %d: no champion model yet; nothing to serve", batch_id)
            return
        if self.champion is None or self.champion.version != str(current.version):
            self.champion = load_champion(self.config)
            if self.item_factors is not None:
                self.item_factors.unpersist()
            self.item_factors = champion_factors(spark, self.lake, self.champion)[1].persist()
        if published_model_version(spark, self.lake) != self.champion.version:
            self.covered_version = self.lake.version(spark, INTERACTIONS)
            publish_full(spark, self.config, self.lake, self.champion, self.gate, self.item_factors)
            log.info(
                "refresh batch %d: champion %s is new to the serving table: full refresh in %.1fs",
                batch_id,
                self.champion.version,
                time.time() - started,
            )
            return
        active = batch.where(F.col("_change_type").isin(*CHANGED))
        if self.covered_version is not None:
            active = active.where(F.col("_commit_version") > self.covered_version)
        self._advance_as_of(spark, active)
        if self._app_id is None:
            self._app_id = streaming_app_id(spark, self.checkpoint, "refresh")
        with idempotent_session_writes(spark, self._app_id, batch_id):
            users = refresh_users(
                spark, self.config, self.lake, self.champion, active, self.as_of, self.item_factors
            )
        log.info(
            "refresh batch %d: %d active users refreshed by champion %s as of %s in %.1fs",
            batch_id,
            users,
            self.champion.version,
            self.as_of,
            time.time() - started,
        )


def start_refresh(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    once: bool,
    gate: Gate,
    covered_version: int | None = None,
) -> StreamingQuery:
    """Start the refresh query. A first run publishes a full refresh, then follows new changes."""
    configure_mlflow(config.mlflow)
    lake.require(spark, INTERACTIONS)
    lake.ensure(spark, RECOMMENDATIONS)
    checkpoint = lake.checkpoint(QUERY_NAME)
    changes = (
        spark.readStream.format("delta")
        .option("readChangeFeed", "true")
        # A new query starts at the current version, inclusive: its users are refreshed once more
        # (cheap), and a run that finds nothing newer still commits a batch, so the next run
        # resumes from the checkpoint instead of re-deciding where "now" is.
        .option("startingVersion", lake.version(spark, INTERACTIONS))
        .load(lake.path(INTERACTIONS.name))
    )
    stream = (
        changes.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(RefreshBatchWriter(config, lake, checkpoint, gate, covered_version))
    )
    return start_query(stream, once, config.ingest.trigger_seconds)


def run_refresh(spark: SparkSession, config: Config, lake: Lake, once: bool, *, gate: Gate) -> None:
    """Bring the serving table up to date (a full refresh if the champion changed or
    ``serve.top_n`` was lowered), then keep it fresh until stopped (or stop when ``once``)."""
    configure_mlflow(config.mlflow)
    champion = champion_version(config.mlflow)
    if champion is None:
        raise TrackingError(
            f"registered model '{config.mlflow.model_name}' has no champion: run `recspark train` first"
        )
    covered = None
    published = published_model_version(spark, lake)
    longer = published is not None and longest_list(spark, lake) > config.serve.top_n
    if published != str(champion.version) or longer:
        if longer:
            log.info("refresh: lists longer than serve.top_n=%d: full refresh", config.serve.top_n)
        covered = lake.version(spark, INTERACTIONS)
        recommend(spark, config, lake, gate=gate)
    await_query(start_refresh(spark, config, lake, once, gate, covered), "refresh")

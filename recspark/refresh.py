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

from recspark.config import Config
from recspark.foldin import fold_in_users
from recspark.interactions import strength_as_of
from recspark.serving import (
    Champion,
    build_recommendations,
    champion_factors,
    load_champion,
    newest_event_time,
    publish_recommendations,
    published_model_version,
    recommend,
)
from recspark.streaming import await_query, idempotent_session_writes, start_query, streaming_app_id
from recspark.tables import INTERACTIONS, RECOMMENDATIONS, Lake
from recspark.tracking import TrackingError, champion_version, configure_mlflow
from recspark.training import preference

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


def merge_user_rows(
    spark: SparkSession, lake: Lake, fresh: DataFrame, users: DataFrame, longest: int | None = None
) -> None:
    """Replace the rows of ``users`` (and only theirs) with ``fresh`` in one MERGE.

    Rows a user no longer has (a shorter list) are matched by a tombstone and deleted: one for
    every rank above the user's new list, up to ``longest``, the highest rank in the table (read
    from it when not given). The source is checkpointed first: Delta materialises a MERGE source
    it cannot prove deterministic (Python UDFs), and would otherwise run the whole fold-in and
    scoring plan again to do so.
    """
    highest = longest if longest is not None else longest_list(spark, lake)
    lengths = users.select("user_id").join(
        fresh.groupBy("user_id").agg(F.max("rank").alias("_length")), "user_id", "left"
    )
    first_gone = F.coalesce(F.col("_length"), F.lit(0)) + 1
    tombstones = lengths.select(
        "user_id",
        F.explode(
            F.when(first_gone <= highest, F.sequence(first_gone, F.lit(highest))).otherwise(
                F.array().cast("array<int>")
            )
        ).alias("rank"),
    )
    source = (
        fresh.withColumn("_delete", F.lit(False))
        .unionByName(tombstones.withColumn("_delete", F.lit(True)), allowMissingColumns=True)
        .localCheckpoint(eager=True)
    )
    (
        lake.delta(spark, RECOMMENDATIONS)
        .alias("t")
        .merge(source.alias("s"), "t.user_id = s.user_id AND t.rank = s.rank")
        .whenMatchedDelete(condition="s._delete")
        .whenMatchedUpdate(set={c: f"s.{c}" for c in RECOMMENDATIONS.schema.fieldNames()})
        .whenNotMatchedInsert(
            condition="NOT s._delete",
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
    longest: int | None = None,
) -> int:
    """Recompute and MERGE the recommendations of ``users``; returns how many users.

    ``longest``: no list in the table is longer (see ``merge_user_rows``)."""
    users = users.select("user_id").distinct().persist()
    try:
        count = users.count()
        if count:
            interactions = lake.read(spark, INTERACTIONS)
            as_of = newest_event_time(interactions)
            # Their own interactions, read once for the fold-in, exclusions and explanations.
            theirs = interactions.join(F.broadcast(users), "user_id").persist()
            item_factors = champion_factors(spark, lake, champion)[1].persist()
            vectors = folded_in_vectors(
                spark, config, lake, champion, users, item_factors, theirs, as_of
            ).persist()
            fresh = build_recommendations(
                spark, config, lake, champion, users, vectors, item_factors, interactions, as_of, theirs
            ).persist()
            merge_user_rows(spark, lake, fresh, users, longest)  # its checkpoint computes fresh
            for frame in (fresh, vectors, item_factors, theirs):
                frame.unpersist()
        return count
    finally:
        users.unpersist()


class RefreshBatchWriter:
    """The ``foreachBatch`` function of the refresh query."""

    def __init__(
        self, config: Config, lake: Lake, checkpoint: str, covered_version: int | None = None
    ) -> None:
        self.config = config
        self.lake = lake
        self.checkpoint = checkpoint
        self.champion: Champion | None = None
        self._app_id: str | None = None
        # Changes up to this interactions version are already in a full refresh just published.
        self.covered_version = covered_version

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        current = champion_version(self.config.mlflow)
        if current is None:
            log.warning("refresh batch %d: no champion model yet; nothing to serve", batch_id)
            return
        if self.champion is None or self.champion.version != str(current.version):
            self.champion = load_champion(self.config)
        if published_model_version(spark, self.lake) != self.champion.version:
            self.covered_version = self.lake.version(spark, INTERACTIONS)
            publish_recommendations(
                self.lake, build_recommendations(spark, self.config, self.lake, self.champion)
            )
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
        active = active.select("user_id")
        if self._app_id is None:
            self._app_id = streaming_app_id(spark, self.checkpoint, "refresh")
        with idempotent_session_writes(spark, self._app_id, batch_id):
            # run_refresh made every list at most serve.top_n long before the query started.
            users = refresh_users(
                spark, self.config, self.lake, self.champion, active, self.config.serve.top_n
            )
        log.info(
            "refresh batch %d: %d active users refreshed by champion %s in %.1fs",
            batch_id,
            users,
            self.champion.version,
            time.time() - started,
        )


def start_refresh(
    spark: SparkSession, config: Config, lake: Lake, once: bool, covered_version: int | None = None
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
        .foreachBatch(RefreshBatchWriter(config, lake, checkpoint, covered_version))
    )
    return start_query(stream, once, config.ingest.trigger_seconds)


def run_refresh(spark: SparkSession, config: Config, lake: Lake, once: bool) -> None:
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
        recommend(spark, config, lake)
    await_query(start_refresh(spark, config, lake, once, covered), "refresh")

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

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from recspark.config import Config
from recspark.foldin import fold_in_users
from recspark.ingest import idempotent_session_writes, streaming_app_id
from recspark.interactions import strength_as_of
from recspark.serving import (
    Champion,
    build_recommendations,
    load_champion,
    publish_recommendations,
    published_model_version,
    recommend,
)
from recspark.tables import INTERACTIONS, ITEM_IDS, RECOMMENDATIONS, USER_IDS, Lake
from recspark.tracking import TrackingError, champion_version, configure_mlflow
from recspark.training import factor_tables, preference

log = logging.getLogger(__name__)

QUERY_NAME = "refresh_recommendations"
CHANGED = ("insert", "update_postimage")


def folded_in_vectors(
    spark: SparkSession, config: Config, lake: Lake, champion: Champion, users: DataFrame
) -> DataFrame:
    """Fresh ALS vectors for ``users`` from their current interactions."""
    interactions = lake.read(spark, INTERACTIONS).join(users, "user_id")
    as_of = lake.read(spark, INTERACTIONS).agg(F.max("last_event_time")).first()[0]
    ratings = strength_as_of(interactions, as_of, config.interactions).select(
        "user_id", "item_id", preference(champion.settings).alias("rating")
    )
    _, item_factors = factor_tables(champion.model, lake.read(spark, USER_IDS), lake.read(spark, ITEM_IDS))
    return fold_in_users(spark, ratings, item_factors, champion.settings.alpha, champion.settings.reg_param)


def merge_user_rows(spark: SparkSession, lake: Lake, fresh: DataFrame, users: DataFrame) -> None:
    """Replace the rows of ``users`` (and only theirs) with ``fresh`` in one MERGE.

    Rows a user no longer has (a shorter list) are matched by a tombstone and deleted.
    """
    current = lake.read(spark, RECOMMENDATIONS).join(users, "user_id").select("user_id", "rank")
    tombstones = current.join(fresh.select("user_id", "rank"), ["user_id", "rank"], "left_anti")
    source = fresh.withColumn("_delete", F.lit(False)).unionByName(
        tombstones.withColumn("_delete", F.lit(True)), allowMissingColumns=True
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
    spark: SparkSession, config: Config, lake: Lake, champion: Champion, users: DataFrame
) -> int:
    """Recompute and MERGE the recommendations of ``users``; returns how many users."""
    users = users.select("user_id").distinct().persist()
    try:
        count = users.count()
        if count:
            vectors = folded_in_vectors(spark, config, lake, champion, users).persist()
            fresh = build_recommendations(spark, config, lake, champion, users, vectors).persist()
            fresh.count()
            merge_user_rows(spark, lake, fresh, users)
            fresh.unpersist()
            vectors.unpersist()
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
            users = refresh_users(spark, self.config, self.lake, self.champion, active)
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
    if once:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=f"{config.ingest.trigger_seconds} seconds")
    return stream.start()


def run_refresh(spark: SparkSession, config: Config, lake: Lake, once: bool) -> None:
    """Bring the serving table up to date (full refresh if the champion changed), then keep it
    fresh until stopped (or stop when ``once``)."""
    configure_mlflow(config.mlflow)
    champion = champion_version(config.mlflow)
    if champion is None:
        raise TrackingError(
            f"registered model '{config.mlflow.model_name}' has no champion: run `recspark train` first"
        )
    covered = None
    if published_model_version(spark, lake) != str(champion.version):
        covered = lake.version(spark, INTERACTIONS)
        recommend(spark, config, lake)
    query = start_refresh(spark, config, lake, once, covered)
    query.awaitTermination()
    if query.exception() is not None:
        raise RuntimeError(f"refresh query failed: {query.exception()}")

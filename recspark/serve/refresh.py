"""Keep the serving table fresh between retrains.

A micro-batch stream over the Change Data Feed of ``interactions``: each batch takes the users
whose interactions changed, recomputes their lists (an ALS champion folds their vectors in
against its fixed item factors; an item-item champion only needs their fresh history; without a
champion they get fresh fallback lists) and MERGEs only their rows into ``recommendations``. The
cost of a batch follows the number of active users, not the number of users. When the
``champion`` alias has moved (a retrain promoted a new model, or an operator rolled back), the
batch publishes a full refresh from the new champion instead. While the registry cannot be
reached, batches keep refreshing with the champion the writer holds. An item the catalog marks
unavailable leaves every list at the next batch: the lists that hold it are refreshed with the
batch's active users.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from recspark.core.config import Config
from recspark.core.conflicts import retry_on_conflict
from recspark.core.gates import Gate
from recspark.core.interactions import strength_as_of
from recspark.core.privacy import forgotten_users_removed
from recspark.core.registry import (
    RegistryUnreachableError,
    champion_version,
    configure_mlflow,
    require_served_model_known,
)
from recspark.core.streaming import (
    await_query,
    checkpoint_has_offsets,
    commit_user_metadata,
    idempotent_session_writes,
    start_query,
    streaming_app_id,
)
from recspark.core.tables import INTERACTIONS, RECOMMENDATIONS, Lake, any_of, serving_table
from recspark.model.candidates.sources import newest_event_time, unavailable_items
from recspark.model.families.als import preference
from recspark.model.families.foldin import fold_in_users
from recspark.serve.publish import (
    Champion,
    PublishInputs,
    ShopContext,
    build_recommendations,
    load_champion,
    publish_fallback_items,
    publish_full,
    published,
    recommend,
    reflected_version,
    reflects,
    shop_context,
)

log = logging.getLogger(__name__)

QUERY_NAME = "refresh_recommendations"
CHANGED = ("insert", "update_postimage")


def folded_in_vectors(
    config: Config, champion: Champion, interactions: DataFrame, as_of: datetime
) -> DataFrame:
    """Fresh ALS vectors from ``interactions`` (the users' own rows), decayed to ``as_of``."""
    spark = interactions.sparkSession
    settings = champion.model.spec.als
    ratings = strength_as_of(interactions, as_of, config.interactions).select(
        "user_id", "item_id", preference(settings).alias("rating")
    )
    assert champion.model.item_factors is not None
    return fold_in_users(
        spark,
        ratings,
        champion.model.item_factors,
        settings.alpha,
        settings.reg_param,
        items_per_block=config.serve.max_items_per_block,
    )


def longest_list(spark: SparkSession, lake: Lake) -> int:
    """The highest rank in the serving table (a scan: the refresh does it once, at start)."""
    return lake.read(spark, RECOMMENDATIONS).agg(F.max("rank")).collect()[0][0] or 0


def merge_user_rows(
    spark: SparkSession, lake: Lake, fresh: DataFrame, users: DataFrame, skip_files_up_to: int = 0
) -> None:
    """Replace the rows of ``users`` (and only theirs) with ``fresh`` in one MERGE.

    The source holds each user once as a key, which matches (and deletes) all of their current
    rows, and the fresh rows with a null key, which never match and are inserted. One commit, so
    readers see a user's old list or the new one; with deletion vectors the old rows are only
    marked deleted, and a list that got shorter needs nothing extra. The source is checkpointed
    first: Delta materialises a MERGE source it cannot prove deterministic (Python UDFs), and
    would otherwise run the whole fold-in and scoring plan again to do so.

    The source is broadcast, so what the driver receives follows the batch, never the table
    (left to its size estimate, Spark may broadcast the serving table's user ids instead). With
    at most ``skip_files_up_to`` users, their ids also go into the condition, so Delta reads only
    the files of the user-clustered table that can hold them (``tables.any_of``).
    """
    source = (
        users.select(F.col("user_id").alias("_replaces"))
        .unionByName(fresh.withColumn("_replaces", F.lit(None).cast("string")), allowMissingColumns=True)
        .localCheckpoint(eager=True)
    )
    condition = F.col("t.user_id") == F.col("s._replaces")
    few = users.select("user_id").limit(skip_files_up_to + 1).collect() if skip_files_up_to else []
    if 0 < len(few) <= skip_files_up_to:
        condition = condition & any_of(F.col("t.user_id"), sorted(r["user_id"] for r in few))
    merge = (
        lake.delta(spark, RECOMMENDATIONS)
        .alias("t")
        .merge(F.broadcast(source).alias("s"), condition)
        .whenMatchedDelete()
        .whenNotMatchedInsert(
            condition="s._replaces IS NULL",
            values={c: f"s.{c}" for c in RECOMMENDATIONS.schema.fieldNames()},
        )
    )
    # A lost commit race (maintain, an erasure) committed nothing: the same MERGE runs again.
    retry_on_conflict(merge.execute, "refresh: merge the active users' lists")


def refresh_users(
    spark: SparkSession,
    config: Config,
    lake: Lake,
    champion: Champion | None,
    users: DataFrame,
    as_of: datetime | None = None,
    context: ShopContext | None = None,
) -> int:
    """Recompute and MERGE the lists of ``users``; returns how many users.

    An ALS (or blend) champion folds their vectors in first; an item-item champion needs only
    their fresh history; with no champion they get fresh fallback lists. ``as_of``: the newest
    event time in ``interactions`` (read when not given; the refresh job carries it from batch
    to batch instead of scanning the table each time). ``context``: the shop-wide inputs the
    refresh job keeps between batches (built for these users when None).

    A user none of whose interactions is left is skipped: forget-user deleted them and their
    list after the change was recorded, and a cold-start list would bring the user back."""
    changed = users.select("user_id").distinct().persist()
    users = changed
    theirs: DataFrame | None = None
    vectors: DataFrame | None = None
    try:
        if not changed.count():
            return 0
        interactions = lake.read(spark, INTERACTIONS)
        if as_of is None:
            as_of = newest_event_time(interactions)
        # Their own interactions, read once for the fold-in, exclusions and explanations.
        theirs = interactions.join(F.broadcast(changed), "user_id").persist()
        users = theirs.select("user_id").distinct().persist()
        count = users.count()
        if not count:
            return 0
        if champion is not None and champion.model.spec.uses_als:
            assert as_of is not None, "the users' changed interactions are in the table"
            vectors = folded_in_vectors(config, champion, theirs, as_of).persist()
        fresh = build_recommendations(
            spark,
            config,
            lake,
            champion,
            PublishInputs(
                users=users,
                interactions=interactions,
                users_interactions=theirs,
                user_vectors=vectors,
                as_of=as_of,
                context=context,
            ),
        )
        # Its checkpoint computes fresh once.
        merge_user_rows(spark, lake, fresh, users, config.serve.file_skipping_max_users)
        return count
    finally:
        for frame in (vectors, theirs, users, changed):
            if frame is not None:
                frame.unpersist()


class RefreshBatchWriter:
    """The ``foreachBatch`` function of the refresh query. A batch that would publish in full
    (the champion moved, or there is none) fails with TrackingError when the registry does not
    know the model of the lists it would replace (see ``publish_full``)."""

    def __init__(
        self, config: Config, lake: Lake, checkpoint: str, gate: Gate, covered_version: int | None = None
    ) -> None:
        self.config = config
        self.gate = gate
        self.lake = lake
        self.checkpoint = checkpoint
        self.champion: Champion | None = None  # its scoring data cached while it is champion
        self._app_id: str | None = None
        # Changes up to this interactions version are already in a full refresh just published.
        self.covered_version = covered_version
        self.as_of: datetime | None = None  # the newest event time in interactions
        self.context: ShopContext | None = None  # kept for serve.rankings_refresh_minutes
        self._answered = False  # the registry has said who the champion is (or that none is)
        self._registry_away_since: float | None = None  # when the current outage was noticed
        self._unavailable: frozenset[str] | None = None  # unavailable as of the last batch

    def _shop_context(self, spark: SparkSession, batch_id: int) -> ShopContext:
        """The shop-wide rankings, rebuilt when older than ``serve.rankings_refresh_minutes``
        (or dropped by a champion move), with the catalog read afresh for every batch."""
        period = self.config.serve.rankings_refresh_minutes
        if self.context is not None and self.context.age_minutes() >= period:
            self._drop_context()
        if self.context is None:
            started = time.time()
            interactions = self.lake.read(spark, INTERACTIONS)
            self.context = shop_context(spark, self.config, self.lake, interactions, self.as_of).persist()
            publish_fallback_items(spark, self.config, self.lake, self.context, self.champion)
            log.info(
                "refresh batch %d: shop-wide rankings built in %.1fs, kept for %g minutes",
                batch_id,
                time.time() - started,
                period,
            )
        return self.context.with_current_catalog(spark, self.config)

    def _drop_context(self) -> None:
        if self.context is not None:
            self.context.unpersist()
            self.context = None

    def _advance_as_of(self, spark: SparkSession, changes: DataFrame) -> None:
        """Interactions only gain newer events, so the newest so far and the batch's changes
        give the table's newest event time without scanning all of it again."""
        if self.as_of is None:
            self.as_of = newest_event_time(self.lake.read(spark, INTERACTIONS))
            return
        newest = changes.agg(F.max("last_event_time")).collect()[0][0]
        if newest is not None and newest > self.as_of:
            self.as_of = newest

    def _follow_champion(self, spark: SparkSession, batch_id: int) -> None:
        """Load the champion when the alias moved.

        While the registry does not answer (:class:`RegistryUnreachableError`), the batch
        refreshes with the champion held (or the fallback lists, when the registry last said
        there is none), says so once per outage, and the next batch asks again. A writer that
        has had no answer yet fails the batch instead, rather than commit one that refreshed
        nobody; any other registry error fails it too."""
        try:
            current = champion_version(self.config.mlflow)
            version = None if current is None else str(current.version)
            held = None if self.champion is None else self.champion.version
            loaded = load_champion(spark, self.config, self.lake) if version != held else None
        except RegistryUnreachableError as exc:
            if not self._answered:
                raise
            if self._registry_away_since is None:
                self._registry_away_since = time.monotonic()
                log.warning(
                    "refresh batch %d: cannot reach the model registry (%s): refreshing with %s "
                    "until it answers again",
                    batch_id,
                    exc,
                    f"champion {self.champion.version}" if self.champion else "the fallback lists",
                )
            return
        self._answered = True
        if self._registry_away_since is not None:
            log.info(
                "refresh batch %d: the model registry answers again after %.0fs",
                batch_id,
                time.monotonic() - self._registry_away_since,
            )
            self._registry_away_since = None
        if version == held:
            return
        if self.champion is not None:
            self.champion.model.unpersist()
        self._drop_context()  # a new model comes with a new tuned fallback chain
        self.champion = loaded
        if self.champion is not None:
            self.champion.model.persist()
        now = self.champion.version if self.champion is not None else "none (fallback lists)"
        log.info("refresh batch %d: champion is now %s", batch_id, now)

    def _holders_of_newly_unavailable(
        self, spark: SparkSession, context: ShopContext, batch_id: int
    ) -> tuple[frozenset[str], DataFrame | None]:
        """The catalog's unavailable items now, and the users whose lists hold one that became
        unavailable since the last batch (the first batch: any), active or not, so that the
        item leaves every list. Reads the serving table only when that set grew; None when no
        list holds one."""
        catalog = context.catalog
        current = (
            frozenset()
            if catalog is None
            else frozenset(r["item_id"] for r in unavailable_items(catalog).collect())
        )
        new = current - (self._unavailable or frozenset())
        if not new:
            return current, None
        items = spark.createDataFrame([(item,) for item in sorted(new)], "item_id string")
        holders = (
            self.lake.read(spark, RECOMMENDATIONS)
            .join(F.broadcast(items), "item_id", "left_semi")
            .select("user_id")
            .distinct()
            .localCheckpoint(eager=True)
        )
        count = holders.count()
        if not count:
            return current, None
        log.info(
            "refresh batch %d: %d item(s) newly unavailable are in the lists of %d user(s): "
            "refreshing those lists too",
            batch_id,
            len(new),
            count,
        )
        return current, holders

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        with forgotten_users_removed(
            batch.sparkSession, self.lake, (RECOMMENDATIONS,), f"refresh batch {batch_id}"
        ):
            self._refresh(batch, batch_id)

    def _refresh(self, batch: DataFrame, batch_id: int) -> None:
        started = time.time()
        spark = batch.sparkSession
        self._follow_champion(spark, batch_id)
        serving = published(spark, self.lake)
        version = None if self.champion is None else self.champion.version
        if serving.model_version != version or not serving.rows:
            self.covered_version = self.lake.version(spark, INTERACTIONS)
            publish_full(spark, self.config, self.lake, self.champion, self.gate)
            log.info(
                "refresh batch %d: %s is new to the serving table: full refresh in %.1fs",
                batch_id,
                f"champion {version}" if version else "no champion (fallback lists)",
                time.time() - started,
            )
            return
        active = batch.where(F.col("_change_type").isin(*CHANGED))
        if self.covered_version is not None:
            active = active.where(F.col("_commit_version") > self.covered_version)
        self._advance_as_of(spark, active)
        if self._app_id is None:
            self._app_id = streaming_app_id(spark, self.checkpoint, "refresh")
        newest_change = batch.agg(F.max("_commit_version")).collect()[0][0]
        note = reflects(newest_change) if newest_change is not None else None
        context = self._shop_context(spark, batch_id)
        unavailable, holders = self._holders_of_newly_unavailable(spark, context, batch_id)
        targets = active.select("user_id")
        if holders is not None:
            targets = targets.unionByName(holders)
        with idempotent_session_writes(spark, self._app_id, batch_id), commit_user_metadata(spark, note):
            users = refresh_users(spark, self.config, self.lake, self.champion, targets, self.as_of, context)
        self._unavailable = unavailable
        log.info(
            "refresh batch %d: %d users refreshed by %s as of %s in %.1fs",
            batch_id,
            users,
            f"champion {version}" if version else "the fallback lists",
            self.as_of,
            time.time() - started,
        )


def first_unreflected_version(spark: SparkSession, lake: Lake) -> int:
    """Where a refresh query without a checkpoint starts: after the last interactions version
    the serving table reflects, so changes pending since then are not skipped; at the current
    version when nothing is recorded, or nothing is newer. Starting at the current version,
    inclusive, refreshes its users once more (cheap), and a run that finds nothing newer still
    commits a batch, so the next run resumes from the checkpoint."""
    current = lake.version(spark, INTERACTIONS)
    reflected = reflected_version(spark, lake)
    starting = current if reflected is None else min(reflected + 1, current)
    if starting < current:
        log.info(
            "refresh: resuming after interactions version %d, which the serving table reflects", reflected
        )
    return starting


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
    lake.ensure(spark, serving_table(config.serve.deletion_vectors))
    checkpoint = lake.checkpoint(QUERY_NAME)
    reader = spark.readStream.format("delta").option("readChangeFeed", "true")
    if not checkpoint_has_offsets(spark, checkpoint):  # a resumed query follows its checkpoint
        reader = reader.option("startingVersion", first_unreflected_version(spark, lake))
    changes = reader.load(lake.path(INTERACTIONS.name))
    stream = (
        changes.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", checkpoint)
        .foreachBatch(RefreshBatchWriter(config, lake, checkpoint, gate, covered_version))
    )
    return start_query(stream, once, config.serve.trigger_seconds)


def run_refresh(
    spark: SparkSession, config: Config, lake: Lake, once: bool, *, gate: Gate, reset_serving: bool = False
) -> None:
    """Bring the serving table up to date (a full refresh if the champion changed, there is none
    and the table is empty, or ``serve.top_n`` was lowered), then keep it fresh until stopped (or
    stop when ``once``). Lists from a model the registry does not know stop it with TrackingError
    before the stream starts; ``reset_serving`` replaces them with a full refresh instead."""
    configure_mlflow(config.mlflow)
    lake.require(spark, INTERACTIONS)
    champion = champion_version(config.mlflow)
    version = None if champion is None else str(champion.version)
    covered = None
    serving = published(spark, lake)
    longer = serving.rows and longest_list(spark, lake) > config.serve.top_n
    if reset_serving or serving.model_version != version or not serving.rows or longer:
        if longer:
            log.info("refresh: lists longer than serve.top_n=%d: full refresh", config.serve.top_n)
        covered = lake.version(spark, INTERACTIONS)
        recommend(spark, config, lake, gate=gate, reset_serving=reset_serving)  # checks the served model
    else:
        require_served_model_known(spark, lake, config.mlflow)  # same version number: the same run?
    await_query(start_refresh(spark, config, lake, once, gate, covered), "refresh")

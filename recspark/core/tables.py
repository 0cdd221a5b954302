"""The one place that names recspark's Delta tables, their schemas and where they live."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

log = logging.getLogger(__name__)

EVENTS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("event_type", T.StringType(), False),
        T.StructField("value", T.DoubleType(), True),
        T.StructField("session_id", T.StringType(), True),
        T.StructField("ingested_at", T.TimestampType(), False),
        T.StructField("event_date", T.DateType(), False),
        # Which streaming query and micro-batch stored the event: lets a replayed batch
        # recognise its own earlier writes after a crash.
        T.StructField("ingest_app_id", T.StringType(), False),
        T.StructField("ingest_batch_id", T.LongType(), False),
        # The partition column: the first day of the event's month. Daily partitions would put a
        # file per day in every table version, and a backfill of years into thousands of files
        # (dedup still reads only the days it needs: event_date min/max skip the other files).
        # Null in lakes created before it existed, which stay partitioned by event_date.
        T.StructField("event_month", T.DateType(), True),
        # Added with impressions (nullable; Lake.ensure adds them to an older table). The id of
        # the served list an event followed (impressions: the list shown) ...
        T.StructField("recommendation_id", T.StringType(), True),
        # ... and, on impressions only: the items shown (position 1 first), which list
        # (recommendations | similar_items), the model version and experiment variant that
        # filled it, and per position the source that filled the slot (als, ease, popular...).
        T.StructField("items", T.ArrayType(T.StringType(), True), True),
        T.StructField("list", T.StringType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("variant", T.StringType(), True),
        T.StructField("sources", T.ArrayType(T.StringType(), True), True),
    ]
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("raw", T.StringType(), True),
        T.StructField("reason", T.StringType(), False),
        T.StructField("ingested_at", T.TimestampType(), False),
        T.StructField("source", T.StringType(), True),
        # The user id when it could be read from the broken record (for forget-user).
        T.StructField("user_id", T.StringType(), True),
        T.StructField("ingest_app_id", T.StringType(), False),
        T.StructField("ingest_batch_id", T.LongType(), False),
    ]
)

INTERACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("view_count", T.LongType(), False),
        T.StructField("add_to_cart_count", T.LongType(), False),
        T.StructField("remove_from_cart_count", T.LongType(), False),
        T.StructField("purchase_count", T.LongType(), False),
        T.StructField("rating_count", T.LongType(), False),
        T.StructField("last_rating", T.DoubleType(), True),
        T.StructField("first_event_time", T.TimestampType(), False),
        T.StructField("last_event_time", T.TimestampType(), False),
        # Weighted, time-decayed sum of the pair's events as of last_event_time (may be < 0
        # when removals outweigh the rest); strength = max(signal, 0) is what ALS sees.
        T.StructField("signal", T.DoubleType(), False),
        T.StructField("strength", T.DoubleType(), False),
        T.StructField("updated_at", T.TimestampType(), False),
    ]
)

# What filled a recommendation row (the ``source`` column): the champion's family (ALS, the EASE
# item-item model or their blend), popular in the user's categories, popular in a recent window,
# popular overall, or a new item's slot.
# The personalised sources name the model family that filled the row.
RECOMMENDATION_SOURCES = ("als", "ease", "blend", "category_popular", "trending", "popular", "new_item")

RECOMMENDATIONS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("generated_at", T.TimestampType(), False),
        # Personalised rows: the user's interacted item that contributed most; null otherwise.
        # Added after the first release: Lake.ensure adds it to an older table.
        T.StructField("because_item_id", T.StringType(), True),
    ]
)

USER_IDS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("user_idx", T.IntegerType(), False),
    ]
)

ITEM_IDS_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("item_idx", T.IntegerType(), False),
    ]
)

INGEST_METRICS_SCHEMA = T.StructType(
    [
        T.StructField("ingest_app_id", T.StringType(), False),
        T.StructField("batch_id", T.LongType(), False),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("duration_seconds", T.DoubleType(), False),
        T.StructField("input_rows", T.LongType(), False),
        T.StructField("quarantined_rows", T.LongType(), False),
        T.StructField("duplicate_rows", T.LongType(), False),
        T.StructField("events_written", T.LongType(), False),
        T.StructField("interactions_touched", T.LongType(), False),
        # Added after the first release, hence nullable (older rows have none).
        T.StructField("late_rows", T.LongType(), True),
        T.StructField("max_event_time", T.TimestampType(), True),
        T.StructField("phase_seconds", T.MapType(T.StringType(), T.DoubleType()), True),
        # Events of forgotten users dated before their forget, dropped (added later: nullable).
        T.StructField("forgotten_rows", T.LongType(), True),
        # Attribution (added later: nullable): new impressions and new events carrying a
        # recommendation_id, the recommendation_outcomes rows the batch changed, and per issue
        # (an event with no impression, outside the window, for an item not in the list...)
        # the change in how many stored events are in that state (recspark.ingest.outcomes).
        T.StructField("impressions_written", T.LongType(), True),
        T.StructField("attributed_events", T.LongType(), True),
        T.StructField("outcome_rows", T.LongType(), True),
        T.StructField("outcome_issues", T.MapType(T.StringType(), T.LongType()), True),
    ]
)

# What shoppers did with the lists they were shown, maintained by ingest (data contract §3):
# per day the list was served, model version, variant, list, source and position.
RECOMMENDATION_OUTCOMES_SCHEMA = T.StructType(
    [
        T.StructField("day", T.DateType(), False),  # UTC day the list was served (its id's time)
        T.StructField("model_version", T.StringType(), True),  # null: a list without a model
        T.StructField("variant", T.StringType(), True),  # null outside experiments
        T.StructField("list", T.StringType(), True),  # recommendations | similar_items
        T.StructField("source", T.StringType(), True),  # what filled the slot: als, ease, popular...
        T.StructField("position", T.IntegerType(), False),  # 1 = first
        T.StructField("impressions", T.LongType(), False),
        T.StructField("clicks", T.LongType(), False),
        T.StructField("add_to_carts", T.LongType(), False),
        T.StructField("purchases", T.LongType(), False),
        T.StructField("revenue", T.DoubleType(), False),
        T.StructField("updated_at", T.TimestampType(), False),
    ]
)

# Users deleted by forget-user: a hash of the id, never the id itself, and when. Ingestion drops
# their events dated before the forget, so replaying old files cannot bring them back.
FORGOTTEN_USERS_SCHEMA = T.StructType(
    [
        T.StructField("user_hash", T.StringType(), False),  # sha2(user_id, 256)
        T.StructField("forgotten_at", T.TimestampType(), False),
    ]
)

SIMILAR_ITEMS_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("similar_item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("generated_at", T.TimestampType(), False),
    ]
)

JOB_RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("ended_at", T.TimestampType(), False),
        T.StructField("status", T.StringType(), False),  # succeeded | failed
        T.StructField("rows_in", T.LongType(), True),
        T.StructField("rows_out", T.LongType(), True),
        T.StructField("model_version", T.StringType(), True),
        T.StructField("error", T.StringType(), True),
    ]
)

QUALITY_RESULTS_SCHEMA = T.StructType(
    [
        T.StructField("validated_at", T.TimestampType(), False),
        T.StructField("job", T.StringType(), True),
        T.StructField("suite", T.StringType(), False),
        T.StructField("table_name", T.StringType(), False),
        T.StructField("table_version", T.LongType(), True),
        T.StructField("success", T.BooleanType(), False),
        T.StructField("evaluated_expectations", T.IntegerType(), False),
        T.StructField("failed_expectations", T.IntegerType(), False),
        T.StructField("failures", T.StringType(), True),  # short text naming what failed
        T.StructField("action", T.StringType(), False),  # fail | warn
        # Added later (nullable): how many rows were validated, and which ("whole table", or
        # the rows a run wrote: "rows written since <time>").
        T.StructField("rows_validated", T.LongType(), True),
        T.StructField("scope", T.StringType(), True),
    ]
)


# Every trained model version's scoring data is kept in the lake, keyed by the registered model's
# name and version (model_name was added after the first release: older rows have none).
_MODEL_KEY = [
    T.StructField("model_version", T.StringType(), False),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("created_at", T.TimestampType(), False),
    T.StructField("model_name", T.StringType(), True),
]


def _factors_schema(id_column: str) -> T.StructType:
    """ALS factors of one side, one partition per registered model version."""
    return T.StructType(
        [
            T.StructField(id_column, T.StringType(), False),
            T.StructField("features", T.ArrayType(T.FloatType(), False), False),
            *_MODEL_KEY,
        ]
    )


ALS_USER_FACTORS_SCHEMA = _factors_schema("user_id")
ALS_ITEM_FACTORS_SCHEMA = _factors_schema("item_id")
# The item-item family: per item, its strongest weights towards other items (EASE).
ITEM_SIMILARITY_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("similar_item_id", T.StringType(), False),
        T.StructField("weight", T.FloatType(), False),
        *_MODEL_KEY,
    ]
)


CHAMPION_HISTORY_SCHEMA = T.StructType(
    [
        T.StructField("model_name", T.StringType(), False),
        T.StructField("alias", T.StringType(), False),
        T.StructField("version", T.StringType(), False),
        T.StructField("previous_version", T.StringType(), True),
        T.StructField("action", T.StringType(), False),  # train | promote | rollback
        T.StructField("reason", T.StringType(), True),
        T.StructField("moved_at", T.TimestampType(), False),
        T.StructField("moved_by", T.StringType(), True),
    ]
)


@dataclass(frozen=True, eq=False)  # identity equality: specs are singletons, usable as keys
class TableSpec:
    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    # The column every writer stamps with the time it wrote the row: what a run's quality gate
    # filters on to validate only the rows that run wrote (Delta's per-file min/max statistics
    # on it skip the files of earlier runs, so the cost follows the run, not the table).
    written_at: str | None = None
    # Columns the table's files are sorted by (a full rewrite sorts by them, and ``maintain``
    # Z-orders by them), so each file holds a narrow range and a lookup by key skips the rest.
    cluster_by: tuple[str, ...] = ()


EVENTS = TableSpec("events", EVENTS_SCHEMA, partition_by=("event_month",), written_at="ingested_at")


def with_event_partitions(events: DataFrame) -> DataFrame:
    """``event_date`` and ``event_month`` (the partition column), derived from ``event_time``."""
    day = F.to_date("event_time")
    return events.withColumn("event_date", day).withColumn("event_month", F.trunc(day, "month"))


def clustered(frame: DataFrame, spec: TableSpec) -> DataFrame:
    """``frame`` laid out as ``spec`` clusters its files: ranges of ``cluster_by`` (one per
    shuffle partition), sorted within each file. Unchanged for a table without ``cluster_by``."""
    if not spec.cluster_by:
        return frame
    return frame.repartitionByRange(*spec.cluster_by).sortWithinPartitions(*spec.cluster_by)


def any_of(column: Column, values: list[str]) -> Column:
    """``column`` equals one of ``values``, as a balanced OR of equalities rather than IN: Delta's
    data skipping reads an IN list as the one range min(values)..max(values), which covers every
    file for a few random keys, while it checks each equality against each file's statistics."""
    terms = [column == F.lit(value) for value in values]
    if not terms:
        return F.lit(False)
    while len(terms) > 1:
        terms = [terms[k] | terms[k + 1] if k + 1 < len(terms) else terms[k] for k in range(0, len(terms), 2)]
    return terms[0]


# The table property behind deletion vectors (rows marked deleted rather than files rewritten).
DELETION_VECTORS = "delta.enableDeletionVectors"

QUARANTINE = TableSpec("events_quarantine", QUARANTINE_SCHEMA)
INTERACTIONS = TableSpec(
    "interactions",
    INTERACTIONS_SCHEMA,
    # The refresh job reads the change feed to find users with new activity. With deletion
    # vectors an ingest MERGE marks the old rows of the pairs it updates deleted instead of
    # rewriting every file they sit in (a batch's users are spread over all files), so the bytes
    # it writes follow the batch (docs/benchmarks.md, `bench/merge.py`).
    properties={"delta.enableChangeDataFeed": "true", DELETION_VECTORS: "true"},
    written_at="updated_at",
)
RECOMMENDATIONS = TableSpec(
    "recommendations",
    RECOMMENDATIONS_SCHEMA,
    # The refresh MERGEs a few users' rows into a table of all users: with deletion vectors it
    # marks their old rows deleted instead of rewriting every file those rows sit in.
    # `recspark maintain` purges them (REORG ... APPLY (PURGE)) before VACUUM.
    properties={DELETION_VECTORS: "true"},
    # Files hold narrow user ranges: a reader's lookup of a user, and a refresh MERGE of a few
    # users, read only the files that can hold them.
    cluster_by=("user_id",),
    written_at="generated_at",
)


def _with_deletion_vectors(spec: TableSpec, enabled: bool) -> TableSpec:
    return replace(spec, properties={**spec.properties, DELETION_VECTORS: "true" if enabled else "false"})


def serving_table(deletion_vectors: bool) -> TableSpec:
    """The recommendations table as configured (``serve.deletion_vectors``)."""
    return _with_deletion_vectors(RECOMMENDATIONS, deletion_vectors)


def interactions_table(deletion_vectors: bool) -> TableSpec:
    """The interactions table as configured (``ingest.deletion_vectors``)."""
    return _with_deletion_vectors(INTERACTIONS, deletion_vectors)


USER_IDS = TableSpec("user_ids", USER_IDS_SCHEMA)
ITEM_IDS = TableSpec("item_ids", ITEM_IDS_SCHEMA)
INGEST_METRICS = TableSpec("ingest_metrics", INGEST_METRICS_SCHEMA)
SIMILAR_ITEMS = TableSpec("similar_items", SIMILAR_ITEMS_SCHEMA)
JOB_RUNS = TableSpec("job_runs", JOB_RUNS_SCHEMA)
QUALITY_RESULTS = TableSpec("quality_results", QUALITY_RESULTS_SCHEMA)
# Written by `recspark train` for every registered model version.
ALS_USER_FACTORS = TableSpec("als_user_factors", ALS_USER_FACTORS_SCHEMA, partition_by=("model_version",))
ALS_ITEM_FACTORS = TableSpec("als_item_factors", ALS_ITEM_FACTORS_SCHEMA, partition_by=("model_version",))
ITEM_SIMILARITY = TableSpec("item_similarity", ITEM_SIMILARITY_SCHEMA, partition_by=("model_version",))
FORGOTTEN_USERS = TableSpec("forgotten_users", FORGOTTEN_USERS_SCHEMA)
# Every move of a registry alias (champion, challenger) by train, promote or rollback.
CHAMPION_HISTORY = TableSpec("champion_history", CHAMPION_HISTORY_SCHEMA)
RECOMMENDATION_OUTCOMES = TableSpec(
    "recommendation_outcomes", RECOMMENDATION_OUTCOMES_SCHEMA, written_at="updated_at"
)

ALL_TABLES = (
    EVENTS,
    QUARANTINE,
    INTERACTIONS,
    RECOMMENDATIONS,
    SIMILAR_ITEMS,
    USER_IDS,
    ITEM_IDS,
    INGEST_METRICS,
    JOB_RUNS,
    QUALITY_RESULTS,
    ALS_USER_FACTORS,
    ALS_ITEM_FACTORS,
    ITEM_SIMILARITY,
    CHAMPION_HISTORY,
    FORGOTTEN_USERS,
    RECOMMENDATION_OUTCOMES,
)


class MissingTableError(RuntimeError):
    """A job needs a table an earlier stage has not written yet."""


@dataclass(frozen=True)
class Lake:
    """Tables live as Delta directories under one root (a local path or object-store URI)."""

    root: str
    database: str | None = None

    @classmethod
    def at(cls, root: str, database: str | None = None) -> Lake:
        is_uri = "://" in root
        return cls(root if is_uri else str(Path(root).expanduser().resolve()), database)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def checkpoint(self, query_name: str) -> str:
        return self.path(f"_checkpoints/{query_name}")

    def exists(self, spark: SparkSession, spec: TableSpec) -> bool:
        return DeltaTable.isDeltaTable(spark, self.path(spec.name))

    def ensure(self, spark: SparkSession, spec: TableSpec) -> DeltaTable:
        """Create the table with its schema, layout and properties if it is not there yet; add
        the optional (nullable) columns a newer schema has to a table written by an older one."""
        if self.exists(spark, spec):
            self._upgrade(spark, spec)
        builder = DeltaTable.createIfNotExists(spark).location(self.path(spec.name)).addColumns(spec.schema)
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        for key, value in spec.properties.items():
            builder = builder.property(key, value)
        table = builder.execute()
        if self.database:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS `{self.database}`.`{spec.name}` "
                f"USING DELTA LOCATION '{self.path(spec.name)}'"
            )
        return table

    def _upgrade(self, spark: SparkSession, spec: TableSpec) -> None:
        """Bring a table written by an older version to the spec: its missing nullable columns
        and table properties."""
        path = self.path(spec.name)
        table = DeltaTable.forPath(spark, path)
        present = {f.name.lower() for f in table.toDF().schema}
        missing = [f for f in spec.schema if f.nullable and f.name.lower() not in present]
        if missing:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
            spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
            log.info("table %s: added columns %s", spec.name, columns)
        if spec.properties:
            detail = table.detail().select("properties", "tableFeatures").first()
            current, features = (detail[0], detail[1] or []) if detail else ({}, [])
            if spec.properties.get(DELETION_VECTORS) == "false" and "deletionVectors" in features:
                # Setting the property only stops new deletion vectors; dropping the feature also
                # purges the existing ones and lifts the reader requirement from the protocol.
                spark.sql(f"ALTER TABLE delta.`{path}` DROP FEATURE deletionVectors")
                log.info("table %s: dropped the deletionVectors feature", spec.name)
                current = {**current, DELETION_VECTORS: "false"}
            changed = {k: v for k, v in spec.properties.items() if current.get(k) != v}
            if changed:
                assignments = ", ".join(f"'{k}' = '{v}'" for k, v in changed.items())
                spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({assignments})")
                log.info("table %s: set properties %s", spec.name, assignments)

    def append_row(self, spark: SparkSession, spec: TableSpec, row: tuple[Any, ...]) -> None:
        """Append one row (a tuple in the spec's column order): a blind append, which never
        conflicts with a concurrent writer. Creates the table first if needed."""
        self.ensure(spark, spec)
        (
            spark.createDataFrame([row], spec.schema)
            .write.format("delta")
            .mode("append")
            .save(self.path(spec.name))
        )

    def delta(self, spark: SparkSession, spec: TableSpec) -> DeltaTable:
        self.require(spark, spec)
        return DeltaTable.forPath(spark, self.path(spec.name))

    def read(self, spark: SparkSession, spec: TableSpec, version: int | None = None) -> DataFrame:
        self.require(spark, spec)
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.path(spec.name))

    def version(self, spark: SparkSession, spec: TableSpec) -> int:
        """The table's current Delta version (what a reader pinned now would see)."""
        row = self.delta(spark, spec).history(1).select("version").first()
        assert row is not None
        return int(row["version"])

    def require(self, spark: SparkSession, spec: TableSpec) -> None:
        if not self.exists(spark, spec):
            raise MissingTableError(
                f"table '{spec.name}' not found at {self.path(spec.name)}; run the stage that "
                "writes it first (recspark ingest / train / recommend)"
            )

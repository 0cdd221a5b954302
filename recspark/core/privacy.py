"""What forgetting a user leaves for the other stages: a hashed tombstone (ingest drops the
user's replayed events) and the id map's high-water mark (model never reuses their index)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.conflicts import retry_on_conflict
from recspark.core.tables import FORGOTTEN_USERS, USER_IDS, Lake, TableSpec

log = logging.getLogger(__name__)

# A table property of an id map: the highest index ever handed out, even if its row was deleted.
HIGH_WATER_PROPERTY = "recspark.indexHighWater"


def user_hash(user_id: Column) -> Column:
    """How forgotten users are kept: a SHA-256 of the id, never the id itself."""
    return F.sha2(user_id, 256)


def _index_column(spec: TableSpec) -> str:
    return spec.schema.fields[1].name


def index_high_water(spark: SparkSession, lake: Lake, spec: TableSpec) -> int:
    """The highest index the id map has ever handed out (-1 for an empty map)."""
    table = lake.delta(spark, spec)
    recorded = table.detail().collect()[0]["properties"].get(HIGH_WATER_PROPERTY)
    current = table.toDF().agg(F.max(_index_column(spec))).collect()[0][0]
    return max(-1 if current is None else int(current), -1 if recorded is None else int(recorded))


def raise_index_high_water(spark: SparkSession, lake: Lake, spec: TableSpec) -> None:
    """Record the map's highest index before rows are deleted from it."""
    mark = index_high_water(spark, lake, spec)
    spark.sql(
        f"ALTER TABLE delta.`{lake.path(spec.name)}` SET TBLPROPERTIES ('{HIGH_WATER_PROPERTY}' = '{mark}')"
    )


@dataclass(frozen=True)
class Tombstones:
    """The forget-user tombstones as a writer read them: the table's version (None: it did not
    exist yet) and its rows at that version (user_hash, forgotten_at).

    A stream filters its batch against these, then commits; an erasure may land in between (its
    tombstone after this read, its DELETE before the stream's commit), so after committing the
    stream asks :meth:`added_since` and removes those users' rows itself."""

    version: int | None
    rows: DataFrame

    @classmethod
    def read(cls, spark: SparkSession, lake: Lake) -> Tombstones:
        if not lake.exists(spark, FORGOTTEN_USERS):
            return cls(None, spark.createDataFrame([], FORGOTTEN_USERS.schema))
        version = lake.version(spark, FORGOTTEN_USERS)
        return cls(version, lake.read(spark, FORGOTTEN_USERS, version))

    def added_since(self, spark: SparkSession, lake: Lake) -> list[tuple[str, datetime]]:
        """Tombstones committed after this read (user_hash, forgotten_at): usually none, and
        then only the table's version is read."""
        if not lake.exists(spark, FORGOTTEN_USERS):
            return []
        if self.version is not None and lake.version(spark, FORGOTTEN_USERS) == self.version:
            return []
        added = lake.read(spark, FORGOTTEN_USERS).join(self.rows, ["user_hash", "forgotten_at"], "left_anti")
        return [(r["user_hash"], r["forgotten_at"]) for r in added.collect()]


def of_forgotten(
    tombstones: list[tuple[str, datetime]], dated_before: str | None = None, user_column: str = "user_id"
) -> Column:
    """Rows of the tombstoned users; with ``dated_before``, only those whose timestamp column of
    that name is before the user's forget (what ingest drops on replay)."""
    hashed = user_hash(F.col(user_column))
    condition = F.lit(False)
    for hashed_id, forgotten_at in tombstones:
        term = hashed == F.lit(hashed_id)
        if dated_before is not None:
            term = term & (F.col(dated_before) < F.lit(forgotten_at))
        condition = condition | term
    return condition


def remove_users_forgotten_since(
    spark: SparkSession, lake: Lake, read: Tombstones, tables: tuple[TableSpec, ...], job: str
) -> None:
    """Delete from ``tables`` the rows of the users forgotten since ``read``: what a job that
    read its input before an erasure wrote for them after the erasure's own DELETE. The id map's
    high-water mark is raised first, so an index the job gave such a user again is never
    handed out after its row is gone."""
    late = read.added_since(spark, lake)
    if not late:
        return
    names = ", ".join(spec.name for spec in tables)
    log.info("%s: removing the rows of %d user(s) forgotten meanwhile from %s", job, len(late), names)
    if USER_IDS in tables and lake.exists(spark, USER_IDS):
        raise_index_high_water(spark, lake, USER_IDS)
    for spec in tables:
        if lake.exists(spark, spec):
            retry_on_conflict(
                partial(lake.delta(spark, spec).delete, of_forgotten(late)),
                f"{job}: delete the {spec.name} rows of users forgotten meanwhile",
            )


@contextmanager
def forgotten_users_removed(
    spark: SparkSession, lake: Lake, tables: tuple[TableSpec, ...], job: str
) -> Iterator[None]:
    """Rows written inside are built from input read at the start; an erasure that lands
    meanwhile may delete a user's rows before they are written back. Afterwards, the rows of
    ``tables`` of users forgotten since the start are deleted again."""
    read = Tombstones.read(spark, lake)
    yield
    remove_users_forgotten_since(spark, lake, read, tables, job)

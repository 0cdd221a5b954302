"""The ``recommendations`` suite: every user's ranked list complete, ordered by score, of
available items, from a known source."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recspark.core.tables import RECOMMENDATION_SOURCES

# Derived columns of the validated recommendations frame (see validated_frame).
ROWS_FOR_USER = "rows_for_user"
ROWS_DUE = "rows_due"  # top_n, or the eligible items left to the user when fewer
SCORE_ORDERED = "score_not_above_previous_rank"
ITEM_UNAVAILABLE = "item_unavailable"


def build_expectations() -> list[Any]:
    from great_expectations import expectations as E

    expectations: list[Any] = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
        for c in ("user_id", "rank", "item_id", "score")
    ]
    expectations += [
        E.ExpectCompoundColumnsToBeUnique(
            column_list=["user_id", "rank"], description="one row per (user_id, rank)"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="rank",
            min_value=1,
            max_value={"$PARAMETER": "top_n"},
            description="rank is between 1 and top_n",
        ),
        E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=ROWS_FOR_USER,
            column_B=ROWS_DUE,
            or_equal=True,
            description="every user has top_n rows, or every eligible item left to them",
        ),
        E.ExpectColumnValuesToBeInSet(
            column=SCORE_ORDERED,
            value_set=[True],
            description="scores do not increase with rank",
        ),
        E.ExpectColumnValuesToBeInSet(
            column=ITEM_UNAVAILABLE,
            value_set=[False],
            description="no unavailable item is recommended",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="source",
            value_set=list(RECOMMENDATION_SOURCES),
            description="source is one of " + ", ".join(RECOMMENDATION_SOURCES),
        ),
    ]
    return expectations


def validated_frame(
    df: DataFrame,
    top_n: int,
    unavailable_items: DataFrame | None = None,
    min_rows: int | None = None,
    room: DataFrame | None = None,
) -> tuple[DataFrame, dict[str, Any]]:
    """The serving table plus per-row flags for the properties that span rows. The rows due to
    a user are ``top_n``, or fewer: ``room`` (user_id, room) for a user it names, else
    ``min_rows`` when given."""
    per_user = Window.partitionBy("user_id")
    previous = F.lag("score").over(per_user.orderBy("rank"))
    frame = df.select("user_id", "rank", "item_id", "score", "source")
    due = F.lit(top_n if min_rows is None else min(min_rows, top_n))
    if room is not None:
        frame = frame.join(room.select("user_id", F.col("room").alias("_room")), "user_id", "left")
        due = F.least(due, F.coalesce(F.col("_room"), due))
    frame = frame.withColumns(
        {
            ROWS_FOR_USER: F.count(F.lit(1)).over(per_user),
            ROWS_DUE: due.cast("long"),
            SCORE_ORDERED: F.coalesce(F.col("score") <= previous, F.lit(True)),
        }
    ).drop("_room")
    if unavailable_items is None:
        frame = frame.withColumn(ITEM_UNAVAILABLE, F.lit(False))
    else:
        flagged = (
            unavailable_items.select("item_id")
            .where(F.col("item_id").isNotNull())
            .distinct()
            .withColumn(ITEM_UNAVAILABLE, F.lit(True))
        )
        frame = frame.join(F.broadcast(flagged), "item_id", "left").withColumn(
            ITEM_UNAVAILABLE, F.coalesce(F.col(ITEM_UNAVAILABLE), F.lit(False))
        )
    return frame, {"top_n": top_n}

"""The ``interactions`` suite: one row per (user, item), no negative strength or count."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame

from recspark.core.interactions import COUNT_COLUMNS


def build_expectations() -> list[Any]:
    from great_expectations import expectations as E

    expectations: list[Any] = [
        E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is never null")
        for c in ("user_id", "item_id")
    ]
    expectations.append(
        E.ExpectCompoundColumnsToBeUnique(
            column_list=["user_id", "item_id"], description="one row per (user_id, item_id)"
        )
    )
    expectations += [
        E.ExpectColumnValuesToBeBetween(column=c, min_value=0, description=f"{c} is not negative")
        for c in ("strength", *COUNT_COLUMNS.values())
    ]
    return expectations


def validated_frame(df: DataFrame) -> tuple[DataFrame, dict[str, Any]]:
    return df.select("user_id", "item_id", "strength", *COUNT_COLUMNS.values()), {}

"""The ``catalog`` suite: every line of the catalog as read
(:func:`recspark.core.catalog.load_catalog`) is well-formed."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

# The derived column of the validated catalog lines: the reason and item of a malformed line.
MALFORMED_LINE = "malformed_line"


def build_expectations() -> list[Any]:
    from great_expectations import expectations as E

    return [
        E.ExpectColumnValuesToBeNull(column=MALFORMED_LINE, description="every catalog line is well-formed")
    ]


def validated_frame(df: DataFrame) -> tuple[DataFrame, dict[str, Any]]:
    """The catalog's lines (:attr:`CatalogRead.lines`), a malformed one named by reason and item."""
    named = F.concat_ws(" ", F.col("reason"), F.concat(F.lit("(item "), F.col("item_id"), F.lit(")")))
    return df.select(F.when(F.col("reason").isNotNull(), named).alias(MALFORMED_LINE)), {}

"""JSON lines read as Spark expressions: each line's one JSON value, or null (no line can raise)."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def one_json_value(line: Column) -> Column:
    """The line's JSON value (a VARIANT), or null unless the line holds exactly one: the parser
    alone would read ``{...}{...}`` (two records glued together) or ``{...} junk`` as the first
    object and drop the rest silently, so the line is parsed as the body of a JSON array instead."""
    wrapped = F.try_parse_json(F.concat(F.lit("["), line, F.lit("]")))
    values = F.try_variant_get(wrapped, "$", "array<variant>")
    return F.when(F.array_size(values) == 1, F.element_at(values, 1))

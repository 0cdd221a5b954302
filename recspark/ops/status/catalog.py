"""The status report's catalog: the file as the next job would read it, its malformed lines by
reason and the items they hold back."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.catalog import CatalogError, load_catalog, summarize
from recspark.core.config import Config
from recspark.core.text import first_line


@dataclass(frozen=True)
class ReasonState:
    """Malformed catalog lines of one reason."""

    reason: str
    lines: int
    examples: list[str]  # "item <id>: <offending text>", a few


@dataclass(frozen=True)
class CatalogState:
    """The catalog as it reads now: ``path`` None when there is none (every item eligible);
    ``error`` set when it cannot be read at all."""

    path: str | None
    unlisted_items: str
    error: str | None = None
    lines: int | None = None
    malformed_lines: int | None = None
    items: int | None = None
    available_items: int | None = None  # listed, available and not held back
    held_back_items: int | None = None  # named by a malformed line: not recommended
    reasons: list[ReasonState] = field(default_factory=list)


def gather_catalog(spark: SparkSession, config: Config) -> CatalogState:
    """The catalog file as it reads now (what the next job would read): its lines, the
    malformed ones by reason, and the items they hold back."""
    path, unlisted = config.catalog.path, config.catalog.unlisted_items
    if path is None:
        return CatalogState(None, unlisted)
    try:
        read = load_catalog(spark, path)
        summary = summarize(read)
        counts = read.items.agg(
            F.count(F.lit(1)).alias("items"), F.count(F.when(F.col("available"), 1)).alias("available")
        ).first()
    except CatalogError as exc:
        return CatalogState(path, unlisted, error=first_line(exc))
    assert counts is not None
    return CatalogState(
        path,
        unlisted,
        lines=summary.lines,
        malformed_lines=summary.malformed_lines,
        items=int(counts["items"]),
        available_items=int(counts["available"]),
        held_back_items=summary.held_back_items,
        reasons=[ReasonState(reason, lines, examples) for reason, lines, examples in summary.reasons],
    )

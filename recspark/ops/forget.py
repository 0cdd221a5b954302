"""Forgetting a user (a data-subject erasure request) everywhere recspark keeps their data.

What it does, in order, so that an interruption can simply be retried:

1. records a tombstone (a SHA-256 of the id and the time) in ``forgotten_users``, so ingest
   drops the user's events dated before the forget when old files or topics are replayed;
2. raises the user id map's high-water mark, so the user's index is never handed to a newcomer
   (the champion's factors are keyed by index);
3. deletes the user's rows from every table that holds them, including quarantined lines whose
   ``user_id`` could not be parsed but whose raw text names the id;
4. scrubs free text that may quote the id: ``job_runs.error``, ``quality_results.failures`` and
   the Great Expectations results and Data Docs under the lake.

Delta deletes are logical: older table versions keep the rows until ``recspark maintain``
VACUUMs them after the retention period. Landing files and Kafka topics are outside the lake.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from recspark.core.conflicts import retry_on_conflict
from recspark.core.privacy import raise_index_high_water, user_hash
from recspark.core.tables import (
    ALS_USER_FACTORS,
    EVENTS,
    FORGOTTEN_USERS,
    INTERACTIONS,
    JOB_RUNS,
    QUALITY_RESULTS,
    QUARANTINE,
    RECOMMENDATIONS,
    USER_IDS,
    Lake,
)
from recspark.ops.quality.ge_context import quality_dir

log = logging.getLogger(__name__)

REPLACEMENT = "<forgotten user>"
# Characters that may belong to an id: a mention of "u1" must not match inside "u12".
_ID_CHARS = "A-Za-z0-9_.:@-"


def _java_literal(text: str) -> str:
    """``text`` as a literal inside a Java regular expression (what Spark's ``rlike`` runs)."""
    return "\\Q" + text.replace("\\E", "\\E\\\\E\\Q") + "\\E"


def mention_pattern(user_id: str) -> str:
    """A Java regular expression matching the id as a whole token."""
    return f"(?<![{_ID_CHARS}]){_java_literal(user_id)}(?![{_ID_CHARS}])"


def _mentions(column: str, user_id: str) -> Column:
    return F.coalesce(F.col(column).rlike(mention_pattern(user_id)), F.lit(False))


def _names_as_user(raw: str, user_id: str) -> Column:
    """A raw line whose ``user_id`` field holds the id (quoted or not), even if the rest of the
    line is broken: narrower than any mention, so forgetting user "12" spares lines naming
    item 12."""
    pattern = f'"user_id"\\s*:\\s*"?{_java_literal(user_id)}(?![{_ID_CHARS}])'
    return F.coalesce(F.col(raw).rlike(pattern), F.lit(False))


def forget_user(spark: SparkSession, lake: Lake, user_id: str) -> dict[str, int]:
    """Forget ``user_id`` (see the module docstring); returns rows deleted or scrubbed per table."""
    lake.append_row(
        spark,
        FORGOTTEN_USERS,
        (
            spark.range(1).select(user_hash(F.lit(user_id))).collect()[0][0],
            datetime.now(timezone.utc),
        ),
    )
    if lake.exists(spark, USER_IDS):
        raise_index_high_water(spark, lake, USER_IDS)
    done: dict[str, int] = {}
    by_id = F.col("user_id") == F.lit(user_id)
    for spec in (EVENTS, INTERACTIONS, RECOMMENDATIONS, USER_IDS, ALS_USER_FACTORS):
        if lake.exists(spark, spec):
            done[spec.name] = _delete(lake.delta(spark, spec), by_id)
    if lake.exists(spark, QUARANTINE):
        done[QUARANTINE.name] = _delete(lake.delta(spark, QUARANTINE), by_id | _names_as_user("raw", user_id))
    for spec, column in ((JOB_RUNS, "error"), (QUALITY_RESULTS, "failures")):
        if lake.exists(spark, spec):
            done[spec.name] = _scrub(lake.delta(spark, spec), column, user_id)
    done["quality_files"] = scrub_files(quality_dir(lake), user_id)
    log.info("forget-user: %s", done)
    return done


def _delete(table: DeltaTable, condition: Column) -> int:
    # Streams and maintain write beside an erasure: a DELETE that lost a commit race deleted
    # nothing, and runs again.
    retry_on_conflict(lambda: table.delete(condition), "forget-user: delete")
    return _last_operation_rows(table, "numDeletedRows")


def _scrub(table: DeltaTable, column: str, user_id: str) -> int:
    retry_on_conflict(
        lambda: table.update(
            _mentions(column, user_id),
            {column: F.regexp_replace(F.col(column), mention_pattern(user_id), REPLACEMENT)},
        ),
        "forget-user: scrub",
    )
    return _last_operation_rows(table, "numUpdatedRows")


def _last_operation_rows(table: DeltaTable, metric: str) -> int:
    row = table.history(1).select("operationMetrics").first()
    metrics = (row[0] if row else None) or {}
    return int(metrics.get(metric, 0))


def scrub_files(folder: Path | None, user_id: str) -> int:
    """Replace mentions of the id in the text files under ``folder``; returns files changed."""
    if folder is None or not folder.is_dir():
        return 0
    pattern = re.compile(f"(?<![{_ID_CHARS}]){re.escape(user_id)}(?![{_ID_CHARS}])")
    changed = 0
    for path in folder.rglob("*"):
        if not path.is_file() or path.suffix not in {".json", ".html", ".yml", ".yaml", ".txt"}:
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        scrubbed = pattern.sub(REPLACEMENT, text)
        if scrubbed != text:
            path.write_text(scrubbed, encoding="utf-8", errors="surrogateescape")
            changed += 1
    return changed

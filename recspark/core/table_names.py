"""What the lake's tables are called and where they live, in plain Python.

The Spark jobs name their tables through ``tables.py`` (schemas, layout), which imports Spark;
the readers that must not start a JVM (``recspark api``, ``recspark show``) take the same names
and paths from here.
"""

from __future__ import annotations

from pathlib import Path

EVENTS = "events"
QUARANTINE = "events_quarantine"
INTERACTIONS = "interactions"
RECOMMENDATIONS = "recommendations"
SIMILAR_ITEMS = "similar_items"
FALLBACK_ITEMS = "fallback_items"
USER_IDS = "user_ids"
ITEM_IDS = "item_ids"
INGEST_METRICS = "ingest_metrics"
JOB_RUNS = "job_runs"
QUALITY_RESULTS = "quality_results"
ALS_USER_FACTORS = "als_user_factors"
ALS_ITEM_FACTORS = "als_item_factors"
ITEM_SIMILARITY = "item_similarity"
FORGOTTEN_USERS = "forgotten_users"
CHAMPION_HISTORY = "champion_history"
RECOMMENDATION_OUTCOMES = "recommendation_outcomes"


def lake_root(root: str) -> str:
    """The lake's root as every reader resolves it: a URI as given, a local path absolute."""
    return root if "://" in root else str(Path(root).expanduser().resolve())


def table_path(root: str, name: str) -> str:
    """Where the table ``name`` lives under the (resolved) lake ``root``."""
    return f"{root.rstrip('/')}/{name}"

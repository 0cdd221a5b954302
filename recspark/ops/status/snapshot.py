"""The status snapshot: every section of the report, read once so text and JSON cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.tables import Lake
from recspark.ops.status.catalog import CatalogState, gather_catalog
from recspark.ops.status.champion import ChampionState, gather_champion
from recspark.ops.status.job_runs import RunState, gather_runs
from recspark.ops.status.outcomes import OutcomeState, gather_outcome_issues, gather_outcomes
from recspark.ops.status.quality_gates import GateState, gather_gates
from recspark.ops.status.tables import TableState, gather_tables


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything the status report shows, read once so text and JSON cannot disagree."""

    at: float
    lake_root: str
    tables: list[TableState]
    champion: ChampionState
    runs: list[RunState]
    gates: list[GateState]
    catalog: CatalogState
    outcomes: list[OutcomeState] = field(default_factory=list)
    # Attribution issues now (ingest_metrics.outcome_issues summed over all batches).
    outcome_issues: dict[str, int] = field(default_factory=dict)


def gather_status(spark: SparkSession, config: Config, lake: Lake) -> StatusSnapshot:
    """Read what the status report shows, once: tables, champion, last runs, last gates, what
    shoppers did with the lists served lately, and the catalog."""
    return StatusSnapshot(
        at=datetime.now(timezone.utc).timestamp(),
        lake_root=lake.root,
        tables=gather_tables(spark, lake),
        champion=gather_champion(spark, config, lake),
        runs=gather_runs(spark, lake),
        gates=gather_gates(spark, lake),
        catalog=gather_catalog(spark, config),
        outcomes=gather_outcomes(spark, lake),
        outcome_issues=gather_outcome_issues(spark, lake),
    )

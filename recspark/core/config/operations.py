"""Keeping the lake sound and stocked: the quality gates (``quality.*``), compaction and VACUUM
(``maintenance.*``) and the synthetic shop ``generate`` writes (``generate.*``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from recspark.core.config.checks import require

# The Great Expectations suites, one per table they check, and one for the catalog's lines
# (recspark.ops.quality defines them).
QUALITY_SUITES = ("events", "interactions", "recommendations", "catalog")
# A malformed catalog line only warns by default: its item is held back either way.
DEFAULT_ON_FAILURE = {"events": "warn", "interactions": "fail", "recommendations": "fail", "catalog": "warn"}


@dataclass(frozen=True)
class QualityConfig:
    """Great Expectations gates: per suite, whether a failed validation stops the job."""

    enabled: bool = True
    """Run the Great Expectations gates."""
    on_failure: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ON_FAILURE))
    """Per suite (`events`, `interactions`, `recommendations`, `catalog`): `fail` stops the job with
    a non-zero exit, `warn` logs and records only; a suite not named keeps its default. `catalog:
    fail` stops `train`, `recommend` and a full refresh on any malformed catalog line."""
    data_docs: bool = True
    """Build Great Expectations Data Docs (HTML) under `<lake.root>/_quality/data_docs`."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.on_failure) - set(QUALITY_SUITES))
        require(
            not unknown, f"quality.on_failure has unknown suites {unknown}; known: {list(QUALITY_SUITES)}"
        )
        bad = {k: v for k, v in self.on_failure.items() if v not in ("fail", "warn")}
        require(not bad, f"quality.on_failure values must be 'fail' or 'warn', got {bad}")
        object.__setattr__(self, "on_failure", {**DEFAULT_ON_FAILURE, **self.on_failure})


@dataclass(frozen=True)
class MaintenanceConfig:
    """`recspark maintain`: compaction and VACUUM of the tables."""

    vacuum_retention_hours: float = 168.0
    """VACUUM keeps files this long; below a week (168) Delta's safety check, and this config, refuse:
    streams and time travel need the files."""

    def __post_init__(self) -> None:
        require(
            self.vacuum_retention_hours >= 168,
            "maintenance.vacuum_retention_hours must be >= 168 (streams and time travel need "
            "the files for at least a week)",
        )


@dataclass(frozen=True)
class GenerateConfig:
    """The synthetic shop `recspark generate` (and the demo) writes."""

    users: int = 2000
    """Shoppers."""
    items: int = 500
    """Catalog items."""
    categories: int = 20
    """Catalog categories."""
    events: int = 60_000
    """Events in the log."""
    days: int = 30
    """Days the log spans."""
    seed: int = 7
    """Random seed: the same settings write the same shop."""
    bad_fraction: float = 0.002
    """Share of broken lines (the quarantine's work)."""
    duplicate_fraction: float = 0.01
    """Share of events sent again verbatim, as producer retries do (dedup's work)."""

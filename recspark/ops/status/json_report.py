"""The status report as one JSON-ready object for monitoring systems, every string redacted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from recspark.core.secrets import redact
from recspark.core.text import iso_text
from recspark.ops.status.catalog import CatalogState
from recspark.ops.status.champion import ChampionState
from recspark.ops.status.job_runs import RunState
from recspark.ops.status.outcomes import OutcomeState
from recspark.ops.status.quality_gates import GateState
from recspark.ops.status.snapshot import StatusSnapshot
from recspark.ops.status.tables import TableState


def _redacted(value: Any) -> Any:
    """Every string in a JSON-ready structure redacted one by one (redacting the serialised text
    could eat a closing quote)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


# The fields that hold epoch seconds; JSON carries them as ISO 8601 UTC.
_EPOCH_FIELDS = frozenset(
    {
        "last_commit",
        "registered_at",
        "promoted_at",
        "newest_trained_at",
        "started_at",
        "ended_at",
        "validated_at",
    }
)


def _as_json(
    state: TableState | ChampionState | RunState | GateState | CatalogState | OutcomeState,
    **derived: Any,
) -> dict[str, Any]:
    """A state's fields, its times as ISO text, plus ``derived`` values computed from them."""
    fields = {k: iso_text(v) if k in _EPOCH_FIELDS else v for k, v in asdict(state).items()}
    return {**fields, **derived}


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def status_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    """The same snapshot as one JSON-ready object for monitoring systems (times ISO 8601 UTC,
    newest run first), every string redacted."""
    return _redacted(
        {
            "generated_at": iso_text(snapshot.at),
            "lake_root": snapshot.lake_root,
            "tables": [
                _as_json(
                    t, age_seconds=_rounded(None if t.last_commit is None else snapshot.at - t.last_commit)
                )
                for t in snapshot.tables
            ],
            "champion": _as_json(
                snapshot.champion,
                unchanged_seconds=_rounded(
                    None
                    if snapshot.champion.promoted_at is None
                    else snapshot.at - snapshot.champion.promoted_at
                ),
            ),
            "job_runs": [_as_json(r, duration_seconds=_rounded(r.duration)) for r in snapshot.runs],
            "quality_gates": [_as_json(g) for g in snapshot.gates],
            "catalog": _as_json(snapshot.catalog),
            "outcomes": [_as_json(o, ctr=o.ctr, conversion=o.conversion) for o in snapshot.outcomes],
            "outcome_issues": snapshot.outcome_issues,
        }
    )

"""A quality gate as the stages see it: a callable that validates a frame before a job relies on it.

The stages (``model``, ``serve``) decide *when* a table must be checked; the entry points wire the
gate to Great Expectations (``recspark.ops.quality.gate.gate_for``), so no stage depends on ``ops``.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyspark.sql import DataFrame


class Gate(Protocol):
    def __call__(self, suite: str, frame: DataFrame, table_version: int | None = None, **checks: Any) -> None:
        """Validate ``frame`` with the named suite; raise when the suite fails and must stop the job."""


def no_gate(suite: str, frame: DataFrame, table_version: int | None = None, **checks: Any) -> None:
    """A gate that checks nothing: for benchmarks and tests that validate elsewhere."""

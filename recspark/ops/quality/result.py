"""A suite's verdict on one frame, and the error that stops a job when a ``fail`` suite fails."""

from __future__ import annotations

from dataclasses import dataclass, field

WHOLE_TABLE = "whole table"


@dataclass(frozen=True)
class QualityResult:
    """The outcome of one suite on one frame; ``action`` is what a failure does (fail | warn)."""

    suite: str
    table_name: str
    success: bool
    evaluated: int
    failed: int
    failures: list[str] = field(default_factory=list)
    action: str = "fail"
    rows: int | None = None  # rows validated (None: not validated at all)
    scope: str = WHOLE_TABLE  # which rows: the whole table, or the rows a run wrote

    def summary(self) -> str:
        """One line for logs and error messages."""
        if self.success:
            rows = "" if self.rows is None else f" on {self.rows} rows, {self.scope}"
            return (
                f"quality suite '{self.suite}' passed on table {self.table_name} "
                f"({self.evaluated} expectations{rows})"
            )
        return (
            f"quality suite '{self.suite}' failed on table {self.table_name}: "
            f"{self.failed} of {self.evaluated} expectations failed: " + "; ".join(self.failures)
        )


class QualityGateError(RuntimeError):
    """A suite configured to ``fail`` did not pass; the message is one line naming what failed."""

    def __init__(self, result: QualityResult, table_version: int | None = None) -> None:
        where = result.table_name + (f" version {table_version}" if table_version is not None else "")
        super().__init__(
            f"quality gate '{result.suite}' failed on table {where}: "
            f"{result.failed} of {result.evaluated} expectations failed: " + "; ".join(result.failures)
        )
        self.result = result

"""Reading the lake's Delta tables without Spark or a JVM: delta-rs.

Queries go through delta-rs' DataFusion engine (``QueryBuilder``), which applies deletion
vectors; its plain ``to_pyarrow_table`` refuses tables that have them. Results are arro3 tables
(delta-rs' own Arrow): a caller that wants pyarrow converts with ``pyarrow.table(result)``, and
a short lookup (``recspark show``) needs neither pyarrow nor NumPy.
"""

from __future__ import annotations

from typing import Any

from arro3.core import RecordBatchReader, Table
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import TableNotFoundError

# The name a query refers to the table by.
TABLE = "t"


def open_table(path: str, version: int | None = None) -> DeltaTable | None:
    """The Delta table at ``path`` (as of ``version``, else its newest), or None when nothing
    has been written there yet. A broken log raises (delta-rs' error)."""
    try:
        return DeltaTable(path, version=version)
    except TableNotFoundError:
        return None


def query(table: DeltaTable, sql: str) -> Table:
    """Run ``sql`` over ``table`` (named :data:`TABLE`) at the version it was opened at."""
    return stream(table, sql).read_all()


def stream(table: DeltaTable, sql: str) -> RecordBatchReader:
    """:func:`query`'s result as batches, produced as they are read: a large result need not be
    in memory at once."""
    return QueryBuilder().register(TABLE, table).execute(sql)


def text_literal(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled; DataFusion reads backslashes as is)."""
    return "'" + value.replace("'", "''") + "'"


def records(result: Table) -> list[dict[str, Any]]:
    """The rows of a (small) result as dicts of Python values."""
    columns = {name: result.column(name).to_pylist() for name in result.column_names}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def column_names(table: DeltaTable) -> list[str]:
    """The table's columns, in schema order."""
    return [field.name for field in table.schema().fields]

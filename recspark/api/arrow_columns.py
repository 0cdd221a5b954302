"""Arrow as the lookup service reads it: delta-rs results as pyarrow tables whose text is
``large_string``, and Arrow columns as NumPy arrays (nulls as 0)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def arrow_table(result: object) -> pa.Table:
    """A delta-rs result (arro3) as a pyarrow table whose text columns are ``large_string``
    (delta-rs hands out ``string_view``, which some pyarrow kernels lack)."""
    table = pa.table(result)
    fields = [
        pa.field(f.name, pa.large_string(), f.nullable) if pa.types.is_string_view(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def chunked_tables(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The batches as tables of about ``rows`` rows each (text as ``large_string``)."""
    pending: list[pa.RecordBatch] = []
    count, yielded = 0, False
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield arrow_table(pa.Table.from_batches(pending))
            pending, count, yielded = [], 0, True
    if pending or not yielded:
        yield arrow_table(pa.Table.from_batches(pending, schema=getattr(batches, "schema", None)))


def epoch_micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as epoch microseconds (null: 0)."""
    micros = pa.timestamp("us", tz="UTC")
    if column.type != micros:
        column = pc.cast(column, micros)
    return pc.cast(column, pa.int64()).fill_null(0).to_numpy()


def filled_numbers(column: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    """A numeric column as a NumPy array of ``dtype`` (null: 0)."""
    return column.fill_null(0).to_numpy().astype(dtype)


def single_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one Arrow array (an empty chunked column: an empty ``large_string`` one)."""
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], pa.large_string())
    return column

"""Parquet pages on the ClickHouse span store as columns, not rows (docs/span-store-internals.md,
"Exports"): each page's values go to Arrow a column at a time, times read as integer microseconds
and cast, where the row path made a dict per row and a datetime per time value. The same table as
`exports/writers.ParquetWriter.write_rows` makes: the same schema (`writers.arrow_schema`), JSON
fields as `json.dumps` text, one row group a page."""

from __future__ import annotations

import json

import pyarrow as pa

from observatory_core.exports.span_store_pages import KEYS, TextPlan
from observatory_core.exports.writers import arrow_schema, json_fields
from observatory_core.storage.dialect import epoch_us
from observatory_core.storage.types import UtcDateTime
from observatory_core.traces.fields import field_column


def parquet_plan(fields: tuple[str, ...]) -> TextPlan:
    """The columns a Parquet page reads (times as microseconds) and its Arrow table."""
    schema = arrow_schema(fields)
    jsonish = json_fields()
    columns = []
    for name in fields:
        column = field_column(name)
        is_time = isinstance(column.type, UtcDateTime) and pa.types.is_timestamp(
            schema.field(name).type
        )
        columns.append(epoch_us(column).label(name) if is_time else column)

    def table(page: list) -> pa.Table:
        values = list(zip(*page, strict=True))[KEYS:]
        arrays = []
        for name, got in zip(fields, values, strict=True):
            kind = schema.field(name).type
            if name in jsonish:
                arrays.append(pa.array([json.dumps(v) for v in got], kind))
            elif pa.types.is_timestamp(kind):
                arrays.append(pa.array(got, pa.int64()).cast(kind))
            else:
                arrays.append(pa.array(got, kind))
        return pa.Table.from_arrays(arrays, schema=schema)

    return TextPlan(columns, table, "write_table")

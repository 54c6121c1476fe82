"""Tell the rows the loader re-reads unchanged from the rows that really changed, by comparing with bronze.

Why: the operational loader re-reads a `lag` window (3 days) of every table on every run, to catch rows that
commit late with an older `updated_at`. Merging an unchanged re-read row is harmless for bronze, but it
would stamp the row with this run's `_loaded_at`: every table would look freshly loaded every night, and the
nightly dbt job (loaders/nightly.py), which rebuilds what sits below a fresher source, would rebuild every
dimension, fact and snapshot of the operational source although nothing in them changed. So a re-read row
that equals its bronze version in every source column is dropped before it is stamped: bronze keeps it as
it is, with the `_loaded_at` of the run that last changed it. A row that differs in any column, or is not in
bronze yet, is loaded as before. Only the bronze rows whose `updated_at` falls in the batch's range are read:
a row whose `updated_at` moved cannot be equal.

The comparison treats an empty string at the source as NULL, because that is how dlt's COPY lands it.
A batch with a column that cannot be compared here (anything but integers, decimals, strings, booleans,
dates and timestamps) or a bronze table that lacks a column is loaded whole, as before: slower, never lossy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg2
import psycopg2.errors
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from loaders.destinations import BigQueryTarget, warehouse_kind
from loaders.operational.copy_backend import copy_arrow_tables

CURSOR_COLUMN = "updated_at"
KEY_COLUMN = "id"
_BRONZE = "__bronze_"
_ROW = "__row"


def comparable(schema: pa.Schema) -> bool:
    """Whether every column has a type whose values compare exactly after a round trip through bronze."""
    names = set(schema.names)
    if KEY_COLUMN not in names or CURSOR_COLUMN not in names:
        return False
    return all(
        pa.types.is_integer(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_boolean(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
        for t in schema.types
    )


def drop_unchanged(batch: pa.Table, bronze: pa.Table) -> pa.Table:
    """`batch` without the rows equal, column by column, to the bronze row of the same id."""
    if batch.num_rows == 0 or bronze.num_rows == 0:
        return batch
    numbered = batch.append_column(_ROW, pa.array(np.arange(batch.num_rows), pa.int64()))
    theirs = bronze.rename_columns([_BRONZE + name for name in bronze.column_names])
    pairs = numbered.join(theirs, keys=KEY_COLUMN, right_keys=_BRONZE + KEY_COLUMN, join_type="inner")
    if pairs.num_rows == 0:
        return batch
    same = None
    for name in batch.column_names:
        if name == KEY_COLUMN:
            continue
        ours, landed = pairs[name], pairs[_BRONZE + name]
        if pa.types.is_string(ours.type) or pa.types.is_large_string(ours.type):
            ours = pc.if_else(pc.equal(ours, ""), pa.scalar(None, ours.type), ours)  # as dlt's COPY lands it
        equal = pc.or_kleene(
            pc.fill_null(pc.equal(ours, landed), False), pc.and_(pc.is_null(ours), pc.is_null(landed))
        )
        same = equal if same is None else pc.and_(same, equal)
    unchanged = pairs.filter(same)[_ROW] if same is not None else pairs[_ROW]
    if len(unchanged) == 0:
        return batch
    return batch.filter(pc.invert(pc.is_in(numbered[_ROW], value_set=unchanged.combine_chunks())))


def bronze_versions(
    warehouse_url: str, dataset: str, table: str, schema: pa.Schema, low: dt.datetime, high: dt.datetime
) -> pa.Table | None:
    """Bronze's rows of `table` with `low <= updated_at <= high`, as Arrow of `schema` (every field
    nullable); None when bronze lacks the table or one of the columns (nothing to compare with)."""
    wanted = pa.schema([field.with_nullable(True) for field in schema])
    naming = NamingConvention()
    columns = ", ".join(f'"{naming.normalize_identifier(name)}"' for name in schema.names)
    cursor = f'"{naming.normalize_identifier(CURSOR_COLUMN)}"'
    if warehouse_kind(warehouse_url) == "postgres":
        select = (
            f'select {columns} from "{dataset}"."{naming.normalize_table_identifier(table)}" '
            f"where {cursor} between '{low.isoformat()}'::timestamptz and '{high.isoformat()}'::timestamptz"
        )
        try:
            return _concat(copy_arrow_tables(warehouse_url, select, wanted, chunk_rows=1 << 62), wanted)
        except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn):
            return None
        except pa.ArrowInvalid:  # bronze keeps a column in another type (e.g. a naive timestamp as UTC)
            return None
    return _bigquery_versions(warehouse_url, dataset, table, columns, cursor, wanted, low, high)


def _concat(tables: Iterator[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([*tables, schema.empty_table()])


def _bigquery_versions(
    warehouse_url: str,
    dataset: str,
    table: str,
    columns: str,
    cursor: str,
    schema: pa.Schema,
    low: dt.datetime,
    high: dt.datetime,
) -> pa.Table | None:
    from google.api_core.exceptions import BadRequest, NotFound
    from google.cloud import bigquery

    target = BigQueryTarget.from_url(warehouse_url)
    client = target.client()
    try:
        if not target.table_exists(client, dataset, table):
            return None
        sql = (
            f"select {columns.replace(chr(34), '`')} from {target.quoted(dataset, table)} "
            f"where {cursor.replace(chr(34), '`')} between @low and @high"
        )
        params = [
            bigquery.ScalarQueryParameter("low", "TIMESTAMP", low),
            bigquery.ScalarQueryParameter("high", "TIMESTAMP", high),
        ]
        try:
            rows = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params)).result()
        except (BadRequest, NotFound):  # a column bronze does not have yet
            return None
        landed = rows.to_arrow(create_bqstorage_client=False)
    finally:
        client.close()
    try:
        return pa.Table.from_arrays(
            [landed[name].cast(field.type) for name, field in zip(landed.column_names, schema, strict=True)],
            schema=schema,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a type bronze keeps differently
        return None


def skip_unchanged(warehouse_url: str, dataset: str, table: str, skipped: dict[str, int]) -> Any:
    """A dlt map step: drops the re-read rows equal to bronze; counts them in `skipped[table]`."""

    def keep_changed(batch: pa.Table) -> pa.Table | None:
        if batch.num_rows == 0:
            return None  # see the end
        if not comparable(batch.schema):
            return batch
        span = pc.min_max(batch[CURSOR_COLUMN])
        low, high = span["min"].as_py(), span["max"].as_py()
        if low is None:
            return batch
        bronze = bronze_versions(warehouse_url, dataset, table, batch.schema, low, high)
        if bronze is None:
            return batch
        kept = drop_unchanged(batch, bronze)
        skipped[table] = skipped.get(table, 0) + batch.num_rows - kept.num_rows
        # nothing left: drop the item instead of handing on an empty table. dlt runs its incremental step
        # after this one, and (1.31) an empty table there moves a lagged cursor's last value without marking
        # data as seen, so the next table failed an assertion and the whole load stopped
        return kept if kept.num_rows else None

    return keep_changed

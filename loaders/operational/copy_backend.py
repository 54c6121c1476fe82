"""A dlt `sql_database` table loader that reads PostgreSQL tables with COPY instead of row by row.

Why: dlt's pyarrow backend fetches rows through psycopg2, which makes a Python object of every value, then
builds Arrow arrays from those objects: reading `order_items` alone took ~3x the whole raw COPY pipe. This
loader runs the same SELECT that dlt builds (the same columns, and the same incremental WHERE: cursor,
`lag`, range ends) as `COPY (select ...) TO STDOUT (FORMAT csv)` and lets pyarrow's multi-threaded CSV
reader parse the stream into Arrow tables of exactly the types the pyarrow backend would have produced
(computed by dlt from the same reflected column hints), so bronze keeps the same columns and types.

Everything else stays dlt's: reflection, column hints, the incremental cursor and its state, dedup and
filtering of Arrow tables. It plugs in through sql_database's `table_loader_class`. A single COPY statement
reads one snapshot of its table. Columns whose text form pyarrow cannot read as dlt would type them (json,
binary, time, floating point, types dlt cannot reflect) or a source that is not PostgreSQL fall back to
dlt's own pyarrow path for that table (`PostgresCopyTableLoader.copy_schema` says which).

CSV details that matter for equality: COPY writes NULL as an unquoted empty field and an empty string as
`""` (read with `quoted_strings_can_be_null=False` and `""` as the only null spelling, so the text "NULL"
or "NA" stays text); booleans as t/f; timestamptz in the session time zone, set to UTC for the COPY
(`2025-01-01 10:00:00.123456+00`, which pyarrow reads as an instant); dates and timestamps in ISO style.
A query with no text column (numbers, booleans, dates and timestamps only: order_items) is read in COPY's
text format instead, which PostgreSQL writes ~20 % faster: tab-separated, NULL as `\\N`, and no value of
those types can hold a tab, a line break or a backslash, so no escaping or quoting is involved.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any, ClassVar

import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
from dlt.common import logger
from dlt.common.configuration.container import Container
from dlt.common.destination import DestinationCapabilitiesContext
from dlt.common.libs.pyarrow import get_py_arrow_datatype
from dlt.sources.sql_database.helpers import TableLoader

from loaders.dlt_fast_paths import text_value_field

# dlt data types whose PostgreSQL text form pyarrow's CSV reader parses to the value dlt's pyarrow backend
# would build from the psycopg2 object (checked by tests/python/test_operational_loader.py)
COPY_DATA_TYPES = frozenset(("text", "bigint", "decimal", "bool", "date", "timestamp"))
READ_BLOCK_BYTES = 8 << 20
PIPE_BUFFER_BYTES = 1 << 20


class PostgresCopyTableLoader(TableLoader):
    """dlt's TableLoader (pyarrow backend) with the rows read by `COPY ... TO STDOUT (FORMAT csv)`.

    `reads` records, per table name, how the table was last read in this process: "copy", "copy, values as
    text" (`text_tables`) or "rows" (dlt's fallback), so a run can report it (the processing log does).
    """

    reads: ClassVar[dict[str, str]] = {}
    # tables whose values are handed on as PostgreSQL's own text (`copy_arrow_tables`' text_columns): set
    # per run on a subclass (`with_text_values`), for the tables a PostgreSQL load appends as they are
    text_tables: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def with_text_values(cls, tables: Collection[str]) -> type[PostgresCopyTableLoader]:
        """This loader, reading `tables` with their values kept as COPY's text (see `copy_arrow_tables`)."""
        return type(cls.__name__, (cls,), {"text_tables": frozenset(tables)})

    def load_rows(self, backend_kwargs: dict[str, Any] | None = None) -> Iterator[Any]:
        backend_kwargs = dict(backend_kwargs or {})
        query = self.make_query()
        names = [column.name for column in query.selected_columns]
        schema = self.copy_schema(names, backend_kwargs.get("tz", "UTC"))
        if schema is None or self.engine.dialect.name != "postgresql" or self.backend != "pyarrow":
            logger.info(f"{self.table.name}: read row by row (a column or the source cannot be COPY-read)")
            self.reads[self.table.name] = "rows"
            yield from self._load_rows(query, backend_kwargs)  # dlt's own row path
            return
        text_columns: tuple[str, ...] = ()
        if self.table.name in self.text_tables:
            # dlt's incremental step reads the cursor (and dedups on the primary key): both stay typed
            typed = {self.incremental.cursor_path} if self.incremental else set()
            typed |= {column.name for column in self.table.primary_key}
            text_columns = tuple(name for name in names if name not in typed)
        self.reads[self.table.name] = "copy, values as text" if text_columns else "copy"
        yield from copy_arrow_tables(
            self.get_connection_url(),
            self.compile_query(query),
            schema,
            self.chunk_size,
            text_columns=text_columns,
        )

    def copy_schema(self, names: Sequence[str], tz: str) -> pa.Schema | None:
        """The Arrow schema dlt's pyarrow backend gives these columns, or None if one cannot be read
        from COPY's CSV text as the same value."""
        caps = (
            Container().get(DestinationCapabilitiesContext)
            or DestinationCapabilitiesContext.generic_capabilities()
        )
        fields = []
        for name in names:
            column = self.columns.get(name) or {}
            if column.get("data_type") not in COPY_DATA_TYPES:
                return None
            fields.append(
                pa.field(name, get_py_arrow_datatype(column, caps, tz), nullable=column.get("nullable", True))
            )
        return pa.schema(fields)


def copy_arrow_tables(
    url: str,
    select_sql: str,
    schema: pa.Schema,
    chunk_rows: int,
    copy_format: str | None = None,
    text_columns: Collection[str] = (),
) -> Iterator[pa.Table]:
    """Arrow tables of at most about `chunk_rows` rows from one `COPY (select_sql) TO STDOUT` (one snapshot).

    psycopg2 writes the COPY stream into an OS pipe from a thread; pyarrow parses the other end block by
    block. A failed COPY raises here (after the rows read so far, which dlt then discards with the run).
    `copy_format` is COPY's "text" or "csv"; by default text when no column is text (see the module doc).

    `text_columns` are not converted: each value stays the text PostgreSQL wrote, which its COPY reads back
    as the same value, and the field says which type it holds (`dlt_fast_paths.text_value_field`). For a
    load that writes the values straight into a CSV file for COPY (a first load on PostgreSQL), parsing
    numbers, dates and timestamps only to format them again cost ~1 s of CPU per 1M order lines (~0.4 s to
    parse, ~0.6 s to write).
    """
    if copy_format is None:
        copy_format = copy_format_for(schema)
    read_schema = pa.schema(
        [text_value_field(field) if field.name in text_columns else field for field in schema]
    )
    if copy_format not in ("text", "csv"):
        raise ValueError(f"copy_format must be 'text' or 'csv', not {copy_format!r}")
    conn = psycopg2.connect(url)
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []
    reader: io.BufferedReader | None = None

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=PIPE_BUFFER_BYTES) as sink, conn.cursor() as cur:
                cur.execute("set local timezone = 'UTC'; set local datestyle = 'ISO, YMD'")
                cur.copy_expert(
                    f"copy ({select_sql}) to stdout (format {copy_format})", sink, size=PIPE_BUFFER_BYTES
                )
        except BaseException as exc:  # re-raised by the reading side below
            failure.append(exc)

    try:
        conn.set_client_encoding("UTF8")
        producer = threading.Thread(target=produce, name="copy-to-arrow", daemon=True)
        producer.start()
        try:
            reader = io.BufferedReader(io.FileIO(read_fd, "rb"), buffer_size=PIPE_BUFFER_BYTES)
            if reader.peek(1):  # pyarrow rejects an empty stream; no rows means no tables, as in dlt
                yield from _parse(reader, read_schema, chunk_rows, copy_format)
        finally:
            if reader is None:
                os.close(read_fd)
            else:
                reader.close()  # a producer still writing (the consumer stopped early) gets EPIPE
            if producer.is_alive():
                conn.cancel()
            producer.join()
        if failure:
            raise failure[0]
    finally:
        conn.rollback()
        conn.close()


def copy_format_for(schema: pa.Schema) -> str:
    """COPY's text format when no column is text (cheaper for the server, nothing to escape), else csv."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    return "csv" if any(is_text(field.type) for field in schema for is_text in text) else "text"


def _parse(
    stream: io.BufferedReader, schema: pa.Schema, chunk_rows: int, copy_format: str
) -> Iterator[pa.Table]:
    if copy_format == "text":  # no text column: nothing is quoted or escaped, NULL is \N
        parse_options = pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False)
        null_values = ["\\N"]
    else:
        parse_options = pacsv.ParseOptions(newlines_in_values=True)
        null_values = [""]
    csv = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=schema.names, block_size=READ_BLOCK_BYTES),
        parse_options=parse_options,
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            null_values=null_values,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in csv:
        batches.append(batch)
        rows += batch.num_rows
        if rows >= chunk_rows:
            yield _table(batches, schema)
            batches, rows = [], 0
    if rows:
        yield _table(batches, schema)


def _table(batches: list[pa.RecordBatch], parsed: pa.Schema) -> pa.Table:
    """The batches as one table with the schema's nullability (the CSV reader marks every field nullable)."""
    table = pa.Table.from_batches(batches)
    return pa.Table.from_arrays(table.columns, schema=parsed)

"""dlt's slow steps, made fast for the loaders' bulk paths (same data, tested).

Profiling the operational and GCS loads showed normalize (Arrow -> CSV for COPY) dominated by two steps
that dlt runs value by value, and extract (Arrow -> Parquet) by Parquet's dictionary encoding;
`dlt_fast_paths()` swaps them for faster equivalents while a load runs. Load files are also written
uncompressed (loaders/destinations.py sets that for every pipeline). On PostgreSQL both bulk loaders hand
dlt finished CSV load files (`csv_load_files`: each Arrow table written once, at extract, so dlt neither
writes it to Parquet nor rewrites it at normalize), one per table of N rows, so a big table becomes
several load jobs that dlt's load workers COPY in parallel (one COPY keeps one server core busy). What
dlt still writes itself can be rotated every N rows too (`load_file_rotation`, set for one run with
`environment_defaults`): the operational loader does, for `source_deletions` and its Parquet path.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.utils import DLT_ID_LENGTH_BYTES
from dlt.common.schema.utils import dlt_id_column, dlt_load_id_column


@contextlib.contextmanager
def dlt_fast_paths() -> Iterator[None]:
    """While active, dlt's slowest steps here run vectorized or lighter, with the same results.

    - pyarrow's CSV writer formats a tz-aware timestamp with a time-zone lookup per value (~6 s per 1M
      values here, the largest cost of normalizing); dlt's Arrow -> CSV writer gets UTC timestamp columns
      as text instead (a naive cast plus "Z", read by COPY into the same timestamptz; a column of
      whole seconds without the fraction, which COPY parses faster).
    - dlt makes each row's `_dlt_id` with one base64 call per row; `dlt_ids` makes the same 14-character
      ids from the same kind of random bytes with numpy.
    - dlt's Parquet files (every Arrow item goes through one at extract) are written with pyarrow's
      default dictionary encoding, which made writing them ~3x slower than the data itself needs (1M
      order lines: 0.8 s vs 0.3 s) for a file of about the same size once snappy-compressed; they are
      written without it (`parquet_writer_options`). A storage encoding only: the values read back equal.
    Restored on exit, so other pipelines of the process see dlt unchanged. dlt's normalize workers are
    forked processes and inherit the swap; a spawned worker would run dlt's own steps (same output).
    """
    from dlt.common.data_writers.writers import ArrowToCsvWriter, ParquetDataWriter
    from dlt.normalize.items_normalizers import arrow as arrow_normalizer

    original_write, original_ids = ArrowToCsvWriter.write_data, arrow_normalizer.generate_dlt_ids
    original_parquet_writer = ParquetDataWriter._create_writer

    def write_data(self: Any, items: Sequence[Any]) -> None:
        original_write(self, [utc_timestamps_as_text(item) for item in items])

    def create_parquet_writer(self: Any, schema: pa.Schema) -> Any:
        import pyarrow.parquet as pq

        return pq.ParquetWriter(self._f, schema, **parquet_writer_options(self.parquet_format))

    ArrowToCsvWriter.write_data = write_data  # type: ignore[method-assign]
    arrow_normalizer.generate_dlt_ids = dlt_ids  # pa.array() of an Arrow array returns it as it is
    ParquetDataWriter._create_writer = create_parquet_writer  # type: ignore[method-assign]
    try:
        yield
    finally:
        ArrowToCsvWriter.write_data = original_write  # type: ignore[method-assign]
        arrow_normalizer.generate_dlt_ids = original_ids
        ParquetDataWriter._create_writer = original_parquet_writer  # type: ignore[method-assign]


def load_file_rotation(warehouse: str, max_rows: int) -> dict[str, str]:
    """dlt's setting (by the environment variable it reads) that rotates load files every `max_rows` rows,
    on PostgreSQL only: there each file is one COPY job, and dlt's load workers run them in parallel.
    BigQuery keeps one Parquet load job per table (its loads are not bound by one server core)."""
    if warehouse != "postgres":
        return {}
    return {"DATA_WRITER__FILE_MAX_ITEMS": str(max_rows)}


@contextlib.contextmanager
def environment_defaults(defaults: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables that are not set yet, for the duration of the block only.

    dlt reads its configuration from the environment, so a value set there (or a more specific dlt key,
    e.g. `NORMALIZE__DATA_WRITER__FILE_MAX_ITEMS`) still wins, and other pipelines of the process (the
    other loaders) do not inherit this loader's settings.
    """
    added = [name for name in defaults if name not in os.environ]
    for name in added:
        os.environ[name] = defaults[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def parquet_writer_options(parquet_format: Any) -> dict[str, Any]:
    """pyarrow ParquetWriter options as dlt's `ParquetDataWriter._create_writer` passes them from its
    format configuration, without dictionary encoding."""
    options = {
        "flavor": parquet_format.flavor,
        "version": parquet_format.version,
        "compression": parquet_format.compression,
        "data_page_size": parquet_format.data_page_size,
        "coerce_timestamps": parquet_format.coerce_timestamps,
        "allow_truncated_timestamps": parquet_format.allow_truncated_timestamps,
        "use_compliant_nested_type": parquet_format.use_compliant_nested_type,
        "write_page_index": parquet_format.write_page_index,
        "use_dictionary": False,
    }
    if int(pa.__version__.split(".")[0]) >= 21:
        options["use_content_defined_chunking"] = parquet_format.use_content_defined_chunking
    return options


def dlt_ids(count: int, random_bytes: bytes | None = None) -> pa.Array:
    """`count` row ids as dlt makes them: base64 of DLT_ID_LENGTH_BYTES random bytes, unpadded.

    Each id's bytes are zero-padded to a whole number of 3-byte groups, so one base64 call over all of
    them encodes every id on its own, aligned; the characters that only encode the padding are cut off.
    """
    length = DLT_ID_LENGTH_BYTES
    raw = secrets.token_bytes(count * length) if random_bytes is None else random_bytes
    padded_length = -(-length // 3) * 3
    padded = np.zeros((count, padded_length), np.uint8)
    padded[:, :length] = np.frombuffer(raw, np.uint8).reshape(count, length)
    encoded = np.frombuffer(base64.b64encode(padded.tobytes()), np.uint8)
    width = -(-length * 4 // 3)
    chars = np.ascontiguousarray(encoded.reshape(count, padded_length // 3 * 4)[:, :width])
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(chars)])


def utc_timestamps_as_text(item: Any) -> Any:
    """An Arrow table or batch with its UTC timestamp columns as ISO text of the same instants.

    The text pyarrow's CSV writer would write, except that a column of whole seconds has no fraction."""
    if not isinstance(item, (pa.Table, pa.RecordBatch)):
        return item
    for index, field in enumerate(item.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz == "UTC":
            column = item.column(index)
            if _one_value(column):  # e.g. `_loaded_at`: format the value once
                text = pa.repeat(_as_text(column.slice(0, 1))[0], len(column))
            else:
                text = _as_text(column)
            item = item.set_column(index, pa.field(field.name, pa.string(), field.nullable), text)
    return item


def _as_text(column: Any) -> Any:
    """UTC timestamps as ISO text with a "Z"; without a fraction when every value is a whole second.

    A column of whole seconds is written as PostgreSQL writes it, without ".000000": the same instants,
    and COPY parses a timestamp ~25 % faster without a fraction (1M values: 0.77 s vs 1.04 s here). One
    value with a fraction keeps every value's fraction, so the column is either trimmed or unchanged.
    """
    naive = column.cast(pa.timestamp(column.type.unit))
    if column.type.unit != "s":
        seconds = naive.cast(pa.timestamp("s"), safe=False)
        if pc.all(pc.equal(seconds.cast(naive.type), naive)).as_py() is not False:  # NULLs are skipped
            naive = seconds
    return pc.binary_join_element_wise(naive.cast(pa.string()), pa.scalar("Z"), "")


def _one_value(column: Any) -> bool:
    """Whether a column holds one value in every row (no NULL), as a run's stamp does."""
    if len(column) < 2 or column.null_count:
        return False
    bounds = pc.min_max(column)
    return bool(bounds["min"] == bounds["max"])


# field metadata of a column whose values are kept as PostgreSQL's text: the Arrow type they have (a
# serialized one-field schema)
TEXT_VALUE_TYPE = b"loaders.text_value_type"


def text_value_field(field: pa.Field) -> pa.Field:
    """`field` as a text column of its values as PostgreSQL writes them, which COPY reads back as the same
    values (the operational loader's first loads: `copy_backend.copy_arrow_tables(text_columns=...)`).
    The field keeps its type in its metadata: `text_value_type` gives it back, and `csv_load_files` hands
    dlt the typed schema, so bronze's columns are the typed table's."""
    if pa.types.is_string(field.type):
        return field  # text is text either way
    typed = pa.schema([field.remove_metadata()]).serialize().to_pybytes()
    return pa.field(field.name, pa.string(), field.nullable, metadata={TEXT_VALUE_TYPE: typed})


def text_value_type(field: pa.Field) -> pa.Field | None:
    """The typed field a `text_value_field` stands for, else None."""
    if not field.metadata or TEXT_VALUE_TYPE not in field.metadata:
        return None
    return pa.ipc.read_schema(pa.py_buffer(field.metadata[TEXT_VALUE_TYPE])).field(0)


def csv_quoting(schema: pa.Schema) -> str:
    """dlt's CSV quoting for an Arrow table's load file: none when no column holds text.

    pyarrow quotes every string value by default, and that is what dlt's load files do; but a table of
    numbers, booleans, dates and timestamps (written as ISO text, see `utc_timestamps_as_text`, or kept as
    PostgreSQL's text of such values, see `_holds_typed_values`) plus dlt's two id columns (digits, dots and
    base64 letters) has no value that holds a delimiter, a quote or a line break, and COPY parses unquoted
    fields faster (~7 % of an `order_items` COPY here). A NULL is an empty field either way, and no such
    column can hold an empty string.
    """
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    return (
        "quote_needed"
        if any(is_text(f.type) and not _holds_typed_values(f) for f in schema for is_text in text)
        else "quote_none"
    )


def _holds_typed_values(field: pa.Field) -> bool:
    """A text column that holds PostgreSQL's text of numbers, dates, timestamps or booleans
    (`text_value_field`): never a delimiter, a quote or a line break."""
    typed = text_value_type(field)
    return typed is not None and not pa.types.is_string(typed.type)


def _typed_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with each text column of typed values (`_holds_typed_values`) given back its type: what dlt
    sees of the table, so its columns are those of the typed table (the values reach bronze through COPY,
    which reads the text as those types)."""
    fields = []
    for field in schema:
        typed = text_value_type(field)
        fields.append(field if typed is None else typed.with_nullable(field.nullable))
    return pa.schema(fields, metadata=schema.metadata)


# the two columns dlt's normalize adds to Arrow items, as its schema declares them; `csv_load_files` adds
# them itself and declares them so (same bronze columns as through normalize)
DLT_COLUMNS = (dlt_load_id_column(), dlt_id_column())


@contextlib.contextmanager
def csv_load_folder(pipeline: Any) -> Iterator[Path]:
    """The folder `csv_load_files` writes to, in the pipeline's working folder, emptied before and after.

    dlt hard-links (or copies) each file into its load package at extract, so the folder is never needed
    after the run, whatever happened in it: a run killed before its package was complete left files that
    no package refers to, and a finished package holds its own links.
    """
    folder = Path(pipeline.working_dir) / "csv-load-files"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def csv_load_files(folder: Path, *, in_thread_pool: bool = True) -> Any:
    """A resource step (PostgreSQL only) that hands dlt each Arrow table as a finished CSV load file.

    Why: dlt writes every Arrow item to Parquet at extract, then reads it back at normalize to add
    `_dlt_load_id` and `_dlt_id` and write the CSV that COPY loads: two passes over the data that a bulk
    load need not pay. This step adds the same two columns (the load id of the package being extracted,
    ids as `dlt_ids` makes them) and writes the CSV with dlt's own Arrow -> CSV writer and default CSV
    settings (the ones the PostgreSQL load job reads; the loaders do not change them), then imports the
    file into the package, as `dlt.mark.with_file_import` does: normalize links it unchanged and the load
    job COPYs it as it would have COPYed normalize's file. The Arrow table's schema still sets the
    table's columns, as for any Arrow item, and the two dlt columns get dlt's own hints (`DLT_COLUMNS`),
    so bronze and the stored dlt schema are the same as through normalize. One file per table yielded,
    so a big table is several load jobs, as with `load_file_rotation`. `folder` (`csv_load_folder`)
    holds the files until dlt has linked them into the package. Column names must already be dlt's
    snake_case names (both loaders' are): normalize would rename them, this step does not.

    Added with `resource.add_step`, it runs after dlt's incremental step, which must see (and filter) the
    rows themselves: a plain `add_map` step is placed before it. With `in_thread_pool`, the CSV is written
    by a callable the step returns, which dlt runs in its extract thread pool, next to the reading of the
    following rows (up to the pool's size of tables in memory at once); otherwise in place, one at a time.
    """
    import dlt
    from dlt.common.data_writers.writers import ArrowToCsvWriter
    from dlt.common.metrics import DataWriterMetrics
    from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCaseNaming
    from dlt.extract.extractors import ImportFileMeta
    from dlt.extract.items import DataItemWithMeta
    from dlt.extract.items_transform import MapItem

    naming = SnakeCaseNaming()

    class AfterIncremental(MapItem):  # type: ignore[misc]
        placement_affinity = 1.5  # dlt's incremental is 1, add_limit 1.1

    def to_load_file(table: pa.Table) -> Any:
        if table.num_rows == 0:
            return None
        load_id = dlt.current.load_package_state()["load_id"]
        unnormalized = [name for name in table.schema.names if naming.normalize_identifier(name) != name]
        if unnormalized:
            raise ValueError(f"csv_load_files needs dlt's column names; these are not: {unnormalized}")

        def write() -> Any:
            stamped = table.append_column(
                pa.field("_dlt_load_id", pa.string(), nullable=False),
                pa.repeat(pa.scalar(load_id), table.num_rows),
            ).append_column(pa.field("_dlt_id", pa.string(), nullable=False), dlt_ids(table.num_rows))
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{load_id}.{secrets.token_hex(8)}.csv"
            with path.open("wb") as sink:
                writer = ArrowToCsvWriter(sink, quoting=csv_quoting(table.schema))
                writer.write_header({name: {"name": name} for name in stamped.schema.names})
                writer.write_data([stamped])
                writer.write_footer()
                writer.close()
            # what dlt.mark.with_file_import builds, with both the Arrow schema (the table's columns) and
            # the two dlt columns' hints, which the Arrow schema cannot carry
            metrics = DataWriterMetrics(str(path), stamped.num_rows, 0, 0, 0)
            meta = ImportFileMeta(str(path), metrics, "csv", dlt.mark.make_hints(columns=list(DLT_COLUMNS)))
            return DataItemWithMeta(meta, _typed_schema(stamped.schema).empty_table())

        # a callable is run by dlt in its extract thread pool; up to its size of tables are then in flight
        return write if in_thread_pool else write()

    return AfterIncremental(to_load_file)

"""Three of dlt's slow steps, made fast for the loaders' bulk paths (same data, tested).

Profiling the operational and GCS loads showed normalize (Arrow -> CSV for COPY) dominated by two steps
that dlt runs value by value, and extract (Arrow -> Parquet) by Parquet's dictionary encoding;
`dlt_fast_paths()` swaps them for faster equivalents while a load runs. Load files are also written
uncompressed (loaders/destinations.py sets that for every pipeline). On PostgreSQL both bulk loaders rotate
dlt's load files every N rows, set for their own run with `environment_defaults`, so a big table becomes
several load jobs that dlt's load workers COPY in parallel (one COPY keeps one server core busy).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.utils import DLT_ID_LENGTH_BYTES


@contextlib.contextmanager
def dlt_fast_paths() -> Iterator[None]:
    """While active, dlt's slowest steps here run vectorized or lighter, with the same results.

    - pyarrow's CSV writer formats a tz-aware timestamp with a time-zone lookup per value (~6 s per 1M
      values here, the largest cost of normalizing); dlt's Arrow -> CSV writer gets UTC timestamp columns
      as text instead (a naive cast plus "Z": the same text, read by COPY into the same timestamptz).
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


_BASE64_ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8
)


def dlt_ids(count: int, random_bytes: bytes | None = None) -> pa.Array:
    """`count` row ids as dlt makes them: base64 of DLT_ID_LENGTH_BYTES random bytes, unpadded."""
    length = DLT_ID_LENGTH_BYTES
    raw = secrets.token_bytes(count * length) if random_bytes is None else random_bytes
    groups = -(-length // 3)
    padded = np.zeros((count, groups * 3), np.uint32)
    padded[:, :length] = np.frombuffer(raw, np.uint8).reshape(count, length)
    triples = padded.reshape(count, groups, 3)
    bits = (triples[..., 0] << 16) | (triples[..., 1] << 8) | triples[..., 2]
    sextets = np.stack([bits >> 18, (bits >> 12) & 63, (bits >> 6) & 63, bits & 63], axis=-1)
    width = -(-length * 4 // 3)
    chars = np.ascontiguousarray(_BASE64_ALPHABET[sextets.reshape(count, groups * 4)[:, :width]])
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(chars)])


def utc_timestamps_as_text(item: Any) -> Any:
    """An Arrow table or batch with its UTC timestamp columns as the text pyarrow's CSV writer would write."""
    if not isinstance(item, (pa.Table, pa.RecordBatch)):
        return item
    for index, field in enumerate(item.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz == "UTC":
            naive = item.column(index).cast(pa.timestamp(field.type.unit))
            text = pc.binary_join_element_wise(naive.cast(pa.string()), pa.scalar("Z"), "")
            item = item.set_column(index, pa.field(field.name, pa.string(), field.nullable), text)
    return item

"""GCS payload files -> warehouse bronze (`bronze_gcs`), with dlt. Exactly once, in bounded memory.

Layout (the bucket URL is configuration: gs://bucket in production, a folder for the embedded demo):

    datalake/payload_data/pending/<payload_type>/...   files waiting to be loaded
    datalake/payload_data/done/<payload_type>/...      loaded (same relative path), moved after the commit
    datalake/payload_data/failed/<payload_type>/...    quarantined: not loadable as a whole (reason in the log)
    datalake/payload_data/_leases/...                  leases of the runs in progress

Why it is built this way:
- **Stage, then load.** Each file is streamed once (gzip or not; array, object or NDJSON), every record is
  validated against its payload type (configuration, not code: `payload_types.py`) and written to a local
  Arrow file: good records with their typed columns and raw JSON, bad ones to a rejects file with the
  reason. Only files that parse completely reach dlt, so a file that is not valid JSON goes to failed/
  whole and never half-loads. Records are validated in bulk, one DuckDB query per chunk of 50,000
  (fast_path.py); only those it cannot prove valid go record by record. Memory is one chunk plus one
  batch of rows, whatever the file size.
- **Arrow + COPY.** The staged Arrow batches go to dlt with `loader_file_format="csv"`: PostgreSQL lands them
  with COPY; there is no row-by-row insert anywhere. On PostgreSQL they are grouped into tables of about
  `LOAD_FILE_MAX_ROWS` rows (at most `LOAD_FILE_MAX_BYTES`), each handed to dlt as a finished CSV load file
  (dlt_fast_paths.csv_load_files: no Parquet round trip through normalize), so a big batch's table is
  several load jobs that dlt's load workers COPY in parallel (one COPY keeps one server core busy). Each
  job is its own transaction: a load killed between two jobs leaves part of a table, like a crash between
  two tables always could, and the next run repairs it as below (those keys are in
  bronze, so the batch merges). On BigQuery they go as Parquet files through load jobs, one per table
  (loaders/destinations.py), JSON-typed payload columns as STRING holding the JSON text.
- **Batches overlap.** Files are loaded in batches (`max_batch_bytes`, 256 MiB by default); a batch loads in
  a background thread while the run stages the next files, since staging is mostly client CPU and loading
  mostly server CPU. Batches still commit one at a time and in order.
- **Exactly once.** Bronze tables are merged on the payload type's primary key (a corrected file supersedes
  the rows of the old one; within one load the newest upload, then the last record of a file, wins:
  `_record_order` is dlt's dedup_sort); a batch whose keys are all new is appended instead, which lands
  the same rows (new_keys_only, which finds bronze's rows through an index on the key that the loader
  builds once bronze exists). Bronze has no UNIQUE index on `_dlt_id`: nothing ever replays a committed
  COPY here, since a crashed run's dlt packages live in its own folder and are dropped with it. After the
  data commits, the file's content hash is registered in `loaded_files` (a second, tiny load), and only
  then is the file moved to done/. A crash anywhere in
  between is repaired by the next run: before the registry commit the file is simply loaded again (the
  merge makes that idempotent); after it, the file is recognised by its content hash, skipped and moved.
  The same content uploaded under another name is skipped the same way.
- **Leases in the bucket.** Each file is leased by the run processing it (see leases.py), so concurrent
  runs share the work instead of repeating it, and the dlt load itself is serialised by one more lease
  (dlt's merge uses a shared staging dataset). Leases expire, so a crashed run never blocks anything.
- **Everything is logged** in the processing log (`ops.processing_log`, see loaders/processing_log.py):
  one row per file per run and one per run, with processed = loaded + rejected.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc

from loaders.destinations import (
    BigQueryTarget,
    column_hints_for,
    dlt_destination,
    pipeline_run_kwargs,
    pipeline_warehouse_kind,
    warehouse_kind,
)
from loaders.dlt_fast_paths import csv_load_files, csv_load_folder, dlt_fast_paths
from loaders.gcs.bucket import Bucket, BucketError, ObjectInfo, open_bucket
from loaders.gcs.fast_path import bulk_validator
from loaders.gcs.leases import DEFAULT_LEASE_SECONDS, Holder, Lease, LeaseManager
from loaders.gcs.payload_types import (
    DriftFailure,
    InvalidRecord,
    PayloadType,
    load_payload_types,
)
from loaders.gcs.reader import FileDigest, MalformedFile, iter_records, parse_record
from loaders.postgres import relation_exists
from loaders.processing_log import LogEntry, ProcessingLog, connect, new_run_id

BRONZE_SCHEMA_ENV = "BRONZE_GCS_SCHEMA"
DEFAULT_BRONZE_SCHEMA = "bronze_gcs"
BUCKET_URL_ENV = "GCS_BUCKET_URL"
LAYOUT_ROOT = "datalake/payload_data"
REJECTS_TABLE = "rejects"
FILES_TABLE = "loaded_files"
LOAD_LEASE = f"{LAYOUT_ROOT}/_leases/_bronze_load.lease"
BATCH_ROWS = 20_000
BATCH_RAW_BYTES = 32 << 20
FAST_CHUNK_ROWS = 50_000
FAST_CHUNK_BYTES = 32 << 20
MAX_DRIFT_KEYS_LOGGED = 50
# rows per load file on PostgreSQL (staged BATCH_ROWS batches grouped, see grouped_tables), so 256 MiB of
# payload (~650k records) is ~7 COPY jobs run in parallel; a group also ends at LOAD_FILE_MAX_BYTES of Arrow
LOAD_FILE_MAX_ROWS = 100_000
LOAD_FILE_MAX_BYTES = 64 << 20

Progress = Callable[[str], None]

# Our json columns are Arrow strings with a json hint, on purpose: dlt warns about that on every load.
logging.getLogger("dlt").addFilter(lambda r: "several column hints were different" not in r.getMessage())


# -- configuration -------------------------------------------------------------------------------


def bronze_schema_from_env() -> str:
    return os.environ.get(BRONZE_SCHEMA_ENV, DEFAULT_BRONZE_SCHEMA)


def bucket_url_from_env(state_dir: Path | str) -> str:
    """GCS_BUCKET_URL, else the embedded demo's local bucket folder `<state_dir>/bucket` (created if
    missing: a configured folder that does not exist is an error, the demo's default is not)."""
    configured = os.environ.get(BUCKET_URL_ENV, "").strip()
    if configured:
        return configured
    folder = Path(state_dir) / "bucket"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def layout_key(area: str, payload_type: str, relative: str = "") -> str:
    """`datalake/payload_data/<area>/<payload_type>/<relative>`; area is pending, done or failed."""
    return f"{LAYOUT_ROOT}/{area}/{payload_type}/{relative}"


# -- results -------------------------------------------------------------------------------------


@dataclass
class FileOutcome:
    payload_type: str
    file_name: str  # relative to pending/<payload_type>/
    status: str  # completed, failed, skipped
    message: str = ""
    records_processed: int = 0
    records_loaded: int = 0
    records_rejected: int = 0


@dataclass
class GcsLoadResult:
    run_id: str
    bucket_url: str
    files: list[FileOutcome] = field(default_factory=list)
    load_ids: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def records_loaded(self) -> int:
        return sum(f.records_loaded for f in self.files)

    @property
    def records_rejected(self) -> int:
        return sum(f.records_rejected for f in self.files)

    def summary(self) -> str:
        return (
            f"{self.count('completed')} file(s) loaded, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed; {self.records_loaded:,} record(s) loaded, "
            f"{self.records_rejected:,} rejected (run {self.run_id})"
        )


# -- staging -------------------------------------------------------------------------------------


class FileFailed(Exception):
    """The file as a whole cannot be loaded: it goes to failed/ with this reason."""


@dataclass
class StagedFile:
    payload_type: PayloadType
    info: ObjectInfo
    relative: str
    url: str
    data_path: Path
    rejects_path: Path
    digest: FileDigest = field(default_factory=FileDigest)
    records_processed: int = 0
    records_loaded: int = 0
    records_rejected: int = 0
    drift: Counter[str] = field(default_factory=Counter)
    reject_reasons: Counter[str] = field(default_factory=Counter)
    validation: str = ""  # "bulk", or why the type is validated record by record (fast_path.py)
    lease: Lease | None = None
    entry: LogEntry | None = None

    @property
    def content_hash(self) -> str:
        return self.digest.sha256

    def details(self) -> dict[str, Any]:
        drift = dict(self.drift.most_common(MAX_DRIFT_KEYS_LOGGED))
        details: dict[str, Any] = {
            "source_file": self.url,
            "content_hash": self.content_hash,
            "generation": self.info.generation,
            "size_bytes": self.digest.stored_bytes,
            "compressed": self.digest.compressed,
            "format": self.digest.format,
            "new_fields": drift,
            "validation": self.validation,
        }
        if len(self.drift) > MAX_DRIFT_KEYS_LOGGED:
            details["new_fields_not_listed"] = len(self.drift) - MAX_DRIFT_KEYS_LOGGED
        if self.reject_reasons:
            details["reject_reasons"] = dict(self.reject_reasons.most_common(20))
        return details


def _data_schema(payload_type: PayloadType) -> pa.Schema:
    return pa.schema(
        [
            *(pa.field(c.name, c.arrow_type) for c in payload_type.columns),
            pa.field("_raw_json", pa.string()),
            pa.field("_record_number", pa.int64()),
        ]
    )


_REJECTS_SCHEMA = pa.schema(
    [
        pa.field("_record_number", pa.int64()),
        pa.field("_byte_offset", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("_raw_json", pa.string()),
    ]
)


class _BatchWriter:
    """Accumulates rows column-wise and writes Arrow record batches to a local IPC file."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.columns: list[list[Any]] = [[] for _ in schema]
        self.rows = 0
        self.raw_bytes = 0
        self._writer: Any = None

    def add(self, values: Sequence[Any], raw_bytes: int) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.rows += 1
        self.raw_bytes += raw_bytes
        if self.rows >= BATCH_ROWS or self.raw_bytes >= BATCH_RAW_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        batch = pa.record_batch(
            [pa.array(col, type=f.type) for col, f in zip(self.columns, self.schema, strict=True)],
            schema=self.schema,
        )
        self._write(pa.Table.from_batches([batch]))
        self.columns = [[] for _ in self.schema]
        self.rows = 0
        self.raw_bytes = 0

    def write_table(self, table: pa.Table) -> None:
        """Rows accepted in bulk (loaders/gcs/fast_path.py), already typed."""
        self.flush()
        self._write(table.cast(self.schema))

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pa.ipc.new_stream(
                str(self.path), self.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")
            )
        self._writer.write_table(table, max_chunksize=BATCH_ROWS)

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()


def stage_file(
    bucket: Bucket, info: ObjectInfo, payload_type: PayloadType, relative: str, work_dir: Path
) -> StagedFile:
    """Stream one file into local Arrow files (records / rejects). Raises FileFailed for a bad file."""
    stem = f"{payload_type.name}-{info.generation}-{abs(hash(info.key)):x}"
    staged = StagedFile(
        payload_type=payload_type,
        info=info,
        relative=relative,
        url=bucket.object_url(info.key),
        data_path=work_dir / f"{stem}.records.arrow",
        rejects_path=work_dir / f"{stem}.rejects.arrow",
    )
    processor = payload_type.processor()
    fast, staged.validation = bulk_validator(payload_type, processor)
    data = _BatchWriter(staged.data_path, _data_schema(payload_type))
    rejects = _BatchWriter(staged.rejects_path, _REJECTS_SCHEMA)

    def one_by_one(number: int, offset: int, raw: bytes, value: Any) -> None:
        text = raw.decode("utf-8")
        try:
            values, drift = processor.process(value)
        except InvalidRecord as exc:
            reason = str(exc)
            rejects.add((number, offset, reason, text), len(raw))
            staged.reject_reasons[_reason_kind(reason)] += 1
            staged.records_rejected += 1
            return
        for key in drift:
            staged.drift[key] += 1
        values.append(text)
        values.append(number)
        data.add(values, len(raw))
        staged.records_loaded += 1

    chunk: list[tuple[int, int, bytes]] = []

    def in_bulk() -> None:
        """The chunk's provably valid records at once; the others one by one, in file order."""
        if not chunk or fast is None:
            return
        result = fast.accept([raw for _, _, raw in chunk], [number for number, _, _ in chunk])
        if result.accepted.num_rows:
            data.write_table(result.accepted)
            staged.records_loaded += result.accepted.num_rows
            staged.drift.update(result.drift)
        for position in result.rest:
            number, offset, raw = chunk[position]
            one_by_one(number, offset, raw, parse_record(raw, number, offset))
        chunk.clear()

    try:
        with bucket.open(info) as stream:
            chunk_bytes = 0
            # the bulk path re-reads records in DuckDB: it needs them proven valid, not parsed in Python
            for number, offset, raw, value in iter_records(stream, staged.digest, parse_values=fast is None):
                if fast is None:
                    one_by_one(number, offset, raw, value)
                    continue
                chunk.append((number, offset, raw))
                chunk_bytes += len(raw)
                if len(chunk) >= FAST_CHUNK_ROWS or chunk_bytes >= FAST_CHUNK_BYTES:
                    in_bulk()
                    chunk_bytes = 0
            in_bulk()
    except MalformedFile as exc:
        raise FileFailed(f"not valid JSON: {exc}") from None
    except DriftFailure as exc:
        raise FileFailed(str(exc)) from None
    finally:
        data.close()
        rejects.close()
    staged.records_processed = staged.records_loaded + staged.records_rejected
    if staged.digest.format == "empty":
        raise FileFailed("the file is empty: no JSON value in it")
    return staged


def _reason_kind(reason: str) -> str:
    """Reject reasons grouped for the log (the full reason of each record is in the rejects table)."""
    return reason.split(":", 1)[0][:120]


# -- dlt -----------------------------------------------------------------------------------------


def _lineage_hints() -> dict[str, dict[str, Any]]:
    return {
        "_raw_json": {"data_type": "text", "nullable": False},
        "_record_number": {"data_type": "bigint", "nullable": False},
        "_source_file": {"data_type": "text", "nullable": False},
        "_source_generation": {"data_type": "bigint", "nullable": False},
        "_content_hash": {"data_type": "text", "nullable": False},
        "_run_id": {"data_type": "text", "nullable": False},
        "_loaded_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    }


def _with_lineage(table: pa.Table, staged: StagedFile, run_id: str, loaded_at: dt.datetime) -> pa.Table:
    n = table.num_rows
    generation = staged.info.generation
    columns = {
        "_source_file": pa.repeat(pa.scalar(staged.url, pa.string()), n),
        "_source_generation": pa.repeat(pa.scalar(generation, pa.int64()), n),
        "_content_hash": pa.repeat(pa.scalar(staged.content_hash, pa.string()), n),
        "_run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "_loaded_at": pa.repeat(pa.scalar(loaded_at, pa.timestamp("us", tz="UTC")), n),
    }
    for name, array in columns.items():
        table = table.append_column(name, array)
    return table


def _read_staged(path: Path) -> Iterator[pa.Table]:
    if not path.exists():
        return
    with pa.OSFile(str(path), "rb") as handle, pa.ipc.open_stream(handle) as reader:
        for batch in reader:
            yield pa.Table.from_batches([batch])


def _records(staged_files: list[StagedFile], run_id: str, loaded_at: dt.datetime) -> Iterator[pa.Table]:
    return grouped_tables(
        _records_by_batch(staged_files, run_id, loaded_at), LOAD_FILE_MAX_ROWS, LOAD_FILE_MAX_BYTES
    )


def _records_by_batch(
    staged_files: list[StagedFile], run_id: str, loaded_at: dt.datetime
) -> Iterator[pa.Table]:
    for staged in staged_files:
        prefix = f"{staged.info.generation:020d}:"
        for table in _read_staged(staged.data_path):
            table = _with_lineage(table, staged, run_id, loaded_at)
            numbers = pc.utf8_lpad(table.column("_record_number").cast(pa.string()), 12, "0")
            order = pc.binary_join_element_wise(prefix, numbers, "")
            yield table.append_column("_record_order", order)


def _rejects(staged_files: list[StagedFile], run_id: str, loaded_at: dt.datetime) -> Iterator[pa.Table]:
    return grouped_tables(
        _rejects_by_batch(staged_files, run_id, loaded_at), LOAD_FILE_MAX_ROWS, LOAD_FILE_MAX_BYTES
    )


def _rejects_by_batch(
    staged_files: list[StagedFile], run_id: str, loaded_at: dt.datetime
) -> Iterator[pa.Table]:
    for staged in staged_files:
        for table in _read_staged(staged.rejects_path):
            table = table.add_column(
                0, "payload_type", pa.repeat(pa.scalar(staged.payload_type.name, pa.string()), table.num_rows)
            )
            yield _with_lineage(table, staged, run_id, loaded_at)


def grouped_tables(tables: Iterable[pa.Table], rows: int, max_bytes: int) -> Iterator[pa.Table]:
    """The same rows, in the same order, with consecutive tables joined until a group holds `rows` rows or
    `max_bytes` bytes (a group ends with the table that reaches either).

    The staged batches are small (BATCH_ROWS) and each Arrow table dlt gets becomes one load file on
    PostgreSQL (csv_load_files): grouped, a table is a few COPY jobs of a useful size, and the byte bound
    keeps memory flat however large the records are. The tables must share one schema (one payload
    type's, or the rejects').
    """
    pending: list[pa.Table] = []
    held_rows = held_bytes = 0
    for table in tables:
        pending.append(table)
        held_rows += table.num_rows
        held_bytes += table.nbytes
        if held_rows >= rows or held_bytes >= max_bytes:
            yield pa.concat_tables(pending)
            pending, held_rows, held_bytes = [], 0, 0
    if pending:
        yield pa.concat_tables(pending)


def _by_type(staged_files: list[StagedFile]) -> dict[str, list[StagedFile]]:
    by_type: dict[str, list[StagedFile]] = {}
    for staged in staged_files:
        by_type.setdefault(staged.payload_type.name, []).append(staged)
    return by_type


@dlt.source(name="gcs_payloads", max_table_nesting=0)
def gcs_payloads_source(
    staged_files: list[StagedFile],
    run_id: str,
    loaded_at: dt.datetime,
    warehouse: str = "postgres",
    append_types: frozenset[str] = frozenset(),
    csv_load_folder: Path | None = None,
) -> Iterator[Any]:
    """One bronze table per payload type present (merged on its primary key), plus `rejects`.
    `warehouse` adapts the column hints (JSON columns are JSON text on BigQuery: loaders/destinations.py).
    Types in `append_types` carry only keys bronze does not hold yet, each once (new_keys_only()): they
    are appended, which lands the same rows as the merge without its staging copy and delete.
    With `csv_load_folder` (PostgreSQL), each Arrow table is handed to dlt as a finished CSV load file
    (dlt_fast_paths.csv_load_files) instead of going through Parquet and normalize."""
    for files in _by_type(staged_files).values():
        payload_type = files[0].payload_type
        columns = column_hints_for(
            warehouse,
            {c.name: c.dlt_hint(nullable=c.name not in payload_type.required) for c in payload_type.columns},
        )
        columns.update(_lineage_hints())
        columns["_record_order"] = {"data_type": "text", "nullable": False, "dedup_sort": "desc"}
        append = payload_type.name in append_types
        yield _as_csv_load_files(
            dlt.resource(
                _records(files, run_id, loaded_at),
                name=payload_type.table_name,
                write_disposition="append"
                if append
                else {"disposition": "merge", "strategy": "delete-insert"},
                primary_key=list(payload_type.primary_key),
                columns=columns,
            ),
            csv_load_folder,
        )
    reject_columns = {
        "payload_type": {"data_type": "text", "nullable": False},
        "reason": {"data_type": "text", "nullable": False},
        "_byte_offset": {"data_type": "bigint", "nullable": False},
        **_lineage_hints(),
    }
    yield _as_csv_load_files(
        dlt.resource(
            _rejects(staged_files, run_id, loaded_at),
            name=REJECTS_TABLE,
            write_disposition={"disposition": "merge", "strategy": "delete-insert"},
            primary_key=["_content_hash", "_record_number"],
            columns=reject_columns,
        ),
        csv_load_folder,
    )


def _as_csv_load_files(resource: Any, folder: Path | None) -> Any:
    """Written one table at a time (not in dlt's pool): records with their JSON are large, and four
    100k-row tables in flight took the loader's peak memory from ~550 MiB to ~1.3 GB at 1 GiB."""
    if folder is not None:
        resource.add_step(csv_load_files(folder, in_thread_pool=False))
    return resource


@dlt.source(name="gcs_payloads", max_table_nesting=0)
def gcs_registry_source(staged_files: list[StagedFile], run_id: str, loaded_at: dt.datetime) -> Iterator[Any]:
    """`loaded_files`: one row per distinct content loaded (the exactly-once registry, and file lineage)."""
    rows = [
        {
            "content_hash": s.content_hash,
            "payload_type": s.payload_type.name,
            "file_name": s.relative,
            "source_file": s.url,
            "source_generation": s.info.generation,
            "size_bytes": s.digest.stored_bytes,
            "compressed": s.digest.compressed,
            "format": s.digest.format,
            "records_processed": s.records_processed,
            "records_loaded": s.records_loaded,
            "records_rejected": s.records_rejected,
            "run_id": run_id,
            "loaded_at": loaded_at,
        }
        for s in staged_files
    ]
    schema = pa.schema(
        [
            ("content_hash", pa.string()),
            ("payload_type", pa.string()),
            ("file_name", pa.string()),
            ("source_file", pa.string()),
            ("source_generation", pa.int64()),
            ("size_bytes", pa.int64()),
            ("compressed", pa.bool_()),
            ("format", pa.string()),
            ("records_processed", pa.int64()),
            ("records_loaded", pa.int64()),
            ("records_rejected", pa.int64()),
            ("run_id", pa.string()),
            ("loaded_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    yield dlt.resource(
        iter([pa.Table.from_pylist(rows, schema=schema)]),
        name=FILES_TABLE,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key=["payload_type", "content_hash"],
    )


# -- the run -------------------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        bucket: Bucket,
        warehouse_url: str,
        types: dict[str, PayloadType],
        *,
        run_id: str,
        bronze_schema: str,
        log: ProcessingLog,
        work_dir: Path,
        lease_seconds: float,
        load_lock_timeout_seconds: float,
        max_batch_files: int,
        max_batch_bytes: int,
        progress: Progress,
    ) -> None:
        self.bucket = bucket
        self.warehouse_url = warehouse_url
        self.types = types
        self.run_id = run_id
        self.bronze_schema = bronze_schema
        self.log = log
        self.work_dir = work_dir
        self.leases = LeaseManager(bucket, run_id, lease_seconds=lease_seconds)
        self.load_lock_timeout_seconds = load_lock_timeout_seconds
        self.max_batch_files = max_batch_files
        self.max_batch_bytes = max_batch_bytes
        self.progress = progress
        self.result = GcsLoadResult(run_id=run_id, bucket_url=bucket.url)
        self.batch: list[StagedFile] = []
        self._pipeline: Any = None
        # one batch loads in this thread while the next is staged (see flush)
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcs-load")
        self._loading: Future[None] | None = None
        self._in_flight: list[StagedFile] = []

    # discovery ----------------------------------------------------------------------------------

    def pending(self) -> list[tuple[PayloadType, ObjectInfo, str]]:
        found = []
        for payload_type in self.types.values():
            prefix = layout_key("pending", payload_type.name)
            objects = sorted(self.bucket.list(prefix), key=lambda o: (o.generation, o.key))
            found.extend((payload_type, info, info.key[len(prefix) :]) for info in objects)
        return found

    def unknown_types(self, configured: Sequence[str]) -> Counter[str]:
        """Folders under pending/ that no payload type claims (their files stay where they are)."""
        prefix = f"{LAYOUT_ROOT}/pending/"
        unknown: Counter[str] = Counter()
        for info in self.bucket.list(prefix):
            folder = info.key[len(prefix) :].split("/", 1)
            name = folder[0] if len(folder) == 2 else "(no payload type folder)"
            if name not in configured:
                unknown[name] += 1
        return unknown

    # one file -----------------------------------------------------------------------------------

    def process(self, payload_type: PayloadType, info: ObjectInfo, relative: str) -> None:
        entry = self.log.start(
            self.run_id, layer="bronze", payload_type=payload_type.name, file_name=relative
        )
        lease_key = layout_key("_leases", payload_type.name, relative + ".lease")
        got = self.leases.acquire(lease_key)
        if isinstance(got, Holder):
            self._final(
                entry,
                payload_type,
                relative,
                "skipped",
                f"leased by run {got.run_id} ({got.owner}) until {got.expires_at.isoformat()}",
            )
            return
        current = self.bucket.stat(info.key)
        if current is None:
            self.leases.release(got)
            self._final(
                entry, payload_type, relative, "skipped", "no longer in pending/ (another run took it)"
            )
            return
        try:
            staged = stage_file(self.bucket, current, payload_type, relative, self.work_dir)
        except FileFailed as exc:
            self._quarantine(current, payload_type, relative, entry, str(exc), got)
            return
        except BaseException as exc:  # the bucket or the disk failed: not the file's fault
            self.leases.release(got)
            self._final(
                entry,
                payload_type,
                relative,
                "failed",
                f"could not read the file, left in pending/: {type(exc).__name__}: {exc}",
            )
            raise
        staged.lease, staged.entry = got, entry
        duplicate = self._already_loaded(staged)
        if duplicate is not None:
            self._move(staged, "done")
            self._final(
                entry,
                payload_type,
                relative,
                "skipped",
                duplicate,
                details={**staged.details(), "records_in_file": staged.records_processed},
            )
            self.leases.release(got)
            self._discard(staged)
            return
        self.batch.append(staged)
        self.progress(
            f"staged {payload_type.name}/{relative}: {staged.records_loaded:,} record(s), "
            f"{staged.records_rejected:,} rejected"
        )
        if len(self.batch) >= self.max_batch_files or self._batch_bytes() >= self.max_batch_bytes:
            self.flush(wait=False)

    def _batch_bytes(self) -> int:
        return sum(s.digest.stored_bytes for s in self.batch)

    def _already_loaded(self, staged: StagedFile) -> str | None:
        for other in (*self._in_flight, *self.batch):
            if (
                other.payload_type.name == staged.payload_type.name
                and other.content_hash == staged.content_hash
            ):
                return f"duplicate content: same bytes as {other.relative}, loaded in this run"
        row = registry_lookup(
            self.warehouse_url, self.bronze_schema, staged.payload_type.name, staged.content_hash
        )
        if row is None:
            return None
        file_name, run_id, loaded_at = row
        if file_name == staged.relative:
            return f"already loaded by run {run_id} at {loaded_at} (moved to done/ now)"
        return f"duplicate content: same bytes as {file_name}, loaded by run {run_id} at {loaded_at}"

    def _quarantine(
        self,
        info: ObjectInfo,
        payload_type: PayloadType,
        relative: str,
        entry: LogEntry,
        reason: str,
        lease: Lease,
    ) -> None:
        try:
            self.bucket.move(info, layout_key("failed", payload_type.name, relative))
        finally:
            self.leases.release(lease)
        self._final(
            entry,
            payload_type,
            relative,
            "failed",
            f"moved to failed/: {reason}",
            details={"source_file": self.bucket.object_url(info.key), "generation": info.generation},
        )
        self.progress(f"FAILED {payload_type.name}/{relative}: {reason}")

    def _move(self, staged: StagedFile, area: str) -> None:
        try:
            move_file(self.bucket, staged.info, layout_key(area, staged.payload_type.name, staged.relative))
        except BucketError:
            if self.bucket.stat(staged.info.key) is not None:
                raise  # still there: a real failure
            # gone: another run whose lease outlived ours already moved it

    def _final(
        self,
        entry: LogEntry,
        payload_type: PayloadType,
        relative: str,
        status: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        staged: StagedFile | None = None,
    ) -> None:
        counts = (
            {
                "records_processed": staged.records_processed,
                "records_loaded": staged.records_loaded,
                "records_invalid": staged.records_rejected,
            }
            if staged is not None
            else {"records_processed": 0, "records_loaded": 0, "records_invalid": 0}
        )
        self.log.finish(entry, status, message=message, details=details, **counts)
        self.result.files.append(
            FileOutcome(
                payload_type=payload_type.name,
                file_name=relative,
                status=status,
                message=message,
                records_processed=counts["records_processed"],
                records_loaded=counts["records_loaded"],
                records_rejected=counts["records_invalid"],
            )
        )

    def _discard(self, staged: StagedFile) -> None:
        for path in (staged.data_path, staged.rejects_path):
            path.unlink(missing_ok=True)

    # a batch --------------------------------------------------------------------------------------

    def pipeline(self) -> Any:
        if self._pipeline is None:
            self._pipeline = dlt.pipeline(
                pipeline_name=f"gcs_to_{self.bronze_schema}",
                **dlt_destination(self.warehouse_url, unique_dlt_id=False).pipeline_kwargs,
                dataset_name=self.bronze_schema,
                pipelines_dir=str(self.work_dir / "dlt"),
                progress=None,
            )
        return self._pipeline

    def flush(self, *, wait: bool = True) -> None:
        """Load the staged batch. With `wait=False` it loads in the background while the caller stages the
        next files: staging is mostly client CPU and loading mostly server CPU, so on two cores the two
        overlap. Batches still load one at a time and in order; a failed load is raised here, at the next
        flush, or by `abandon`."""
        self._wait_for_load()
        batch, self.batch = self.batch, []
        if batch:
            self._in_flight = batch
            self._loading = self._loader.submit(self._load, batch)
        if wait:
            self._wait_for_load()

    def _wait_for_load(self) -> None:
        if self._loading is None:
            return
        try:
            self._loading.result()
        finally:
            self._loading, self._in_flight = None, []

    def _load(self, batch: list[StagedFile]) -> None:
        loaded_at = dt.datetime.now(dt.UTC)
        try:
            with self.leases.wait_for(LOAD_LEASE, self.load_lock_timeout_seconds):
                load_ids = load_batch(self.pipeline(), batch, self.run_id, loaded_at, self.warehouse_url)
                register_files(self.pipeline(), batch, self.run_id, loaded_at)
        except BaseException as exc:
            for staged in batch:
                self.leases.release(staged.lease)
                self._final(
                    staged.entry,
                    staged.payload_type,
                    staged.relative,
                    "failed",
                    f"load failed, file left in pending/ for the next run: {type(exc).__name__}: {exc}",
                    details=staged.details(),
                )
                self._discard(staged)
            raise
        self.result.load_ids.extend(load_ids)
        for staged in batch:
            self._move(staged, "done")
            message = f"loaded {staged.records_loaded:,} record(s), rejected {staged.records_rejected:,}"
            if staged.drift:
                message += f"; schema drift: {len(staged.drift)} undeclared field(s), see details.new_fields"
            self._final(
                staged.entry,
                staged.payload_type,
                staged.relative,
                "completed",
                message,
                details={**staged.details(), "load_ids": load_ids},
                staged=staged,
            )
            self.leases.release(staged.lease)
            self._discard(staged)
            self.progress(f"loaded {staged.payload_type.name}/{staged.relative}: {message}")

    def close(self) -> None:
        self._loader.shutdown(wait=True)
        self.leases.close()

    def abandon(self) -> None:
        """After an unexpected error: whatever is staged stays in pending/ for the next run. A batch already
        loading finishes first (it logs its own outcome, failed or not)."""
        with contextlib.suppress(BaseException):  # its files are logged as failed by _load itself
            self._wait_for_load()
        for staged in self.batch:
            if staged.entry is not None and not staged.entry.finished:
                self._final(
                    staged.entry,
                    staged.payload_type,
                    staged.relative,
                    "failed",
                    "run aborted before the load; file left in pending/",
                )
        self.batch = []


def load_batch(
    pipeline: Any,
    batch: list[StagedFile],
    run_id: str,
    loaded_at: dt.datetime,
    warehouse_url: str | None = None,
) -> list[str]:
    """The data load: every staged file's records and rejects, in one dlt load (Arrow -> CSV -> COPY;
    on PostgreSQL each group of about LOAD_FILE_MAX_ROWS rows is one CSV load file written at extract, so a
    big table is several COPY jobs, run in parallel)."""
    warehouse = pipeline_warehouse_kind(pipeline)
    append_types = (
        new_keys_only(warehouse_url, pipeline.dataset_name, batch)
        if warehouse_url is not None and warehouse == "postgres"
        else frozenset()
    )
    # no dlt file rotation here: on PostgreSQL every table is already a CSV load file per group
    with dlt_fast_paths(), csv_load_folder(pipeline) as folder:
        source = gcs_payloads_source(
            batch,
            run_id,
            loaded_at,
            warehouse=warehouse,
            append_types=append_types,
            csv_load_folder=folder if warehouse == "postgres" else None,
        )
        info = pipeline.run(source, **pipeline_run_kwargs(pipeline))
    info.raise_on_failed_jobs()
    return list(info.loads_ids)


def new_keys_only(warehouse_url: str, bronze_schema: str, batch: list[StagedFile]) -> frozenset[str]:
    """The payload types of the batch whose primary keys are unique within the batch and absent from
    bronze (PostgreSQL). For them a plain append lands exactly what the merge would. The keys are read back
    from the staged files one Arrow batch at a time and COPYed into a temporary table, where PostgreSQL
    checks both (memory stays one batch, whatever the files' size); that costs far less than the merge's
    staging copy and delete."""
    result = set()
    conn = connect(warehouse_url)
    conn.autocommit = False  # the temporary key table lives for one transaction
    try:
        for name, files in _by_type(batch).items():
            if _keys_new(conn, bronze_schema, files[0].payload_type, files):
                result.add(name)
    finally:
        conn.close()
    return frozenset(result)


def key_index_name(payload_type: PayloadType) -> str:
    """The name of bronze's index on a payload type's primary key (named as dbt names the source lookup
    indexes it builds, macros/incremental/source_lookup_indexes.sql)."""
    return f"{payload_type.table_name}__{'_'.join(payload_type.primary_key)}__lookup"


def any_key_in_bronze_sql(bronze: str, key: Sequence[str]) -> str:
    """Whether any key of the temporary table `new_keys` is in bronze (one index probe per key)."""
    join = " and ".join(f'b."{c}" = k."{c}"' for c in key)
    return f"select exists (select 1 from new_keys k join {bronze} b on {join})"


_SQL_TYPES = {
    "text": "text",
    "bigint": "bigint",
    "double": "double precision",
    "decimal": "numeric",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "date": "date",
    "json": "text",
}


def _keys_new(conn: Any, schema: str, payload_type: PayloadType, files: list[StagedFile]) -> bool:
    import pyarrow.csv as pacsv

    key = list(payload_type.primary_key)
    types = {c.name: _SQL_TYPES[c.type] for c in payload_type.columns}
    columns = ", ".join(f'"{c}"' for c in key)
    bronze = f'"{schema}"."{payload_type.table_name}"'
    with conn.cursor() as cur:
        bronze_exists = relation_exists(cur, bronze)
        if bronze_exists:
            # the check below (and dlt's merge delete) looks bronze up by key: one index probe per key of the
            # batch instead of a scan of all of bronze. Built once, by the first batch that finds bronze.
            cur.execute(
                f'create index if not exists "{key_index_name(payload_type)}" on {bronze} ({columns})'
            )
    conn.commit()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "create temp table new_keys ("
                + ", ".join(f'"{c}" {types[c]}' for c in key)
                + ") on commit drop"
            )
            for staged in files:
                for part in _read_staged(staged.data_path):
                    sink = pa.BufferOutputStream()
                    pacsv.write_csv(part.select(key), sink, pacsv.WriteOptions(include_header=False))
                    cur.copy_expert(
                        f"copy new_keys ({columns}) from stdin with (format csv)",
                        pa.BufferReader(sink.getvalue()),
                    )
            cur.execute(f"select exists (select 1 from new_keys group by {columns} having count(*) > 1)")
            if cur.fetchone()[0]:
                return False  # a key twice in the batch: the merge's dedup decides which record wins
            if not bronze_exists:
                return True
            # autovacuum never analyzes a temporary table: without statistics the planner guesses ~200
            # distinct keys, expects the exists to stop at once, and nests a scan of bronze in a scan of the
            # keys (hours at a few hundred thousand rows)
            cur.execute("analyze new_keys")
            cur.execute(f"select not ({any_key_in_bronze_sql(bronze, key)})")
            return bool(cur.fetchone()[0])
    finally:
        conn.rollback()


def register_files(pipeline: Any, batch: list[StagedFile], run_id: str, loaded_at: dt.datetime) -> None:
    """Marks the files' contents as loaded. Runs only after load_batch committed (see the module doc)."""
    info = pipeline.run(gcs_registry_source(batch, run_id, loaded_at), **pipeline_run_kwargs(pipeline))
    info.raise_on_failed_jobs()


def move_file(bucket: Bucket, info: ObjectInfo, new_key: str) -> None:
    """The last step of a file: pending/ -> done/ (or failed/). Its own function so tests can crash here."""
    bucket.move(info, new_key)


def registry_lookup(
    warehouse_url: str, bronze_schema: str, payload_type: str, content_hash: str
) -> tuple[str, str, Any] | None:
    """(file_name, run_id, loaded_at) of the load that registered this content, if any."""
    if warehouse_kind(warehouse_url) == "bigquery":
        return _bigquery_registry_lookup(warehouse_url, bronze_schema, payload_type, content_hash)
    conn = connect(warehouse_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select count(*) from information_schema.tables where table_schema = %s and table_name = %s",
                (bronze_schema, FILES_TABLE),
            )
            if cur.fetchone()[0] == 0:
                return None
            cur.execute(
                f"select file_name, run_id, loaded_at from {bronze_schema}.{FILES_TABLE} "
                "where payload_type = %s and content_hash = %s",
                (payload_type, content_hash),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], row[1], row[2])


def _bigquery_registry_lookup(
    warehouse_url: str, dataset: str, payload_type: str, content_hash: str
) -> tuple[str, str, Any] | None:
    from google.cloud import bigquery

    target = BigQueryTarget.from_url(warehouse_url)
    client = target.client()
    try:
        if not target.table_exists(client, dataset, FILES_TABLE):
            return None
        job = client.query(
            f"select file_name, run_id, loaded_at from {target.quoted(dataset, FILES_TABLE)} "
            "where payload_type = @payload_type and content_hash = @content_hash",
            job_config=bigquery.QueryJobConfig(
                query_parameters=[
                    bigquery.ScalarQueryParameter("payload_type", "STRING", payload_type),
                    bigquery.ScalarQueryParameter("content_hash", "STRING", content_hash),
                ]
            ),
        )
        rows = list(job.result())
    finally:
        client.close()
    return None if not rows else (rows[0][0], rows[0][1], rows[0][2])


def load_gcs(
    bucket_url: str,
    warehouse_url: str,
    *,
    bronze_schema: str | None = None,
    ops_schema: str | None = None,
    payload_types: Sequence[str] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    load_lock_timeout_seconds: float = 900.0,
    max_batch_files: int = 200,
    max_batch_bytes: int = 256 << 20,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> GcsLoadResult:
    """Load every pending payload file of the bucket into bronze; returns what happened to each file.

    Files are loaded in batches of up to `max_batch_files` files or `max_batch_bytes` stored bytes; a batch
    loads while the next one is staged. Files that cannot be loaded go to failed/ (that is not an error of
    the run). Raises `BucketUnreachableError` if the bucket cannot be listed (nothing is moved), a
    PayloadTypeError for a bad configuration, and re-raises load errors (the files stay in pending/). The
    run and every file are in the processing log either way.
    """
    from loaders.config import check_connection

    say = progress or (lambda _message: None)
    bronze_schema = bronze_schema or bronze_schema_from_env()
    run_id = run_id or new_run_id()
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID", "true")
    check_connection(warehouse_url, "warehouse")
    log = ProcessingLog(warehouse_url, schema=ops_schema, component="gcs")
    run_entry = log.start(run_id, layer="bronze", message="gcs payload load")
    owned_work_dir = work_dir is None
    base_dir = Path(tempfile.mkdtemp(prefix="gcs-load-")) if owned_work_dir else Path(work_dir)
    run_dir = base_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    run: _Run | None = None
    started = time.monotonic()
    try:
        bucket = open_bucket(bucket_url)
        bucket.check()
        all_types = load_payload_types(config_dir)
        selected = list(payload_types) if payload_types else list(all_types)
        unknown = [name for name in selected if name not in all_types]
        if unknown:
            raise ValueError(f"unknown payload type(s) {unknown}; configured: {sorted(all_types)}")
        types = {name: all_types[name] for name in selected}
        run = _Run(
            bucket,
            warehouse_url,
            types,
            run_id=run_id,
            bronze_schema=bronze_schema,
            log=log,
            work_dir=run_dir,
            lease_seconds=lease_seconds,
            load_lock_timeout_seconds=load_lock_timeout_seconds,
            max_batch_files=max_batch_files,
            max_batch_bytes=max_batch_bytes,
            progress=say,
        )
        pending = run.pending()
        strays = run.unknown_types(list(all_types)) if not payload_types else Counter()
        say(f"{len(pending)} pending file(s) in {bucket.url}")
        for payload_type, info, relative in pending:
            run.process(payload_type, info, relative)
        run.flush()
    except BaseException as exc:
        if run is not None:
            run.abandon()
            run.close()
        log.finish(
            run_entry,
            "failed",
            message=f"{type(exc).__name__}: {exc}",
            details=_run_details(run, bucket_url, time.monotonic() - started),
            **_run_counts(run),
        )
        log.close()
        _cleanup(run_dir, base_dir if owned_work_dir else None)
        raise
    run.close()
    result = run.result
    details = _run_details(run, bucket_url, time.monotonic() - started)
    if strays:
        details["unknown_payload_type_folders"] = dict(strays)
    log.finish(run_entry, "completed", message=result.summary(), details=details, **_run_counts(run))
    log.close()
    _cleanup(run_dir, base_dir if owned_work_dir else None)
    return result


def _run_counts(run: _Run | None) -> dict[str, int]:
    if run is None:
        return {"records_processed": 0, "records_loaded": 0, "records_invalid": 0}
    loaded = run.result.records_loaded
    rejected = run.result.records_rejected
    return {"records_processed": loaded + rejected, "records_loaded": loaded, "records_invalid": rejected}


def _run_details(run: _Run | None, bucket_url: str, seconds: float) -> dict[str, Any]:
    details: dict[str, Any] = {"bucket": bucket_url, "seconds": round(seconds, 3)}
    if run is not None:
        details["files"] = {s: run.result.count(s) for s in ("completed", "skipped", "failed")}
        details["payload_types"] = sorted(run.types)
        details["load_ids"] = run.result.load_ids
    return details


def _cleanup(run_dir: Path, owned_base: Path | None) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
    if owned_base is not None:
        shutil.rmtree(owned_base, ignore_errors=True)


# -- operations ----------------------------------------------------------------------------------


def requeue_failed(
    bucket_url: str,
    *,
    payload_type: str | None = None,
    file_name: str | None = None,
    warehouse_url: str | None = None,
    ops_schema: str | None = None,
) -> list[str]:
    """Move quarantined files from failed/ back to pending/ (all, one payload type, or one file);
    returns the relative names moved (`<payload_type>/<file>`). With `warehouse_url`, each move is logged
    (status `pending`). Fix the producer or the payload type's configuration first, then requeue, then
    run the load again.
    """
    bucket = open_bucket(bucket_url)
    bucket.check()
    prefix = f"{LAYOUT_ROOT}/failed/" + (f"{payload_type}/" if payload_type else "")
    moved = []
    run_id = new_run_id()
    log = ProcessingLog(warehouse_url, schema=ops_schema, component="gcs") if warehouse_url else None
    try:
        for info in bucket.list(prefix):
            name = info.key[len(f"{LAYOUT_ROOT}/failed/") :]
            kind, _, relative = name.partition("/")
            if file_name is not None and relative != file_name and name != file_name:
                continue
            bucket.move(info, layout_key("pending", kind, relative))
            moved.append(name)
            if log is not None:
                log.write(
                    run_id,
                    layer="bronze",
                    status="pending",
                    payload_type=kind,
                    file_name=relative,
                    message="requeued: moved from failed/ back to pending/",
                )
    finally:
        if log is not None:
            log.close()
    return moved

"""The processing log: one table that says what every loader and every dbt node did, run by run.

Why it exists: when a number in gold looks wrong, the first questions are "which files / which run / which
node, and did anything fail or get rejected on the way?". Every component writes here with the same shape:

- one row per **unit of work per run** (a payload file, a dbt node) and one row per **run** (`file_name` and
  `node` empty), so `select ... where run_id = ...` tells the whole story of a run;
- `layer` is where the work lands (bronze / silver / gold), `status` one of pending, processing, completed,
  failed, skipped; a row is inserted as `processing` when the work starts and updated when it ends, so a
  run that crashed leaves its rows visibly stuck in `processing`;
- `records_processed = records_loaded + records_invalid` for loaders: nothing is silently dropped.

Design constraints:
- **Portable SQL only** (create schema / create table if not exists, insert, update by key, select), on
  PostgreSQL (`postgresql://` URL) and BigQuery (`bigquery://<project>?...`, see loaders/destinations.py).
  Column types come from a small per-dialect map; the driver-specific code is the two small writer classes
  at the end. On BigQuery the table is `<project>.<schema>.processing_log`, partitioned by day of
  started_at and clustered by component and run_id; rows are written with parameterised DML (a few small
  statements per run, never streaming inserts), and dbt's results go in one multi-row insert per batch.
- **Autocommit**: a log row is durable as soon as it is written, independently of the data transactions of
  the loaders (a rolled-back load still leaves its `failed` row).
- **No secrets**: messages and details pass through `redact()`, which masks passwords in URLs and the values
  of keys that look like credentials. Callers still should not put connection strings in the log.

Usage (a loader):

    log = ProcessingLog(warehouse_url, component="gcs")
    run = log.start(run_id, layer="bronze")                       # the run's own row
    entry = log.start(run_id, layer="bronze", payload_type="x", file_name="a.json")
    log.finish(entry, "completed", records_processed=10, records_loaded=9, records_invalid=1)
    log.finish(run, "completed", details={"files": 1})

and after `dbt build`: `record_dbt_results(warehouse_url, "target/run_results.json", run_id)`.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_SCHEMA = "ops"
SCHEMA_ENV = "OPS_SCHEMA"
TABLE = "processing_log"

LAYERS = ("bronze", "silver", "gold")
STATUSES = ("pending", "processing", "completed", "failed", "skipped")
FINAL_STATUSES = ("completed", "failed", "skipped")

# (column, portable type). Order is the table's column order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("log_id", "string"),
    ("run_id", "string"),
    ("component", "string"),
    ("payload_type", "string"),
    ("layer", "string"),
    ("file_name", "string"),
    ("status", "string"),
    ("message", "string"),
    ("details", "json"),
    ("duration_ms", "int"),
    ("records_processed", "int"),
    ("records_loaded", "int"),
    ("records_invalid", "int"),
    ("user_name", "string"),
    ("hostname", "string"),
    ("loader_version", "string"),
    ("started_at", "timestamp"),
    ("finished_at", "timestamp"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)

_TYPES = {
    "postgresql": {
        "string": "text",
        "int": "bigint",
        "json": "jsonb",
        "timestamp": "timestamp with time zone",
    },
    "bigquery": {
        "string": "STRING",
        "int": "INT64",
        "json": "JSON",
        "timestamp": "TIMESTAMP",
    },
}
COLUMN_KINDS = dict(COLUMNS)
BIGQUERY_INSERT_BATCH_ROWS = 200  # 18 parameters a row: well under BigQuery's 10,000 per query

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)(?P<secret>[^@\s]+)@")
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|credential|private_key|api_?key", re.IGNORECASE)


class ProcessingLogError(RuntimeError):
    """The log table cannot be written (unsupported warehouse, bad arguments)."""


# -- public helpers ----------------------------------------------------------------------------


def new_run_id() -> str:
    """A fresh run id: every row written by one run of a loader or of dbt shares it."""
    return str(uuid.uuid4())


def default_schema() -> str:
    return os.environ.get(SCHEMA_ENV, DEFAULT_SCHEMA)


def loader_version(component: str | None = None) -> str:
    """`pharma-warehouse <version>` (plus the component), so a row tells which code wrote it."""
    try:
        version = metadata.version("pharma-warehouse")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{component} pharma-warehouse {version}" if component else f"pharma-warehouse {version}"


def redact(value: Any) -> Any:
    """Masks passwords inside URLs and the values of secret-looking keys, recursively."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}****@", value)
    if isinstance(value, Mapping):
        return {
            str(k): ("****" if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set)):
        return [redact(v) for v in value]
    return value


def connect(warehouse_url: str) -> Any:
    """A DB-API connection to the warehouse, in autocommit mode (psycopg2, or google-cloud-bigquery's
    DB-API on BigQuery, whose statements must name tables fully: `project.dataset.table`)."""
    dialect = _dialect(warehouse_url)
    if dialect == "postgresql":
        import psycopg2

        conn = psycopg2.connect(warehouse_url, connect_timeout=10)
        conn.autocommit = True
        return conn
    from google.cloud.bigquery import dbapi

    from loaders.destinations import BigQueryTarget

    return dbapi.connect(BigQueryTarget.from_url(warehouse_url).client())


# -- the log -----------------------------------------------------------------------------------


@dataclass
class LogEntry:
    """One row of the log being written: `finish()` completes it."""

    log_id: str
    run_id: str
    payload_type: str | None
    layer: str
    file_name: str | None
    started_at: dt.datetime
    started_monotonic: float = field(default_factory=time.monotonic)
    finished: bool = False


class ProcessingLog:
    """Writes rows to `<schema>.processing_log`; creates the schema and table on first use."""

    def __init__(
        self,
        warehouse_url: str,
        *,
        schema: str | None = None,
        component: str = "loader",
        version: str | None = None,
    ) -> None:
        self.warehouse_url = warehouse_url
        self.dialect = _dialect(warehouse_url)
        self.schema = schema or default_schema()
        _check_identifier(self.schema)
        self.component = component
        self.version = version or loader_version(component)
        self.user_name = _user_name()
        self.hostname = socket.gethostname()
        self._writer: _Writer | None = None
        # a loader may log from two threads (the GCS loader stages one batch while loading another)
        self._lock = threading.RLock()

    @property
    def table(self) -> str:
        """The table's name as the warehouse's SQL writes it (fully qualified on BigQuery)."""
        return self._backend().table

    # connection ---------------------------------------------------------------------------------

    def _backend(self) -> _Writer:
        if self._writer is None:
            writer_class = _BigQueryWriter if self.dialect == "bigquery" else _PostgresWriter
            self._writer = writer_class(self.warehouse_url, self.schema)
        return self._writer

    def _ready(self) -> _Writer:
        """The writer, connected, with the table created on first use."""
        writer = self._backend()
        if not writer.connected:
            writer.connect()
            writer.ensure_table()
        return writer

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()

    def __enter__(self) -> ProcessingLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_table(self) -> None:
        """Create the schema and table if missing (idempotent; safe to race with another process)."""
        writer = self._backend()
        if not writer.connected:
            writer.connect()
        writer.ensure_table()

    # writing ------------------------------------------------------------------------------------

    def start(
        self,
        run_id: str,
        *,
        layer: str,
        payload_type: str | None = None,
        file_name: str | None = None,
        status: str = "processing",
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> LogEntry:
        """Insert a row for work that starts now; `finish()` it later."""
        entry = LogEntry(
            log_id=new_run_id(),
            run_id=run_id,
            payload_type=payload_type,
            layer=_check_layer(layer),
            file_name=file_name,
            started_at=_now(),
        )
        self._insert(
            {
                "log_id": entry.log_id,
                "run_id": run_id,
                "payload_type": payload_type,
                "layer": entry.layer,
                "file_name": file_name,
                "status": _check_status(status),
                "message": message,
                "details": details,
                "started_at": entry.started_at,
            }
        )
        return entry

    def finish(
        self,
        entry: LogEntry,
        status: str,
        *,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
        records_processed: int | None = None,
        records_loaded: int | None = None,
        records_invalid: int | None = None,
    ) -> None:
        """Complete a row started with `start()`: final status, counts, duration and finished_at."""
        _check_counts(records_processed, records_loaded, records_invalid)
        values = {
            "status": _check_status(status),
            "message": _clean_message(message),
            "details": _json(details),
            "duration_ms": int((time.monotonic() - entry.started_monotonic) * 1000),
            "records_processed": records_processed,
            "records_loaded": records_loaded,
            "records_invalid": records_invalid,
            "finished_at": _now(),
        }
        with self._lock:
            self._ready().update(entry.log_id, values)
        entry.finished = True

    def write(
        self,
        run_id: str,
        *,
        layer: str,
        status: str,
        payload_type: str | None = None,
        file_name: str | None = None,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
        duration_ms: int | None = None,
        records_processed: int | None = None,
        records_loaded: int | None = None,
        records_invalid: int | None = None,
        started_at: dt.datetime | None = None,
        finished_at: dt.datetime | None = None,
    ) -> str:
        """Insert one complete row at once (work that was timed elsewhere, e.g. a dbt node); returns its id."""
        row = self._complete_row(
            run_id,
            layer=layer,
            status=status,
            payload_type=payload_type,
            file_name=file_name,
            message=message,
            details=details,
            duration_ms=duration_ms,
            records_processed=records_processed,
            records_loaded=records_loaded,
            records_invalid=records_invalid,
            started_at=started_at,
            finished_at=finished_at,
        )
        self._insert(row)
        return str(row["log_id"])

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """`write()` for many rows at once (dbt's results): one statement per batch on BigQuery, where
        every statement is a job; returns the ids. Each mapping holds `write()`'s keyword arguments."""
        complete = [self._complete_row(**row) for row in rows]
        rows = [self._full_row(row) for row in complete]
        with self._lock:
            self._ready().insert_many(rows)
        return [str(row["log_id"]) for row in complete]

    def _complete_row(
        self,
        run_id: str,
        *,
        layer: str,
        status: str,
        payload_type: str | None = None,
        file_name: str | None = None,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
        duration_ms: int | None = None,
        records_processed: int | None = None,
        records_loaded: int | None = None,
        records_invalid: int | None = None,
        started_at: dt.datetime | None = None,
        finished_at: dt.datetime | None = None,
    ) -> dict[str, Any]:
        _check_counts(records_processed, records_loaded, records_invalid)
        log_id = new_run_id()
        finished_at = finished_at or (_now() if _check_status(status) in FINAL_STATUSES else None)
        return dict(
            {
                "log_id": log_id,
                "run_id": run_id,
                "payload_type": payload_type,
                "layer": _check_layer(layer),
                "file_name": file_name,
                "status": status,
                "message": message,
                "details": details,
                "duration_ms": duration_ms,
                "records_processed": records_processed,
                "records_loaded": records_loaded,
                "records_invalid": records_invalid,
                "started_at": started_at or finished_at or _now(),
                "finished_at": finished_at,
            }
        )

    @contextmanager
    def step(self, run_id: str, **start_kwargs: Any) -> Iterator[LogEntry]:
        """`with log.step(...) as entry:` completed on success, failed (with the error) on an exception;
        call `finish()` inside the block to choose another status or add counts."""
        entry = self.start(run_id, **start_kwargs)
        try:
            yield entry
        except BaseException as exc:
            if not entry.finished:
                self.finish(entry, "failed", message=f"{type(exc).__name__}: {exc}")
            raise
        if not entry.finished:
            self.finish(entry, "completed")

    def _full_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row with who wrote it, its message and details redacted, details as JSON text."""
        full = {
            "component": self.component,
            "user_name": self.user_name,
            "hostname": self.hostname,
            "loader_version": self.version,
            **row,
        }
        full["message"] = _clean_message(full.get("message"))
        full["details"] = _json(full.get("details"))
        return {name: full[name] for name in COLUMN_NAMES if name in full}

    def _insert(self, row: Mapping[str, Any]) -> None:
        full = self._full_row(row)
        with self._lock:
            self._ready().insert(full)

    # reading ------------------------------------------------------------------------------------

    def rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The rows of one run (or all), oldest first, as dicts; `details` parsed."""
        with self._lock:
            result = self._ready().select(run_id)
        for row in result:
            if isinstance(row["details"], str):
                row["details"] = json.loads(row["details"])
        return result


# -- dbt ---------------------------------------------------------------------------------------

_DBT_STATUS = {
    "success": "completed",
    "pass": "completed",
    "warn": "completed",
    "error": "failed",
    "fail": "failed",
    "runtime error": "failed",
    "partial success": "failed",
    "skipped": "skipped",
    "no-op": "skipped",
}
_SILVER_FOLDERS = {"staging", "intermediate"}
_GOLD_FOLDERS = {"marts"}


def record_dbt_results(
    warehouse_url: str,
    run_results_json_path: str | os.PathLike[str],
    run_id: str,
    *,
    schema: str | None = None,
    manifest_path: str | os.PathLike[str] | None = None,
) -> int:
    """One row per dbt node of `run_results.json` (component `dbt`); returns the number of rows written.

    layer: silver for staging / intermediate models (and seeds, snapshots), gold for marts; a test takes
    the layer of the model it tests. The folder comes from `manifest.json` next to run_results.json when it
    is there, else from the node's name (stg_ / int_ -> silver, anything else -> gold).
    status: success / pass / warn -> completed, error / fail / runtime error -> failed, skipped -> skipped.
    details: unique_id, resource type, dbt's status, rows affected, failures, adapter code, relation.
    """
    path = Path(run_results_json_path)
    results = json.loads(path.read_text(encoding="utf-8"))
    manifest = _load_manifest(Path(manifest_path) if manifest_path else path.with_name("manifest.json"))
    invocation = results.get("metadata", {}).get("invocation_id")
    dbt_version = results.get("metadata", {}).get("dbt_version")
    log = ProcessingLog(
        warehouse_url, schema=schema, component="dbt", version=f"dbt {dbt_version or 'unknown'}"
    )
    rows: list[dict[str, Any]] = []
    try:
        for result in results.get("results", []):
            unique_id = result.get("unique_id", "")
            dbt_status = str(result.get("status", "")).lower()
            started, finished = _dbt_timing(result)
            adapter = result.get("adapter_response") or {}
            details = {
                "unique_id": unique_id,
                "resource_type": unique_id.split(".", 1)[0],
                "dbt_status": dbt_status,
                "rows_affected": adapter.get("rows_affected"),
                "failures": result.get("failures"),
                "adapter_code": adapter.get("code"),
                "relation": result.get("relation_name"),
                "invocation_id": invocation,
            }
            execution = result.get("execution_time")
            rows.append(
                {
                    "run_id": run_id,
                    "layer": _dbt_layer(unique_id, manifest),
                    "status": _DBT_STATUS.get(dbt_status, "failed"),
                    "payload_type": unique_id.split(".", 1)[0],
                    "file_name": unique_id.rsplit(".", 1)[-1] if unique_id else None,
                    "message": result.get("message"),
                    "details": details,
                    "duration_ms": int(execution * 1000) if isinstance(execution, (int, float)) else None,
                    "started_at": started,
                    "finished_at": finished,
                }
            )
        written = len(log.write_many(rows))
    finally:
        log.close()
    return written


def _load_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _dbt_layer(unique_id: str, manifest: Mapping[str, Any]) -> str:
    nodes = manifest.get("nodes", {})
    node = nodes.get(unique_id)
    if node is not None and node.get("resource_type") in ("test", "unit_test"):
        tested = [n for n in node.get("depends_on", {}).get("nodes", []) if n in nodes]
        if tested:
            return _dbt_layer(tested[-1], manifest)
    if node is not None:
        resource_type = node.get("resource_type")
        if resource_type in ("seed", "snapshot"):
            return "silver"
        folders = set(node.get("fqn", [])[1:-1])
        if folders & _GOLD_FOLDERS:
            return "gold"
        if folders & _SILVER_FOLDERS:
            return "silver"
    resource_type, _, rest = unique_id.partition(".")
    if resource_type in ("seed", "snapshot"):
        return "silver"
    name = rest.rsplit(".", 1)[-1]
    if resource_type in ("test", "unit_test"):
        return "silver" if any(f"_{p}" in f"_{name}" for p in ("stg_", "int_")) else "gold"
    return "silver" if name.startswith(("stg_", "int_", "base_")) else "gold"


def _dbt_timing(result: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    starts, ends = [], []
    for timing in result.get("timing") or []:
        for key, bucket in (("started_at", starts), ("completed_at", ends)):
            value = timing.get(key)
            if value:
                bucket.append(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    return (min(starts) if starts else None, max(ends) if ends else None)


# -- internals ---------------------------------------------------------------------------------


def _dialect(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "bigquery":
        return "bigquery"
    raise ProcessingLogError(
        f"unsupported warehouse URL scheme {scheme!r} (expected postgresql:// or bigquery://)"
    )


def _check_identifier(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ProcessingLogError(f"invalid schema name {name!r}: letters, digits and _ only")


def _check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise ProcessingLogError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
    return layer


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise ProcessingLogError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    return status


def _check_counts(processed: int | None, loaded: int | None, invalid: int | None) -> None:
    if None not in (processed, loaded, invalid) and processed != loaded + invalid:
        raise ProcessingLogError(
            f"counts do not add up: processed {processed} != loaded {loaded} + invalid {invalid}"
        )


def _clean_message(message: str | None) -> str | None:
    if message is None:
        return None
    return redact(str(message).replace("\x00", "\\u0000"))[:4000]


def _json(details: Mapping[str, Any] | None) -> str | None:
    if details is None:
        return None
    text = json.dumps(redact(details), ensure_ascii=False, default=str, sort_keys=True)
    return text.replace("\\u0000", "\\\\u0000")  # PostgreSQL jsonb cannot hold NUL


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _already_exists(exc: Exception) -> bool:
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text


def iter_rows_as_text(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """One readable line per log row (for CLIs)."""
    for row in rows:
        what = row.get("file_name") or "(run)"
        counts = ""
        if row.get("records_processed") is not None:
            counts = (
                f" processed={row['records_processed']} loaded={row.get('records_loaded')} "
                f"invalid={row.get('records_invalid')}"
            )
        yield f"{row['status']:<10} {row.get('payload_type') or '-':<24} {what}{counts} {row.get('message') or ''}"


# -- writers: the only driver-specific code ------------------------------------------------------


class _Writer:
    """Creates the table, inserts and updates rows by log_id, reads rows back."""

    table: str

    def __init__(self, warehouse_url: str, schema: str) -> None:
        self.warehouse_url = warehouse_url
        self.schema = schema

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def connect(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def ensure_table(self) -> None:
        raise NotImplementedError

    def insert(self, row: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def insert_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self.insert(row)

    def update(self, log_id: str, values: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def select(self, run_id: str | None) -> list[dict[str, Any]]:
        raise NotImplementedError


class _PostgresWriter(_Writer):
    """psycopg2 in autocommit mode; `%s` parameters."""

    def __init__(self, warehouse_url: str, schema: str) -> None:
        super().__init__(warehouse_url, schema)
        self.table = f"{schema}.{TABLE}"
        self._conn: Any = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not getattr(self._conn, "closed", False)

    def connect(self) -> None:
        self._conn = connect(self.warehouse_url)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ensure_table(self) -> None:
        types = _TYPES["postgresql"]
        column_sql = ",\n    ".join(f"{name} {types[kind]}" for name, kind in COLUMNS)
        with self._conn.cursor() as cur:
            for statement in (
                f"create schema if not exists {self.schema}",
                f"create table if not exists {self.table} (\n    {column_sql}\n)",
            ):
                try:
                    cur.execute(statement)
                except Exception as exc:  # two processes creating it at once: the other one won
                    if not _already_exists(exc):
                        raise

    def insert(self, row: Mapping[str, Any]) -> None:
        names = list(row)
        with self._conn.cursor() as cur:
            cur.execute(
                f"insert into {self.table} ({', '.join(names)}) values ({', '.join(['%s'] * len(names))})",
                tuple(row[name] for name in names),
            )

    def update(self, log_id: str, values: Mapping[str, Any]) -> None:
        assignments = ", ".join(f"{name} = %s" for name in values)
        with self._conn.cursor() as cur:
            cur.execute(
                f"update {self.table} set {assignments} where log_id = %s", (*values.values(), log_id)
            )

    def select(self, run_id: str | None) -> list[dict[str, Any]]:
        sql = f"select {', '.join(COLUMN_NAMES)} from {self.table}"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " where run_id = %s"
            params = (run_id,)
        with self._conn.cursor() as cur:
            cur.execute(sql + " order by started_at, log_id", params)
            return [dict(zip(COLUMN_NAMES, row, strict=True)) for row in cur.fetchall()]


class _BigQueryWriter(_Writer):
    """google-cloud-bigquery with typed query parameters (BigQuery will not cast a NULL STRING to INT64);
    JSON details arrive as text and are stored with PARSE_JSON."""

    SERIALIZATION_RETRIES = 5

    def __init__(self, warehouse_url: str, schema: str) -> None:
        from loaders.destinations import BigQueryTarget

        super().__init__(warehouse_url, schema)
        self.target = BigQueryTarget.from_url(warehouse_url)
        self.table_id = self.target.table_id(schema, TABLE)
        self.table = f"`{self.table_id}`"
        self._client: Any = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self) -> None:
        self._client = self.target.client()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ensure_table(self) -> None:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.target.project}.{self.schema}")
        dataset.location = self.target.location
        self._client.create_dataset(dataset, exists_ok=True)
        types = _TYPES["bigquery"]
        table = bigquery.Table(
            self.table_id, schema=[bigquery.SchemaField(name, types[kind]) for name, kind in COLUMNS]
        )
        # runs are looked up by day and by component / run: prune partitions and blocks, not full scans
        table.time_partitioning = bigquery.TimePartitioning(field="started_at")
        table.clustering_fields = ["component", "run_id"]
        self._client.create_table(table, exists_ok=True)

    def insert(self, row: Mapping[str, Any]) -> None:
        self.insert_many([row])

    def insert_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(rows), BIGQUERY_INSERT_BATCH_ROWS):
            batch = rows[start : start + BIGQUERY_INSERT_BATCH_ROWS]
            names = [name for name in COLUMN_NAMES if any(name in row for row in batch)]
            params: list[Any] = []
            tuples = []
            for number, row in enumerate(batch):
                values = []
                for name in names:
                    param = f"{name}_{number}"
                    params.append(self._param(param, name, row.get(name)))
                    values.append(self._value(param, name))
                tuples.append(f"({', '.join(values)})")
            self._run(f"insert into {self.table} ({', '.join(names)}) values {', '.join(tuples)}", params)

    def update(self, log_id: str, values: Mapping[str, Any]) -> None:
        assignments = ", ".join(f"{name} = {self._value(name, name)}" for name in values)
        params = [self._param(name, name, value) for name, value in values.items()]
        params.append(self._param("where_log_id", "log_id", log_id))
        self._run(f"update {self.table} set {assignments} where log_id = @where_log_id", params)

    def select(self, run_id: str | None) -> list[dict[str, Any]]:
        columns = [f"to_json_string({n}) as {n}" if n == "details" else n for n in COLUMN_NAMES]
        sql = f"select {', '.join(columns)} from {self.table}"
        params = []
        if run_id is not None:
            sql += " where run_id = @run_id"
            params.append(self._param("run_id", "run_id", run_id))
        rows = self._run(sql + " order by started_at, log_id", params)
        return [{name: row[name] for name in COLUMN_NAMES} for row in rows]

    @staticmethod
    def _value(param: str, column: str) -> str:
        return f"parse_json(@{param})" if COLUMN_KINDS[column] == "json" else f"@{param}"

    @staticmethod
    def _param(param: str, column: str, value: Any) -> Any:
        from google.cloud import bigquery

        kind = COLUMN_KINDS[column]
        bq_type = "STRING" if kind == "json" else _TYPES["bigquery"][kind]
        return bigquery.ScalarQueryParameter(param, bq_type, value)

    def _run(self, sql: str, params: list[Any]) -> list[Any]:
        from google.api_core.exceptions import BadRequest
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=params)
        for attempt in range(self.SERIALIZATION_RETRIES):
            try:
                return list(self._client.query(sql, job_config=config).result())
            except BadRequest as exc:
                # two runs updating the log at once: BigQuery aborts one DML statement; run it again
                if "concurrent update" not in str(exc).lower() or attempt == self.SERIALIZATION_RETRIES - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        return []

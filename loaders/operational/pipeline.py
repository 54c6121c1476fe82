"""Operational PostgreSQL -> warehouse bronze, with dlt.

Why it is built this way:
- dlt's sql_database source, pyarrow backend, hands dlt whole Arrow tables, and the Postgres destination
  lands them with COPY from CSV files: the row-by-row path was ~50x slower here. On BigQuery
  (WAREHOUSE=bigquery) the same Arrow tables go as Parquet files through load jobs (loaders/destinations.py).
- The rows are **read with COPY**, not fetched row by row: sql_database keeps reflecting the tables,
  making the column hints and building each SELECT with its incremental WHERE, but its table loader is
  `copy_backend.PostgresCopyTableLoader`, which runs that SELECT as `COPY (...) TO STDOUT (FORMAT csv)` and
  parses the stream with pyarrow's CSV reader into the Arrow types dlt's pyarrow backend would have built
  (same bronze types and values, tested). psycopg2 rows -> Python objects -> Arrow cost ~3x the whole raw
  COPY pipe. dlt's own row path remains the fallback, per table, for a column type COPY's text cannot be
  read back exactly (json, binary, time, floats) or a source that is not PostgreSQL; the processing log's
  `source_reads` says which path each table took. The same reader serves both warehouses.
- Every table is **incremental on updated_at** and **merged on id**. A `lag` window re-reads the last
  days on every run, so rows that arrive late with an older updated_at (replica lag, clock skew) are still
  caught. A re-read row that equals its bronze version in every column is dropped before loading
  (`bronze_versions`): bronze keeps it with the `_loaded_at` of the run that last changed it, so a quiet
  table does not look freshly loaded to `dbt source freshness` and the nightly job does not rebuild what
  sits below it. The processing log counts those rows per table (`unchanged_rows_skipped`).
- On PostgreSQL, a table whose bronze copy is **missing or empty** (the first load, a full refresh) is
  **appended** instead: a merge would COPY into a staging table, then delete and insert everything, and
  give exactly the same rows, because one extraction reads each id once (a single snapshot query). Later
  runs merge. A killed first load is finished by the next run like any package. dlt marks a job done
  after its COPY committed, so a run killed in between replays that COPY: after finishing such packages,
  `drop_replayed_rows` deletes the second copy of each `_dlt_id`. (bronze has no UNIQUE index on `_dlt_id`:
  maintaining it row by row doubled the COPY time of a first load, for a case only a resume can produce.)
- dlt stores the incremental cursor in the destination together with the data of the same load, so a
  run killed at any point either committed both or neither; the next run finishes the packages it left
  first (explicitly: dlt's run() would load only those and skip this run's extraction), then extracts.
- **Hard deletes** cannot be seen by an updated_at cursor. Each run reconciles primary keys: the ids that
  are in bronze but no longer at the source are written to `source_deletions` (replaced whole every run,
  so it is always the complete, current list). Staging models anti-join it; bronze keeps the last version.
  On PostgreSQL the source ids are COPY-piped into a temporary table of the warehouse and anti-joined
  there (no id passes through Python); on BigQuery they are compared in Python. A table with no bronze
  rows yet is skipped: nothing can have been deleted from it. A deletion keeps the `detected_at` of the run
  that first saw it.
- Speed (docs/benchmarks.md): besides the COPY reader and the append above, on PostgreSQL each Arrow
  table (CHUNK_ROWS) is written as a finished CSV load file at extract and imported into dlt's package
  (`dlt_fast_paths.csv_load_files`): no Parquet file at extract, no rewrite at normalize. So a big table
  is several load jobs that dlt's load workers COPY in parallel: one COPY uses one server core, and a
  single-file `order_items` COPY was the longest step of a first load. Each job is its own transaction,
  which the guarantees above already allow for (a run killed between two jobs is finished by the next
  run; a replayed job's rows are dropped by `_dlt_id`). `dlt_fast_paths` also replaces dlt's two slowest
  per-value steps (UTC timestamps in CSV, `_dlt_id`) by vectorized ones with the same instants, and writes
  dlt's Parquet files (BigQuery) without dictionary encoding; load files are not gzipped. A table that is
  appended through CSV load files (a first load on PostgreSQL) keeps its values as the text PostgreSQL's
  COPY wrote (`PostgresCopyTableLoader.with_text_values`), except the cursor and the primary key, which
  dlt reads: they go from one COPY to the other without being parsed and formatted again (dlt still sees
  the typed schema, so bronze's columns are the same). Merged tables are read typed, as `bronze_versions`
  compares their values. What is left is CPU: the server's COPY of a wider CSV than the source's
  (`_loaded_at`, `_dlt_load_id`, `_dlt_id`).
- Empty strings: dlt's COPY of CSV files lands an empty string as NULL (FORCE_NULL on nullable columns),
  whichever reader is used.
- Every row version carries `_loaded_at`, the time the run that loaded it extracted it: dbt's incremental
  models filter on it, never on updated_at, so a late update with an old updated_at is still picked up
  downstream.
- Bronze's lookup indexes (`orders`, `order_items`: by id / order_id, and by loaded_at), which dbt's nightly
  order models find and read changed orders by, are dbt's: declared on the sources and built by dbt when
  missing (macros/incremental/source_lookup_indexes.sql), whichever tool loaded bronze. Loading does not
  build them.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import dlt
import psycopg2
import pyarrow as pa
from dlt.common.configuration.specs import ConnectionStringCredentials
from dlt.sources.sql_database import sql_database

from loaders.destinations import BigQueryTarget, dlt_destination, warehouse_kind
from loaders.dlt_fast_paths import (
    csv_load_files,
    csv_load_folder,
    dlt_fast_paths,
    environment_defaults,
    load_file_rotation,
)
from loaders.operational.bronze_versions import skip_unchanged
from loaders.operational.copy_backend import PostgresCopyTableLoader
from loaders.postgres import drop_views_on, relation_exists
from loaders.processing_log import ProcessingLog, new_run_id

TABLES: tuple[str, ...] = (
    "suppliers",
    "customers",
    "products",
    "pricing",
    "inventory",
    "orders",
    "order_items",
)
DEFAULT_LAG_SECONDS = 3 * 24 * 3600
DELETIONS_TABLE = "source_deletions"
# in the pipeline's working folder while a resumed load may have COPYed rows twice (see drop_replayed_rows)
REPLAY_CHECK_MARKER = "replay-check-pending"
# rows per Arrow table the source hands dlt (the COPY reader rounds up to whole CSV blocks, ~170k rows of
# order_items): one CSV load file (one COPY job) each on PostgreSQL
CHUNK_ROWS = 100_000
# rows per dlt file on PostgreSQL for what still goes through dlt's writers (source_deletions; every table
# with write_csv_load_files=False): one file per chunk, as the CSV load files are
LOAD_FILE_MAX_ROWS = 100_000


@dlt.source(name="operational", max_table_nesting=0)
def operational_source(
    credentials: ConnectionStringCredentials | str = dlt.secrets.value,
    warehouse_credentials: ConnectionStringCredentials | str | None = None,
    bronze_schema: str = "bronze_operational",
    table_names: Sequence[str] = TABLES,
    lag_seconds: float = DEFAULT_LAG_SECONDS,
    chunk_size: int = CHUNK_ROWS,
    reconcile_deletes: bool = True,
    append_tables: Collection[str] = (),
    read_with_copy: bool = True,
    unchanged_rows_skipped: dict[str, int] | None = None,
    skip_unchanged_rows: bool = True,
    csv_load_folder: Path | None = None,
) -> Iterator[Any]:
    """The seven operational tables, merged on id, plus the list of rows deleted at the source.

    `warehouse_credentials` is read to reconcile deletions (bronze ids vs. source ids) and to drop re-read
    rows that equal their bronze version (`bronze_versions`; counted per table in `unchanged_rows_skipped`);
    without it no deletions are detected and every re-read row is loaded again. `skip_unchanged_rows` must
    be False when the run replaces bronze (a full refresh drops the tables after they were compared).
    `append_tables` are appended instead of merged: only for tables whose bronze copy is empty (see
    `empty_bronze_tables`), where both give the same rows. `read_with_copy=False` reads with dlt's own
    pyarrow backend (row by row) instead of COPY: same rows and types, slower.
    """
    loaded_at = pa.scalar(dt.datetime.now(dt.UTC), type=pa.timestamp("us", tz="UTC"))
    if unchanged_rows_skipped is None:
        unchanged_rows_skipped = {}
    database = sql_database(
        credentials=_sqlalchemy_url(_url(credentials)),
        schema="public",
        table_names=list(table_names),
        backend="pyarrow",
        chunk_size=chunk_size,
        reflection_level="full_with_precision",
        table_loader_class=(
            # a table appended through CSV load files keeps its values as COPY's text (copy_backend)
            PostgresCopyTableLoader.with_text_values(append_tables if csv_load_folder else ())
            if read_with_copy
            else None
        ),
    )
    for name in table_names:
        resource = database.resources[name]
        resource.apply_hints(
            write_disposition="append" if name in append_tables else "merge",
            primary_key="id",
            incremental=dlt.sources.incremental("updated_at", lag=lag_seconds),
        )
        if skip_unchanged_rows and warehouse_credentials is not None and name not in append_tables:
            # re-read rows equal to bronze keep their `_loaded_at`: a quiet table must not look fresh
            resource.add_map(
                skip_unchanged(_url(warehouse_credentials), bronze_schema, name, unchanged_rows_skipped)
            )
        resource.add_map(_stamp_loaded_at(loaded_at))
        if csv_load_folder is not None:
            resource.add_step(csv_load_files(csv_load_folder))
        yield resource.parallelize()
    if reconcile_deletes and warehouse_credentials is not None:
        yield source_deletions(
            _url(credentials), _url(warehouse_credentials), bronze_schema, tuple(table_names), loaded_at
        )


def _stamp_loaded_at(loaded_at: pa.Scalar) -> Any:
    def stamp(table: pa.Table) -> pa.Table:
        return table.append_column("_loaded_at", pa.repeat(loaded_at, table.num_rows))

    return stamp


@dlt.resource(name=DELETIONS_TABLE, write_disposition="replace", primary_key=("table_name", "id"))
def source_deletions(
    operational_url: str,
    warehouse_url: str,
    bronze_schema: str,
    table_names: tuple[str, ...],
    detected_at: pa.Scalar,
) -> Iterator[pa.Table]:
    """Primary keys present in bronze but gone from the source: the complete list, replaced every run.

    `detected_at` is when a deletion was first seen: a deletion listed by an earlier run keeps its time, so
    the table's freshness (and the nightly dbt job) moves only when a new deletion appears.
    """
    deleted_ids = (
        _deleted_ids_postgres if warehouse_kind(warehouse_url) == "postgres" else _deleted_ids_bigquery
    )
    first_seen = _previous_detections(warehouse_url, bronze_schema)
    now = detected_at.as_py()
    tables = []
    for name in table_names:
        deleted = deleted_ids(operational_url, warehouse_url, bronze_schema, name)
        if deleted:
            tables.append(
                pa.table(
                    {
                        "table_name": pa.array([name] * len(deleted), pa.string()),
                        "id": pa.array(deleted, pa.int64()),
                        "detected_at": pa.array(
                            [first_seen.get((name, key), now) for key in deleted], detected_at.type
                        ),
                    }
                )
            )
    if tables:
        yield pa.concat_tables(tables)
    else:
        yield pa.table(
            {
                "table_name": pa.array([], pa.string()),
                "id": pa.array([], pa.int64()),
                "detected_at": pa.array([], detected_at.type),
            }
        )


def _previous_detections(warehouse_url: str, dataset: str) -> dict[tuple[str, int], dt.datetime]:
    """When each deletion listed in bronze's `source_deletions` was first detected (empty if none)."""
    sql = "select table_name, id, detected_at from {table}"
    if warehouse_kind(warehouse_url) == "postgres":
        conn = psycopg2.connect(warehouse_url)
        try:
            with conn.cursor() as cur:
                table = f'"{dataset}"."{DELETIONS_TABLE}"'
                if not _has_rows(cur, table):
                    return {}
                cur.execute(sql.format(table=table))
                return {(name, key): at for name, key, at in cur.fetchall()}
        finally:
            conn.close()
    target = BigQueryTarget.from_url(warehouse_url)
    client = target.client()
    try:
        if not target.table_exists(client, dataset, DELETIONS_TABLE):
            return {}
        rows = client.query(sql.format(table=target.quoted(dataset, DELETIONS_TABLE))).result()
        return {(name, key): at for name, key, at in rows}
    finally:
        client.close()


def _deleted_ids_postgres(operational_url: str, warehouse_url: str, dataset: str, table: str) -> list[int]:
    """Bronze ids gone from the source, found by the warehouse: the source ids are COPY-piped into a temp
    table and anti-joined there, so no id passes through Python (sets of every id cost seconds per 1M)."""
    warehouse = psycopg2.connect(warehouse_url)
    try:
        with warehouse.cursor() as cur:
            bronze = f'"{dataset}"."{table}"'
            if not _has_rows(cur, bronze):
                return []  # nothing loaded yet, so nothing can have been deleted
            cur.execute("create temporary table source_ids (id bigint) on commit drop")
            source = psycopg2.connect(operational_url)
            try:
                with source.cursor() as source_cur:
                    # a dropped source table: every id is gone
                    if relation_exists(source_cur, f'"public"."{table}"'):
                        _copy_pipe(source_cur, f'copy (select id from "public"."{table}") to stdout', cur)
            finally:
                source.close()
            cur.execute("analyze source_ids")
            cur.execute(
                f"select distinct b.id from {bronze} as b "
                "where not exists (select 1 from source_ids as s where s.id = b.id) order by b.id"
            )
            deleted = [row[0] for row in cur.fetchall()]
        warehouse.commit()
        return deleted
    finally:
        warehouse.close()


def _copy_pipe(source_cur: Any, copy_out: str, target_cur: Any) -> None:
    """COPY ... TO STDOUT on one connection streamed, through an OS pipe, into COPY source_ids FROM STDIN."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            try:
                source_cur.copy_expert(copy_out, sink)
            except BaseException as exc:  # re-raised by the consumer's thread below
                failure.append(exc)

    producer = threading.Thread(target=produce, name="source-ids", daemon=True)
    producer.start()
    try:
        with os.fdopen(read_fd, "rb") as stream:
            target_cur.copy_expert("copy source_ids (id) from stdin", stream)
    finally:
        producer.join()
    if failure:
        raise failure[0]


def _has_rows(cur: Any, qualified_table: str) -> bool:
    if not relation_exists(cur, qualified_table):
        return False
    cur.execute(f"select exists (select 1 from {qualified_table})")
    return bool(cur.fetchone()[0])


def _deleted_ids_bigquery(operational_url: str, warehouse_url: str, dataset: str, table: str) -> list[int]:
    """Bronze ids gone from the source, compared in Python (BigQuery cannot be COPY-piped into)."""
    target = BigQueryTarget.from_url(warehouse_url)
    client = target.client()
    try:
        if not target.table_exists(client, dataset, table):
            return []
        rows = client.query(f"select id from {target.quoted(dataset, table)}").result(page_size=100_000)
        bronze_ids = {row[0] for row in rows}
    finally:
        client.close()
    if not bronze_ids:
        return []
    return sorted(bronze_ids - _ids(operational_url, "public", table))


def _ids(url: str, schema: str, table: str) -> set[int]:
    """All primary keys of one table (a missing table has none), streamed with a server-side cursor."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            if not relation_exists(cur, f'"{schema}"."{table}"'):
                return set()
        with conn.cursor(name="ids") as cur:
            cur.itersize = 200_000
            cur.execute(f'select id from "{schema}"."{table}"')
            return {row[0] for row in cur}
    finally:
        conn.close()


def empty_bronze_tables(warehouse_url: str, bronze_schema: str, table_names: Sequence[str]) -> set[str]:
    """Tables whose bronze copy is missing or empty on a PostgreSQL warehouse (appending them is a merge).

    BigQuery keeps merging every table: its behaviour is unchanged, and its loads are not COPY-bound.
    """
    if warehouse_kind(warehouse_url) != "postgres":
        return set()
    conn = psycopg2.connect(warehouse_url)
    try:
        with conn.cursor() as cur:
            return {name for name in table_names if not _has_rows(cur, f'"{bronze_schema}"."{name}"')}
    finally:
        conn.close()


def drop_replayed_rows(warehouse_url: str, bronze_schema: str, table_names: Sequence[str]) -> dict[str, int]:
    """Delete the second copy of rows that a resumed load COPYed twice; returns the count per table.

    dlt marks a load job done after its COPY committed: a run killed in between replays that COPY when the
    package is finished, and an append (a first load) would then hold those rows twice, with the same
    `_dlt_id` (written into the file before the load). Only run after such a resume, so normal runs pay
    nothing for it. Merged tables never get duplicates (the merge deduplicates on the primary key).
    """
    removed: dict[str, int] = {}
    conn = psycopg2.connect(warehouse_url)
    try:
        with conn.cursor() as cur:
            for name in table_names:
                table = f'"{bronze_schema}"."{name}"'
                if not _has_rows(cur, table):
                    continue
                cur.execute(
                    f"delete from {table} as later using {table} as first "
                    "where later._dlt_id = first._dlt_id and later.ctid > first.ctid"
                )
                if cur.rowcount:
                    removed[name] = cur.rowcount
        conn.commit()
    finally:
        conn.close()
    return removed


def loaded_row_counts(pipeline: Any) -> dict[str, int]:
    """Row versions per table that the pipeline's last `run()` loaded (dlt's own tables left out).

    Counted at extract, as the rows handed to dlt: normalize counts 0 for the CSV files that
    `csv_load_files` imports (it does not read them), and every extracted row is loaded.
    """
    extract_info = pipeline.last_trace.last_extract_info
    counts: dict[str, int] = {}
    for steps in extract_info.metrics.values() if extract_info else ():
        for step in steps:
            for table, metrics in step["table_metrics"].items():
                if not table.startswith("_dlt"):
                    counts[table] = counts.get(table, 0) + metrics.items_count
    return counts


def _sqlalchemy_url(url: str) -> str:
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; we ship psycopg2."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgresql", "postgres") else url


def _url(credentials: ConnectionStringCredentials | str) -> str:
    return credentials if isinstance(credentials, str) else credentials.to_native_representation()


def load_operational(
    operational_url: str,
    warehouse_url: str,
    *,
    bronze_schema: str = "bronze_operational",
    pipelines_dir: str | None = None,
    lag_seconds: float = DEFAULT_LAG_SECONDS,
    full_refresh: bool = False,
    reconcile_deletes: bool = True,
    append_when_empty: bool = True,
    read_with_copy: bool = True,
    write_csv_load_files: bool = True,
    progress: str = "log",
) -> Any:
    """Run the pipeline once; returns dlt's LoadInfo. Raises on any failed job (nothing half-applied).

    `append_when_empty=False` merges even into empty bronze tables (the slower path; same rows);
    `read_with_copy=False` reads the source with dlt's row-by-row pyarrow backend (slower; same rows);
    `write_csv_load_files=False` sends the Arrow tables through dlt's Parquet files and normalize instead
    of writing the CSV load files at extract (PostgreSQL; slower; same rows, columns and dlt schema).
    """
    # Arrow tables get dlt's load id and row id too, so bronze rows can be traced to their load.
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID", "true")
    os.environ.setdefault("EXTRACT__WORKERS", "4")
    # no UNIQUE index on `_dlt_id`: maintaining it row by row doubled the COPY time of a first load;
    # what it guarded against (a COPY replayed after its commit) is undone by drop_replayed_rows
    destination = dlt_destination(warehouse_url, unique_dlt_id=False)
    pipeline = dlt.pipeline(
        pipeline_name=f"operational_to_{bronze_schema}",
        **destination.pipeline_kwargs,
        dataset_name=bronze_schema,
        pipelines_dir=pipelines_dir,
        progress=progress,
    )
    log = ProcessingLog(warehouse_url, component="operational")
    entry = log.start(
        new_run_id(), layer="bronze", payload_type="operational", details={"schema": bronze_schema}
    )
    try:
        with (
            environment_defaults(load_file_rotation(destination.kind, LOAD_FILE_MAX_ROWS)),
            dlt_fast_paths(),
            csv_load_folder(pipeline) as csv_folder,
        ):
            replay_check = Path(pipeline.working_dir) / REPLAY_CHECK_MARKER
            if pipeline.has_pending_data:
                # a killed run left packages behind: finish them first, because run() would load only those
                # and skip extracting this run's data. The marker outlives a crash during this resume, so
                # whichever run completes it also removes the rows it may have COPYed twice.
                replay_check.touch()
                pipeline.normalize()
                pipeline.load().raise_on_failed_jobs()
            if replay_check.exists():
                if destination.kind == "postgres":
                    drop_replayed_rows(warehouse_url, bronze_schema, (*TABLES, DELETIONS_TABLE))
                replay_check.unlink()
            # decided after the resume above, which may have filled a table; a full refresh drops every table
            if not append_when_empty:
                append_tables: set[str] = set()
            elif full_refresh and destination.kind == "postgres":
                append_tables = set(TABLES)
            else:
                append_tables = empty_bronze_tables(warehouse_url, bronze_schema, TABLES)
            PostgresCopyTableLoader.reads.clear()
            unchanged_rows_skipped: dict[str, int] = {}
            source = operational_source(
                credentials=operational_url,
                warehouse_credentials=warehouse_url,
                bronze_schema=bronze_schema,
                lag_seconds=lag_seconds,
                chunk_size=CHUNK_ROWS,  # read at call time (a default argument is bound once, at import)
                reconcile_deletes=reconcile_deletes,
                append_tables=append_tables,
                read_with_copy=read_with_copy,
                unchanged_rows_skipped=unchanged_rows_skipped,
                skip_unchanged_rows=not full_refresh,  # bronze is dropped: every row must be loaded
                csv_load_folder=csv_folder
                if write_csv_load_files and destination.kind == "postgres"
                else None,
            )
            # dlt drops bronze's tables, which dbt's views on them would block
            views_dropped = drop_views_on(warehouse_url, bronze_schema) if full_refresh else []
            info = pipeline.run(
                source,
                **destination.run_kwargs,
                refresh="drop_sources" if full_refresh else None,
            )
            info.raise_on_failed_jobs()
    except Exception as exc:
        log.finish(entry, "failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        log.close()
        raise
    row_counts = loaded_row_counts(pipeline)
    rows = sum(row_counts.values())
    log.finish(
        entry,
        "completed",
        message=f"{rows:,} row version(s) loaded into {bronze_schema}; appended (empty before): "
        + (", ".join(sorted(append_tables)) or "none"),
        details={
            "schema": bronze_schema,
            "row_counts": row_counts,
            "load_ids": list(info.loads_ids),
            "full_refresh": full_refresh,
            "views_dropped": views_dropped,
            "source_reads": dict(sorted(PostgresCopyTableLoader.reads.items())),
            # re-read (lag window) rows equal to bronze, not loaded again
            "unchanged_rows_skipped": dict(sorted(unchanged_rows_skipped.items())),
        },
        records_processed=rows,
        records_loaded=rows,
        records_invalid=0,
    )
    log.close()
    return info

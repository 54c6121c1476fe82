"""Benchmark harness (`make bench`): every stage of the nightly run next to the engine's own bulk path.

Why ratios: absolute times depend on the machine and on whoever else uses it; the ratio of a loader to
the raw bulk path measured in the same run, on the same server and the same data, does not (much). Each
measured step runs in a child process, so its peak RSS is its own and imports are paid outside the timer.

Stages (each timed `--runs` times, median reported):
  gcs          GCS payload JSON -> Postgres bronze (`load_gcs`) vs. DuckDB read_json -> CSV -> COPY
  operational  operational Postgres -> bronze (`load_operational`, full load into an empty schema)
               vs. `COPY (select * from t) TO STDOUT` piped into `COPY t FROM STDIN` (two connections)
  facebook     the Graph API double (loaders/facebook/graph_double.py) -> bronze, full back-fill
  dbt          `dbt build --full-refresh`, then the nightly job of `warehouse run` (loaders/nightly.py:
               `dbt source freshness`, then `dbt build` of what changed since the previous night's
               state): a no-op night, then nights after +0.1 %, +1 %, +10 % new or changed orders
               (loaded by the operational loader first);
               model time (sum of the models' execution_time in run_results.json) is reported apart
               from the wall time, whose remainder is dbt's fixed cost (start-up, parsing, tests).

    .venv/bin/python bench/run.py                              # 100k order lines, 100 MB of JSON
    .venv/bin/python bench/run.py --orders 1M --gcs-mb 1024    # the scale of the targets in issue 6
    .venv/bin/python bench/run.py --orders 20k --gcs-mb 4 --runs 1 --stages gcs,operational,dbt   # smoke

Everything runs on a throw-away embedded PostgreSQL (own state folder under --work-dir, free port);
the summary goes to bench/results/latest.json (or --output).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "bench"))

STAGES = ("gcs", "operational", "facebook", "dbt")
DEFAULT_OUTPUT = PROJECT_DIR / "bench" / "results" / "latest.json"
GCS_FILE_MB = (
    100  # the payload is split in files of at most this size (a realistic drop, and a glob for DuckDB)
)
GCS_TYPE = "customer_interactions"
CHANGE_LEVELS = (0.001, 0.01, 0.10)
DAY_HOURS = 24


def parse_count(text: str) -> int:
    """100k, 1M, 10M, 250000."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- child processes -------------------------------------------------------------------------------
# Each measured step is `python bench/run.py _child <step> <json args>`; it prints one JSON line.


def _child_gcs_loader(args: dict[str, Any]) -> dict[str, Any]:
    from loaders.gcs.pipeline import load_gcs

    started = time.monotonic()
    result = load_gcs(
        args["bucket"],
        args["warehouse_url"],
        bronze_schema=args["schema"],
        work_dir=args["work_dir"],
        payload_types=[GCS_TYPE],
    )
    seconds = time.monotonic() - started
    failed = [f.message for f in result.files if f.status != "completed"]
    if failed:
        raise RuntimeError(f"GCS load did not complete every file: {failed[:3]}")
    return {"seconds": seconds, "rows": result.records_loaded, "rejected": result.records_rejected}


def _child_gcs_raw(args: dict[str, Any]) -> dict[str, Any]:
    """DuckDB read_json -> CSV -> COPY over `copies` psycopg2 connections: the engines' own bulk paths, nothing else.

    With `with_record_json`, every row also carries its record as JSON text, as bronze keeps `_raw_json`;
    with `with_lineage` as well, the lineage columns every bronze row carries (issue 2's contract: source
    file, generation, content hash, run, load time, record number, and the record order and dlt ids the
    loader adds), same types and about the same widths: the same engines' speed for exactly bronze's
    columns, the ceiling of any loader that keeps that contract. Lineage values are cheap stand-ins (the
    file name DuckDB reports, constants, digits of a hash of the row: no window, so DuckDB streams): it is
    the bytes and columns COPY writes that count.
    """
    import duckdb
    import psycopg2

    started = time.monotonic()
    con = duckdb.connect()
    con.execute("set threads to 2")
    source = f"read_json({args['files']!r}, format='newline_delimited')"
    described = con.execute(f"describe select * from {source}").fetchall()
    select, ddl = [], []
    with_lineage = bool(args.get("with_lineage"))
    if with_lineage:  # the same rows, plus the file each came from
        source = f"read_json({args['files']!r}, format='newline_delimited', filename = true)"
    for name, kind, *_ in described:
        quoted = '"' + name.replace('"', '""') + '"'
        if "[]" in kind or kind.startswith(("STRUCT", "MAP", "JSON")):
            select.append(f"cast(to_json({quoted}) as varchar) as {quoted}")
            ddl.append(f"{quoted} jsonb")
        else:
            select.append(quoted)
            ddl.append(f"{quoted} {_pg_type(kind)}")
    record = "record"
    if with_lineage:  # the record alone, without the file name read_json added
        names = [name for name, *_ in described]
        record = "struct_pack(" + ", ".join(f'"{n}" := record."{n}"' for n in names) + ")"
    if args.get("with_record_json") or with_lineage:
        select.append(f"cast(to_json({record}) as varchar) as _raw_json")
        ddl.append("_raw_json text")
    if with_lineage:
        select += [
            "cast(hash(record) % 1000000 as bigint) as _record_number",
            "'file://' || filename as _source_file",
            "1764000000123456789 as _source_generation",
            f"'{'0123456789abcdef' * 4}' as _content_hash",
            "'5f0c7a4e-2d1b-4c3a-9e8f-7a6b5c4d3e2f' as _run_id",
            "timestamptz '2026-11-24 14:00:00.123456+00' as _loaded_at",
            "'01764000000123456789:' || lpad(cast(hash(record) % 1000000000000 as varchar), 12, '0')"
            " as _record_order",
            "'1764000000.123456' as _dlt_load_id",
            "substr(cast(hash(record) as varchar), 1, 14) as _dlt_id",
        ]
        ddl += [
            "_record_number bigint",
            "_source_file text",
            "_source_generation bigint",
            "_content_hash text",
            "_run_id text",
            "_loaded_at timestamptz",
            "_record_order text",
            "_dlt_load_id text",
            "_dlt_id text",
        ]
    copies = int(args["copies"])
    if copies == 1:  # one CSV file, one COPY: the raw path of every round before stop 20
        target = Path(args["work_dir"]) / "raw.csv"
        options = "header false"
    else:  # DuckDB splits its output at row boundaries; the parts are shared among `copies` connections
        target = Path(args["work_dir"]) / "raw-csv"
        part_bytes = max(1 << 20, sum(os.path.getsize(f) for f in args["files"]) // (copies * 8))
        options = f"header false, file_size_bytes {part_bytes}"
    con.execute(f"copy (select {', '.join(select)} from {source} as record) to '{target}' ({options})")
    con.close()
    csv_parts = [target] if copies == 1 else sorted(target.glob("*.csv"))
    conn = psycopg2.connect(args["warehouse_url"])
    try:
        with conn.cursor() as cur:
            cur.execute(f"drop table if exists {args['table']}")
            cur.execute(f"create table {args['table']} ({', '.join(ddl)})")
        conn.commit()
    finally:
        conn.close()
    queue = list(reversed(csv_parts))
    lock = threading.Lock()

    def copy_parts() -> int:
        copied = 0
        conn = psycopg2.connect(args["warehouse_url"])
        try:
            with conn.cursor() as cur:
                while True:
                    with lock:
                        if not queue:
                            break
                        part = queue.pop()
                    with open(part, "rb") as handle:
                        cur.copy_expert(
                            f"copy {args['table']} from stdin with (format csv)", handle, size=1 << 20
                        )
                    copied += cur.rowcount
            conn.commit()
        finally:
            conn.close()
        return copied

    with ThreadPoolExecutor(max_workers=copies) as pool:
        rows = sum(pool.map(lambda _: copy_parts(), range(copies)))
    seconds = time.monotonic() - started
    for part in csv_parts:
        part.unlink()
    if copies > 1:
        target.rmdir()
    return {"seconds": seconds, "rows": rows, "copies": copies, "csv_parts": len(csv_parts)}


def _pg_type(duckdb_type: str) -> str:
    mapping = {
        "VARCHAR": "text",
        "BIGINT": "bigint",
        "INTEGER": "integer",
        "UBIGINT": "numeric",
        "DOUBLE": "double precision",
        "FLOAT": "real",
        "BOOLEAN": "boolean",
        "TIMESTAMP": "timestamp",
        "TIMESTAMP WITH TIME ZONE": "timestamptz",
        "DATE": "date",
    }
    return mapping.get(duckdb_type, "text")


def _child_operational_loader(args: dict[str, Any]) -> dict[str, Any]:
    from loaders.operational.pipeline import load_operational, loaded_row_counts

    started = time.monotonic()
    info = load_operational(
        args["operational_url"],
        args["warehouse_url"],
        bronze_schema=args["schema"],
        pipelines_dir=args["pipelines_dir"],
        progress="log",
    )
    seconds = time.monotonic() - started
    counts = loaded_row_counts(info.pipeline)
    rows = sum(counts.values())
    return {"seconds": seconds, "rows": rows}


def _child_operational_raw(args: dict[str, Any]) -> dict[str, Any]:
    """Per table: COPY (select *) TO STDOUT on the source, piped into COPY FROM STDIN on the warehouse."""
    import psycopg2

    from loaders.operational.pipeline import TABLES

    source = psycopg2.connect(args["operational_url"])
    target = psycopg2.connect(args["warehouse_url"])
    rows = 0
    moved = 0
    started = time.monotonic()
    try:
        with target.cursor() as cur:
            cur.execute(f"drop schema if exists {args['schema']} cascade; create schema {args['schema']}")
        for table in TABLES:
            with source.cursor() as cur:
                cur.execute(
                    "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
                    "where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped "
                    "order by a.attnum",
                    (f"public.{table}",),
                )
                ddl = ", ".join(f'"{name}" {kind}' for name, kind in cur.fetchall())
            with target.cursor() as cur:
                cur.execute(f"create table {args['schema']}.{table} ({ddl})")
            read_fd, write_fd = os.pipe()
            counter = _CountingReader(os.fdopen(read_fd, "rb", buffering=1 << 20))
            errors: list[BaseException] = []

            def produce(
                table: str = table, write_fd: int = write_fd, errors: list[BaseException] = errors
            ) -> None:
                try:
                    with os.fdopen(write_fd, "wb", buffering=1 << 20) as out, source.cursor() as cur:
                        cur.copy_expert(f"copy (select * from public.{table}) to stdout", out)
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            producer = threading.Thread(target=produce)
            producer.start()
            with target.cursor() as cur:
                cur.copy_expert(f"copy {args['schema']}.{table} from stdin", counter, size=1 << 20)
                rows += cur.rowcount
            producer.join()
            counter.close()
            if errors:
                raise errors[0]
            moved += counter.bytes
        target.commit()
    finally:
        source.close()
        target.close()
    return {"seconds": time.monotonic() - started, "rows": rows, "bytes": moved}


class _CountingReader:
    """File-like wrapper that counts the bytes COPY reads (the size of the data moved, as COPY text)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bytes += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.stream.readline(size)
        self.bytes += len(data)
        return data

    def close(self) -> None:
        self.stream.close()


def _child_facebook_loader(args: dict[str, Any]) -> dict[str, Any]:
    from loaders.facebook.graph_double import serve
    from loaders.facebook.pipeline import load_facebook

    with serve(args["operational_url"], accounts=args.get("accounts")) as double:
        kwargs = double.loader_kwargs()
        started = time.monotonic()
        result = load_facebook(
            args["warehouse_url"],
            **kwargs,
            pipelines_dir=args["pipelines_dir"],
            bronze_schema=args["schema"],
            full_refresh=True,
            progress=None,
            processing_log=False,
        )
        seconds = time.monotonic() - started
    rows = sum(sum(per.values()) if isinstance(per, dict) else int(per) for per in result.stats.rows.values())
    return {
        "seconds": seconds,
        "rows": rows,
        "accounts": len(kwargs["account_ids"]),
        "days": (kwargs["today"] - kwargs["start_date"]).days + 1,
    }


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "gcs_loader": _child_gcs_loader,
    "gcs_raw": _child_gcs_raw,
    "operational_loader": _child_operational_loader,
    "operational_raw": _child_operational_raw,
    "facebook_loader": _child_facebook_loader,
}


# Modules a loader imports lazily, on first use inside the timed call, imported before it like the loader's
# own modules: pyarrow imports pandas on its first conversion of a Python value (pa.scalar, pa.array), 0.5-0.7 s
# here, once per process. Start-up, not throughput; the raw paths pay none of theirs in the timer either.
LAZY_IMPORTS = ("pandas",)


def child_main(step: str, raw_args: str) -> None:
    if step.endswith("_loader"):
        for module in LAZY_IMPORTS:
            importlib.import_module(module)
    result = CHILDREN[step](json.loads(raw_args))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH-RESULT " + json.dumps(result, default=str), flush=True)


def run_child(step: str, args: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    env = dict(os.environ, RUNTIME__LOG_LEVEL="WARNING", DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_child", step, json.dumps(args)],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    (log_dir / f"{step}.log").write_text(process.stdout + process.stderr)
    lines = [line for line in process.stdout.splitlines() if line.startswith("BENCH-RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{step} failed (exit {process.returncode}):\n{process.stderr[-4000:]}")
    result = json.loads(lines[-1].removeprefix("BENCH-RESULT "))
    result["process_seconds"] = time.monotonic() - started
    return result


# -- the harness ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.server: Any = None
        self.warehouse_url = ""
        self.operational_url = ""
        self.results: dict[str, Any] = {}

    # setup --------------------------------------------------------------------------------------

    def start(self) -> None:
        from loaders.embedded_postgres import EmbeddedPostgres, free_port

        self.server = EmbeddedPostgres(self.work_dir / "postgres", port=free_port())
        self.server.start()
        self.warehouse_url = self.server.url("warehouse")
        self.operational_url = self.server.url("operational")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def generate_operational(self) -> None:
        from loaders.operational import generator

        lines = self.args.orders
        scale = generator.Scale(
            customers=max(400, lines // 250),
            products=max(250, min(5_000, lines // 400)),
            order_lines=lines,
            history_days=730,  # two years: also the Facebook double's back-fill window
        )
        started = time.monotonic()
        generator.generate(self.operational_url, scale=scale, seed=42)
        self.results["generation"] = {
            "scale": {k: getattr(scale, k) for k in ("customers", "products", "order_lines", "history_days")},
            "seconds": round(time.monotonic() - started, 1),
        }
        say(f"generated {lines:,} order lines in {self.results['generation']['seconds']}s")

    def query(self, url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def table_mib(self, table: str) -> float:
        """The table's data as stored (heap and TOAST, no indexes): how many bytes each path wrote."""
        (size,) = self.query(self.warehouse_url, "select pg_table_size(%s::regclass)", (table,))[0]
        return size / 2**20

    def drop_schema(self, name: str) -> None:
        self.query(self.warehouse_url, f"drop schema if exists {name} cascade")
        self.query(self.warehouse_url, f"drop schema if exists {name}_staging cascade")

    # stages -------------------------------------------------------------------------------------

    def stage_gcs(self) -> None:
        import gcs_memory

        source_dir = self.work_dir / "gcs-source"
        total_mb = self.args.gcs_mb
        files: list[Path] = []
        json_bytes = 0
        n_files = max(1, math.ceil(total_mb / GCS_FILE_MB))
        for index in range(n_files):
            path = source_dir / f"part-{index:03d}.ndjson"
            _count, size = gcs_memory.write_file(path, total_mb / n_files, "ndjson", False)
            if index:  # distinct records in every file (the generator restarts its ids)
                _renumber(path, index)
                size = path.stat().st_size
            files.append(path)
            json_bytes += size
        say(f"gcs: {n_files} file(s), {json_bytes / 2**20:,.0f} MiB of NDJSON")
        loader, raw, raw_json, raw_bronze = [], [], [], []
        for run in range(self.args.runs):
            bucket = self.work_dir / f"gcs-bucket-{run}"
            pending = bucket / "datalake/payload_data/pending" / GCS_TYPE
            pending.mkdir(parents=True, exist_ok=True)
            for path in files:
                os.link(path, pending / path.name)
            schema = f"bench_gcs_{run}"
            result = run_child(
                "gcs_loader",
                {
                    "bucket": str(bucket),
                    "warehouse_url": self.warehouse_url,
                    "schema": schema,
                    "work_dir": str(self.work_dir / "gcs-work"),
                },
                self.log_dir,
            )
            result["table_mib"] = self.table_mib(f"{schema}.{GCS_TYPE}")
            loader.append(_with_rates(result, json_bytes))
            say(
                f"gcs loader run {run + 1}: {result['seconds']:.1f}s, {result['rows']:,} rows, "
                f"table {result['table_mib']:,.0f} MiB"
            )
            self.drop_schema(schema)
            shutil.rmtree(bucket)
            for results, table, what, with_record_json, with_lineage in (
                (raw, f"public.bench_gcs_raw_{run}", "raw path", False, False),
                (raw_json, f"public.bench_gcs_raw_json_{run}", "raw path + record JSON", True, False),
                (raw_bronze, f"public.bench_gcs_raw_bronze_{run}", "raw path + bronze's columns", True, True),
            ):
                result = run_child(
                    "gcs_raw",
                    {
                        "files": [str(p) for p in files],
                        "warehouse_url": self.warehouse_url,
                        "table": table,
                        "work_dir": str(self.work_dir),
                        "with_record_json": with_record_json,
                        "with_lineage": with_lineage,
                        "copies": self.args.raw_copies,
                    },
                    self.log_dir,
                )
                result["table_mib"] = self.table_mib(table)
                results.append(_with_rates(result, json_bytes))
                say(
                    f"gcs {what} run {run + 1}: {result['seconds']:.1f}s, {result['rows']:,} rows, "
                    f"table {result['table_mib']:,.0f} MiB"
                )
                self.query(self.warehouse_url, f"drop table if exists {table}")
        shutil.rmtree(source_dir)
        self.results["gcs"] = {
            "input_bytes": json_bytes,
            "files": n_files,
            "loader": _summary(loader),
            "raw": _summary(raw),
            "raw_with_record_json": _summary(raw_json),
            "raw_with_bronze_columns": _summary(raw_bronze),
        }

    def stage_operational(self) -> None:
        loader, raw = [], []
        for run in range(self.args.runs):
            result = run_child(
                "operational_raw",
                {
                    "operational_url": self.operational_url,
                    "warehouse_url": self.warehouse_url,
                    "schema": f"bench_op_raw_{run}",
                },
                self.log_dir,
            )
            moved = result["bytes"]
            raw.append(_with_rates(result, moved))
            say(f"operational raw COPY pipe run {run + 1}: {result['seconds']:.1f}s, {result['rows']:,} rows")
            self.drop_schema(f"bench_op_raw_{run}")
            schema = f"bench_op_{run}"
            result = run_child(
                "operational_loader",
                {
                    "operational_url": self.operational_url,
                    "warehouse_url": self.warehouse_url,
                    "schema": schema,
                    "pipelines_dir": str(self.work_dir / f"dlt-op-{run}"),
                },
                self.log_dir,
            )
            loader.append(_with_rates(result, moved))
            say(f"operational loader run {run + 1}: {result['seconds']:.1f}s, {result['rows']:,} rows")
            self.drop_schema(schema)
            shutil.rmtree(self.work_dir / f"dlt-op-{run}", ignore_errors=True)
        self.results["operational"] = {
            "input_bytes": statistics.median(r["bytes"] for r in raw),
            "loader": _summary(loader),
            "raw": _summary(raw),
        }

    def stage_facebook(self) -> None:
        runs = []
        for run in range(self.args.runs):
            schema = f"bench_fb_{run}"
            result = run_child(
                "facebook_loader",
                {
                    "operational_url": self.operational_url,
                    "warehouse_url": self.warehouse_url,
                    "schema": schema,
                    "pipelines_dir": str(self.work_dir / f"dlt-fb-{run}"),
                    "accounts": self.args.fb_accounts or None,
                },
                self.log_dir,
            )
            runs.append(_with_rates(result, None))
            say(f"facebook loader run {run + 1}: {result['seconds']:.1f}s, {result['rows']:,} rows")
            self.drop_schema(schema)
        self.results["facebook"] = {
            "accounts": runs[0]["accounts"],
            "days": runs[0]["days"],
            "loader": _summary(runs),
        }

    # dbt ----------------------------------------------------------------------------------------

    def _cli_env(self) -> dict[str, str]:
        state = self.work_dir / "state"
        return dict(
            os.environ,
            WAREHOUSE_URL=self.warehouse_url,
            OPERATIONAL_URL=self.operational_url,
            WAREHOUSE_STATE_DIR=str(state),
            GCS_BUCKET_URL=str(self.work_dir / "dbt-bucket"),
            FACEBOOK_ADS_SOURCE="double",
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
            RUNTIME__LOG_LEVEL="WARNING",
        )

    def _cli(self, *args: str) -> None:
        process = subprocess.run(
            [sys.executable, "-m", "loaders", *args],
            cwd=PROJECT_DIR,
            env=self._cli_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        (self.log_dir / f"cli-{args[0]}.log").open("a").write(process.stdout + process.stderr)
        if process.returncode != 0:
            raise RuntimeError(
                f"warehouse {' '.join(args)} failed:\n{process.stdout[-3000:]}{process.stderr[-3000:]}"
            )

    def _settings(self) -> Any:
        os.environ.update({k: v for k, v in self._cli_env().items() if k not in ("PATH",)})
        from loaders.config import load_settings

        return load_settings()

    def _dbt(self, *args: str, check: bool = True) -> dict[str, Any]:
        """One `dbt ...` invocation: wall time, and the nodes' own times from run_results.json."""
        from loaders.cli import dbt_environment

        settings = self._settings()
        env = dbt_environment(settings)
        dbt = Path(sys.executable).with_name("dbt")
        started = time.monotonic()
        process = subprocess.run(
            [str(dbt), *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=False
        )
        wall = time.monotonic() - started
        (self.log_dir / "dbt.log").open("a").write(process.stdout + process.stderr)
        if not check:
            return {"seconds": wall, "returncode": process.returncode}
        if process.returncode != 0:
            raise RuntimeError(f"dbt {' '.join(args)} failed:\n{process.stdout[-4000:]}")
        results = json.loads((settings.dbt_target_dir / "run_results.json").read_text())
        by_kind: dict[str, float] = {}
        models: dict[str, float] = {}
        for node in results["results"]:
            kind = node["unique_id"].split(".", 1)[0]
            by_kind[kind] = by_kind.get(kind, 0.0) + node["execution_time"]
            if kind == "model":
                models[node["unique_id"].rsplit(".", 1)[-1]] = node["execution_time"]
        executed = results.get("elapsed_time", 0.0)
        return {
            "seconds": wall,
            "model_seconds": by_kind.get("model", 0.0),
            "test_seconds": by_kind.get("test", 0.0),
            "snapshot_seconds": by_kind.get("snapshot", 0.0),
            "seed_seconds": by_kind.get("seed", 0.0),
            "executed_seconds": executed,
            "fixed_seconds": max(0.0, wall - executed),
            "models": models,
        }

    def _freshness(self) -> float:
        """`dbt source freshness` as the nightly job runs it (loaders/nightly.py): stale sources are fine."""
        (self._settings().dbt_target_dir / "sources.json").unlink(missing_ok=True)
        return self._dbt("source", "freshness", check=False)["seconds"]

    def _save_nightly_state(self) -> None:
        """This build becomes the previous night of the next one, as after a successful `warehouse run`."""
        from loaders.nightly import save_state, saved_state

        settings = self._settings()
        save_state(settings.dbt_target_dir, *saved_state(settings))

    def _nightly(self) -> dict[str, Any]:
        """One night of `warehouse run`'s dbt step: freshness, then the build loaders.nightly plans from the
        previous night's state (the same function `warehouse run` calls), then the state is advanced."""
        from loaders.nightly import plan_nightly, saved_state

        freshness = self._freshness()
        settings = self._settings()
        previous, identity = saved_state(settings)
        plan = plan_nightly(
            previous,
            settings.dbt_target_dir,
            identity,
            command=self.args.dbt_command,
            within=self.args.dbt_select,
        )
        if not plan.incremental:
            raise RuntimeError(f"the nightly job would build everything: {plan.reason}")
        result = self._dbt(*plan.dbt_args)
        self._save_nightly_state()
        result.update(freshness_seconds=freshness, selection=plan.selection, selection_reason=plan.reason)
        return result

    def change_orders(self, fraction: float) -> dict[str, int]:
        """+fraction of the orders: half of them changed (status, notes, updated_at), half new (copies of
        existing orders and their lines with new ids), all stamped now so the incremental loader sees them."""
        import psycopg2

        conn = psycopg2.connect(self.operational_url)
        try:
            with conn.cursor() as cur:
                cur.execute("select count(*), max(id) from orders")
                total, max_order = cur.fetchone()
                cur.execute("select max(id) from order_items")
                (max_item,) = cur.fetchone()
                changed = max(1, round(total * fraction))
                updates, inserts = changed // 2, changed - changed // 2
                cur.execute(
                    "update orders set notes = 'bench: changed', updated_at = now(), "
                    "status = case when status = 'shipped' then 'delivered' else status end "
                    "where id in (select id from orders order by md5(id::text || %s) limit %s)",
                    (str(fraction), updates),
                )
                cur.execute(
                    "create temp table picked on commit drop as "
                    "select id as old_id, %s + row_number() over (order by id) as new_id "
                    "from (select id from orders order by md5(id::text || 'new' || %s) limit %s) s",
                    (max_order, str(fraction), inserts),
                )
                cur.execute(
                    "insert into orders select p.new_id, o.customer_id, o.order_date, o.status, o.subtotal, "
                    "o.discount, o.tax, o.shipping_cost, o.total, o.payment_method, o.payment_status, "
                    "o.shipping_address, o.notes, now(), now() from orders o join picked p on p.old_id = o.id"
                )
                cur.execute(
                    "insert into order_items select %s + row_number() over (order by i.id), p.new_id, "
                    "i.product_id, i.quantity, i.unit_price, i.discount, i.tax, i.total, now(), now() "
                    "from order_items i join picked p on p.old_id = i.order_id",
                    (max_item,),
                )
                new_lines = cur.rowcount
            conn.commit()
        finally:
            conn.close()
        return {"orders_changed": updates, "orders_new": inserts, "order_lines_new": new_lines}

    def age_loads(self, hours: int, *, everything: bool = False) -> None:
        """Simulate the nightly cadence: the previous loads happened `hours` earlier.

        Incremental models re-read what was loaded within a look-back window of the last load (72 h for
        fact_orders), which is right for daily runs but, in a benchmark whose loads are minutes apart,
        would re-read every load of the session. So before each measured run every load-time column
        (`_loaded_at` in bronze, `loaded_at` in the incremental tables dbt built) of the recent loads is
        moved back, consistently everywhere: the data and the models are untouched, only the clock.
        `everything` moves every row (once, after the full refresh); otherwise only the last 29 days.
        Each moved row leaves a dead version behind, which a real night never has (load times never change):
        the moved tables are vacuumed, or their dead versions would pile up night after night inside the
        indexes' `loaded_at` ranges that the next nights read, and autovacuum would clean them up during a
        measured night.
        """
        rows = self.query(
            self.warehouse_url,
            "select c.table_schema, c.table_name, c.column_name from information_schema.columns c "
            "join information_schema.tables t using (table_schema, table_name) "
            "where t.table_type = 'BASE TABLE' and c.column_name in ('_loaded_at', 'loaded_at') "
            "and c.table_schema not in ('ops', 'snapshots', 'information_schema', 'pg_catalog') "
            "and c.table_schema not like '%%staging%%' and c.table_schema not like 'bench%%'",
        )
        for schema, table, column in rows:
            where = "" if everything else f" where \"{column}\" > now() - interval '29 days'"
            self.query(
                self.warehouse_url,
                f'update "{schema}"."{table}" set "{column}" = "{column}" - interval \'{hours} hours\'{where}',
            )
        if everything:
            self.query(self.warehouse_url, "vacuum analyze")
        elif rows:
            moved = ", ".join(sorted({f'"{schema}"."{table}"' for schema, table, _ in rows}))
            self.query(self.warehouse_url, f"vacuum analyze {moved}")

    def fact_orders_fingerprint(self) -> tuple[int, int]:
        columns = [
            r[0]
            for r in self.query(
                self.warehouse_url,
                "select column_name from information_schema.columns where table_schema = 'gold' "
                "and table_name = 'fact_orders' and column_name not like '%%loaded_at%%' "
                "and column_name not like 'dbt_%%' and column_name not like '\\_%%' order by ordinal_position",
            )
        ]
        row_expr = "row(" + ", ".join(f'"{c}"' for c in columns) + ")::text"
        count, digest = self.query(
            self.warehouse_url,
            f"select count(*), coalesce(sum(hashtext({row_expr})::bigint), 0) from gold.fact_orders",
        )[0]
        return int(count), int(digest)

    def stage_dbt(self) -> None:
        if self.args.dbt_select:  # a selection (the smoke test) needs the operational source only
            say("dbt: loading bronze (operational)")
            self._cli("load", "operational")
        else:
            say("dbt: loading bronze (operational, sample payload files, Facebook double)")
            self._cli("gcs", "samples")
            self._cli("load", "operational", "gcs", "facebook")
        if (PROJECT_DIR / "packages.yml").exists():
            self._dbt("deps")
        select = ["--select", self.args.dbt_select] if self.args.dbt_select else []
        runs_per_step = self.args.dbt_runs or self.args.runs
        full, noop = [], []
        for run in range(runs_per_step):
            self._freshness()  # the full refresh is the first night: its state is the next night's baseline
            full.append(self._dbt(self.args.dbt_command, "--full-refresh", *select))
            full[-1]["selection"] = self.args.dbt_select or "(all)"
            self._save_nightly_state()
            say(
                f"dbt full refresh run {run + 1}: {full[-1]['seconds']:.1f}s, models {full[-1]['model_seconds']:.1f}s"
            )
        self.age_loads(DAY_HOURS * 30, everything=True)
        # One unmeasured night first, as in the nightly steady state: incremental models re-read what landed
        # within a look-back window of their newest loaded_at, which right after the full refresh is the
        # whole initial load; after one night of loads (the Facebook loader re-reads its restated days) it
        # is the previous nights' loads only.
        self.age_loads(DAY_HOURS)
        self.change_orders(self.args.levels[0])
        self._cli("load", "operational", *([] if self.args.dbt_select else ["facebook"]))
        self._nightly()
        for run in range(runs_per_step):
            self.age_loads(DAY_HOURS)
            noop.append(self._nightly())
            say(
                f"dbt no-op run {run + 1}: {noop[-1]['seconds']:.1f}s, models {noop[-1]['model_seconds']:.1f}s"
            )
        incremental: dict[str, Any] = {}
        for fraction in self.args.levels:
            runs = []
            for run in range(runs_per_step):
                self.age_loads(DAY_HOURS)
                changes = self.change_orders(fraction)
                self._cli("load", "operational")
                result = self._nightly()
                result["changes"] = changes
                runs.append(result)
                say(
                    f"dbt incremental +{fraction:.1%} run {run + 1}: {result['seconds']:.1f}s, "
                    f"models {result['model_seconds']:.1f}s ({changes})"
                )
            incremental[_level(fraction)] = _dbt_summary(runs)
        after_incremental = self.fact_orders_fingerprint()
        self._dbt("run", "--full-refresh", "--select", "fact_orders")
        after_full = self.fact_orders_fingerprint()
        self.results["dbt"] = {
            "full_refresh": _dbt_summary(full),
            "noop": _dbt_summary(noop),
            "incremental": incremental,
            "fact_orders_rows": after_full[0],
            "fact_orders_incremental_equals_full_refresh": after_incremental == after_full,
        }

    # summary ------------------------------------------------------------------------------------

    def machine(self) -> dict[str, Any]:
        from importlib.metadata import version

        memory = 0
        meminfo = Path("/proc/meminfo")
        if meminfo.exists():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
        versions = {}
        for package in ("dlt", "dbt-core", "dbt-postgres", "duckdb", "pyarrow", "orjson", "psycopg2-binary"):
            try:
                versions[package] = version(package)
            except Exception:  # a missing package is just not listed
                continue
        versions["postgresql"] = self.query(self.warehouse_url, "show server_version")[0][0]
        return {
            "cpu_count": os.cpu_count(),
            "memory_bytes": memory,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": versions,
            "load_average_at_start": list(os.getloadavg()),
        }


def _renumber(path: Path, index: int) -> None:
    """Give the records of part N their own interaction ids (gcs_memory numbers every file from 1)."""
    tmp = path.with_suffix(".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as out:
        for line in src:
            out.write(line.replace(b'"INT-', f'"INT-{index:03d}-'.encode(), 1))
    tmp.replace(path)


def _with_rates(result: dict[str, Any], input_bytes: int | None) -> dict[str, Any]:
    result["rows_per_second"] = result["rows"] / result["seconds"]
    if input_bytes is not None:
        result["input_bytes"] = input_bytes
        result["mib_per_second"] = input_bytes / 2**20 / result["seconds"]
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("seconds", "rows_per_second", "mib_per_second", "peak_rss_mib", "table_mib")
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys if k in runs[0]}
    summary["rows"] = runs[0]["rows"]
    summary["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in runs)
    summary["runs"] = runs
    return summary


def _dbt_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "seconds",
        "model_seconds",
        "test_seconds",
        "snapshot_seconds",
        "executed_seconds",
        "fixed_seconds",
    )
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    if "freshness_seconds" in runs[0]:  # the nightly job's `dbt source freshness`, apart from the build
        summary["freshness_seconds"] = statistics.median(r["freshness_seconds"] for r in runs)
    summary["selection"] = runs[0].get("selection", "(all)")
    summary["models_built"] = len(runs[len(runs) // 2]["models"])
    slowest = sorted(runs[len(runs) // 2]["models"].items(), key=lambda kv: -kv[1])[:8]
    summary["slowest_models"] = dict(slowest)
    summary["runs"] = [{k: v for k, v in r.items() if k != "models"} for r in runs]
    return summary


def _level(fraction: float) -> str:
    return f"{fraction * 100:g}pct".replace(".", "_")


def headline(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "gcs" in results:
        gcs = results["gcs"]
        out["gcs_to_bronze_vs_raw"] = gcs["loader"]["mib_per_second"] / gcs["raw"]["mib_per_second"]
        if "raw_with_record_json" in gcs:  # the ceiling for a loader that keeps every record's JSON
            out["gcs_raw_with_record_json_vs_raw"] = (
                gcs["raw_with_record_json"]["mib_per_second"] / gcs["raw"]["mib_per_second"]
            )
        if "raw_with_bronze_columns" in gcs:  # the ceiling for a loader that keeps issue 2's bronze contract
            bronze_columns = gcs["raw_with_bronze_columns"]["mib_per_second"]
            out["gcs_raw_with_bronze_columns_vs_raw"] = bronze_columns / gcs["raw"]["mib_per_second"]
            out["gcs_to_bronze_vs_raw_with_bronze_columns"] = gcs["loader"]["mib_per_second"] / bronze_columns
    if "operational" in results:
        op = results["operational"]
        out["operational_to_bronze_vs_raw"] = op["loader"]["mib_per_second"] / op["raw"]["mib_per_second"]
    if "dbt" in results:
        full = results["dbt"]["full_refresh"]["model_seconds"]
        for level, summary in results["dbt"]["incremental"].items():
            out[f"dbt_incremental_{level}_vs_full"] = summary["model_seconds"] / full
    return out


def print_table(results: dict[str, Any], ratios: dict[str, Any]) -> None:
    def row(name: str, s: dict[str, Any], ratio: str = "") -> None:
        mib = f"{s['mib_per_second']:9.1f}" if "mib_per_second" in s else f"{'':>9}"
        print(
            f"{name:<38} {s['rows_per_second']:>12,.0f} {mib} {s['peak_rss_mib']:>10,.0f} "
            f"{s['seconds']:>9.1f} {ratio:>8}"
        )

    print(f"\n{'stage':<38} {'rows/s':>12} {'MiB/s':>9} {'peak MiB':>10} {'wall s':>9} {'ratio':>8}")
    print("-" * 91)
    if "gcs" in results:
        gcs = results["gcs"]
        row("gcs json -> bronze (load_gcs)", gcs["loader"], f"{ratios['gcs_to_bronze_vs_raw']:.1%}")
        row("gcs raw: duckdb read_json->csv->COPY", gcs["raw"], "100%")
        if "raw_with_record_json" in gcs:
            row(
                "gcs raw + each record's JSON text",
                gcs["raw_with_record_json"],
                f"{ratios['gcs_raw_with_record_json_vs_raw']:.1%}",
            )
        if "raw_with_bronze_columns" in gcs:
            row(
                "gcs raw + bronze's columns",
                gcs["raw_with_bronze_columns"],
                f"{ratios['gcs_raw_with_bronze_columns_vs_raw']:.1%}",
            )
            print(
                f"{'  loader vs raw + bronze columns':<38} {'':>12} {'':>9} {'':>10} {'':>9} "
                f"{ratios['gcs_to_bronze_vs_raw_with_bronze_columns']:>8.1%}"
            )
    if "operational" in results:
        op = results["operational"]
        row(
            "operational -> bronze (load_operational)",
            op["loader"],
            f"{ratios['operational_to_bronze_vs_raw']:.1%}",
        )
        row("operational raw: COPY TO | COPY FROM", op["raw"], "100%")
    if "facebook" in results:
        fb = results["facebook"]
        row(f"facebook double -> bronze ({fb['accounts']} acc, {fb['days']} d)", fb["loader"])
    if "dbt" in results:
        d = results["dbt"]
        print(
            f"\n{'dbt build':<38} {'wall s':>9} {'models s':>9} {'tests s':>9} {'fixed s':>9} {'models/full':>12}"
        )
        print("-" * 91)
        full = d["full_refresh"]["model_seconds"]
        items = [("full refresh", d["full_refresh"]), ("no-op", d["noop"])]
        items += [
            (f"incremental {k.replace('_', '.').replace('pct', ' %')}", v)
            for k, v in d["incremental"].items()
        ]
        for name, s in items:
            print(
                f"{name:<38} {s['seconds']:>9.1f} {s['model_seconds']:>9.2f} {s['test_seconds']:>9.2f} "
                f"{s['fixed_seconds']:>9.1f} {s['model_seconds'] / full:>12.1%}"
            )
        print(f"fact_orders incremental == full refresh: {d['fact_orders_incremental_equals_full_refresh']}")
        nightly = d["noop"]
        print(
            f"nightly job (warehouse run): freshness {nightly.get('freshness_seconds', 0):.1f}s before each build; "
            f"models built: full {d['full_refresh']['models_built']}, no-op {nightly['models_built']}, "
            + ", ".join(f"{k} {v['models_built']}" for k, v in d["incremental"].items())
        )
        print(f"nightly selection: {nightly['selection']}")
    print()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        child_main(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--orders", type=parse_count, default=parse_count("100k"), help="order lines: 100k, 1M, 10M"
    )
    parser.add_argument("--gcs-mb", type=float, default=100, help="MiB of payload JSON: 100, 1024")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument("--dbt-runs", type=int, default=0, help="runs per dbt measurement (default: --runs)")
    parser.add_argument(
        "--fb-accounts",
        type=int,
        default=0,
        help="Facebook ad accounts the Graph API double serves (default: the world's own 2; the target: 50)",
    )
    parser.add_argument(
        "--dbt-select",
        default="",
        help="dbt node selection (default: the whole project; the smoke test: +fact_orders)",
    )
    parser.add_argument(
        "--levels",
        type=lambda text: tuple(float(x) / 100 for x in text.split(",")),
        default=CHANGE_LEVELS,
        help="incremental change levels in percent of the orders (default 0.1,1,10)",
    )
    parser.add_argument(
        "--dbt-command",
        choices=("build", "run"),
        default="build",
        help="build (models, tests, snapshots) or run",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="merge into --output: keep its stages that this run does not measure",
    )
    parser.add_argument(
        "--raw-copies",
        type=int,
        default=2,
        help="connections the GCS raw paths COPY over in parallel (default 2; 1: one CSV file, one COPY, "
        "the raw path before stop 20)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, the server's data)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--work-dir", type=Path, default=None, help="state folder (default: a temporary one)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    work_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=args.work_dir))
    bench = Bench(args, work_dir)
    failures: dict[str, str] = {}
    started = time.monotonic()
    try:
        bench.start()
        machine = bench.machine()
        bench.generate_operational()
        for stage in STAGES:
            if stage not in stages:
                continue
            try:
                getattr(bench, f"stage_{stage}")()
            except Exception as exc:  # the other stages still run; the summary says what failed
                failures[stage] = f"{type(exc).__name__}: {exc}"[:4000]
                say(f"stage {stage} FAILED: {failures[stage]}")
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    ratios = headline(bench.results)
    summary = {
        **ratios,
        "dbt_incremental_1pct_vs_full": ratios.get("dbt_incremental_1pct_vs_full"),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "bench/run.py " + " ".join(argv),
        "scale": {
            "order_lines": args.orders,
            "gcs_mib": args.gcs_mb,
            "gcs_raw_copies": args.raw_copies,
            "runs": args.runs,
            "dbt_runs": args.dbt_runs or args.runs,
            "fb_accounts": args.fb_accounts or None,
            "dbt_select": args.dbt_select or "(all)",
            "dbt_command": args.dbt_command,
            "change_levels_pct": [round(x * 100, 3) for x in args.levels],
            "stages": stages,
        },
        "machine": machine,
        "total_seconds": round(time.monotonic() - started, 1),
        "failed_stages": failures,
        **bench.results,
    }
    if args.update and args.output.exists():  # keep the other stages of an earlier run
        earlier = json.loads(args.output.read_text())
        merged = {
            stage: earlier[stage] for stage in STAGES if stage in earlier and stage not in bench.results
        }
        merged.update(bench.results)
        ratios = headline(merged)
        scales = {
            **earlier.get("scales_by_stage", {}),
            **{stage: summary["scale"] for stage in bench.results},
        }
        summary = {**earlier, **summary, **ratios, **merged, "scales_by_stage": scales}
        summary["dbt_incremental_1pct_vs_full"] = ratios.get("dbt_incremental_1pct_vs_full")
        summary["command"] = f"{earlier.get('command')} ; {summary['command']}"
        bench.results = merged
    else:
        summary["scales_by_stage"] = {stage: summary["scale"] for stage in bench.results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_table(bench.results, ratios)
    print(f"summary written to {args.output}" + (f"; work folder {work_dir}" if args.keep else ""))
    for stage, error in failures.items():
        print(f"stage {stage} FAILED: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

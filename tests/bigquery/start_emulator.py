"""Start bqemulator for the test suite, offline.

Runs inside the emulator's own virtual environment (.bootstrap/bqemulator), never the project's.
bqemulator insists on DuckDB's spatial extension (GEOGRAPHY support) and downloads it on first start; CI has
no access to the DuckDB extension repository and the project uses no GEOGRAPHY, so the loader is replaced by
a no-op here. Avro/format extensions are disabled for the same reason (best-effort in bqemulator anyway).
Emulator gaps that real BigQuery does not have are patched here too, each with its reason below.

Usage: python start_emulator.py --rest-port N --grpc-port M --project P
"""

from __future__ import annotations

import argparse
import re

from bqemulator.api.routes import upload
from bqemulator.config import LogFormat, LogLevel, Settings
from bqemulator.domain.result import Ok
from bqemulator.scripting import interpreter
from bqemulator.server import run_forever
from bqemulator.sql.rewriter import create_table_schema_ctas
from bqemulator.sql.translator import SQLTranslator
from bqemulator.storage import engine
from sqlglot import exp

_first_select = create_table_schema_ctas._first_select
_translate = SQLTranslator.translate


def _skip_spatial(self: engine.DuckDBEngine) -> None:
    """GEOGRAPHY is unused by the project; the extension cannot be downloaded offline."""


def _first_select_through_parentheses(body: exp.Expression | None) -> exp.Select | None:
    """dbt-bigquery's contract DDL is `create table t (columns) as (select ...)`: the emulator's CTAS rewrite
    (which strips the column list and casts the projections to it) misses the parenthesised select."""
    while isinstance(body, exp.Subquery):
        body = body.this
    return _first_select(body)


# dbt-bigquery's insert_overwrite script carries the comment line "-- IGNORE NULLS: this needs to be aligned
# to _dbt_max_partition ..."; the emulator's aggregate rewriter matches IGNORE NULLS inside the comment and
# fails ("Required keyword: 'this' missing"). Such whole-line comments are dropped before translation.
_COMMENTED_IGNORE_NULLS = re.compile(r"(?im)^[ \t]*--[^\n]*ignore nulls[^\n]*$")
# The same script computes the partitions to replace with array_agg(distinct date(col) IGNORE NULLS); the
# emulator cannot parse DISTINCT with IGNORE NULLS. Without IGNORE NULLS a null date may enter the array,
# where `date(col) in unnest(array)` never matches it: the same partitions are replaced.
_DISTINCT_IGNORE_NULLS = re.compile(r"(?is)array_agg\(\s*distinct\s+(.*?)\s+ignore\s+nulls\s*\)")


def _translate_with_numeric_precision(self: SQLTranslator, bq_sql: str, **kwargs: object) -> object:
    """Translation with emulator gaps closed (_COMMENTED_IGNORE_NULLS, _DISTINCT_IGNORE_NULLS).

    BigQuery's NUMERIC is DECIMAL(38, 9); the emulator's translation spells a bare NUMERIC as DuckDB's
    DECIMAL(18, 3), so `cast(a as numeric) / b` lost digits (0.3333 became 0.3330). The project declares no
    NUMERIC(18, 3) of its own, so every DECIMAL(18, 3) in the translation is a bare NUMERIC."""
    bq_sql = _COMMENTED_IGNORE_NULLS.sub("", bq_sql)
    bq_sql = _DISTINCT_IGNORE_NULLS.sub(r"array_agg(distinct \1)", bq_sql)
    result = _translate(self, bq_sql, **kwargs)
    if isinstance(result, Ok):
        return Ok(result.value.replace("DECIMAL(18, 3)", "DECIMAL(38, 9)"))
    return result


def _accept_generic_media_type() -> None:
    """google-cloud-bigquery sends the data part of a multipart load (load_table_from_json / _file with a
    size) as `*/*`, which BigQuery accepts and the emulator's content-type whitelist did not."""
    upload._PERMITTED_MEDIA_CONTENT_TYPES = (*upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*")


_exec_set = interpreter.ScriptInterpreter._exec_set


async def _exec_set_unpacking_struct(self: object, stmt: object) -> None:
    """`set (v) = (select as struct array_agg(...))` (dbt's insert_overwrite script) assigns the struct's field
    to v in BigQuery; the emulator assigned the whole one-field struct, so `in unnest(v)` failed."""
    await _exec_set(self, stmt)
    targets = stmt.targets  # type: ignore[attr-defined]
    if len(targets) == 1:
        value = self._frames.lookup(targets[0])  # type: ignore[attr-defined]
        if isinstance(value, dict) and len(value) == 1:
            self._frames.set(targets[0], next(iter(value.values())))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--log-level", default="warning")
    # gs:// URIs of load jobs resolve to files under this folder (a filesystem-backed GCS emulator's root)
    parser.add_argument("--gcs-local-root", default=None)
    args = parser.parse_args()
    engine.DuckDBEngine._load_spatial = _skip_spatial  # type: ignore[method-assign]
    create_table_schema_ctas._first_select = _first_select_through_parentheses
    SQLTranslator.translate = _translate_with_numeric_precision  # type: ignore[method-assign]
    _accept_generic_media_type()
    interpreter.ScriptInterpreter._exec_set = _exec_set_unpacking_struct  # type: ignore[method-assign]
    settings = Settings(
        rest_host="127.0.0.1",
        rest_port=args.rest_port,
        grpc_host="127.0.0.1",
        grpc_port=args.grpc_port,
        default_project_id=args.project,
        enable_format_extensions=False,
        query_cache_ttl_seconds=0,
        max_concurrent_jobs=16,
        metrics_enabled=False,
        log_level=LogLevel(args.log_level),
        log_format=LogFormat.CONSOLE,
        **({"gcs_local_root": args.gcs_local_root} if args.gcs_local_root else {}),
    )
    run_forever(settings)


if __name__ == "__main__":
    main()

"""The operational loader against real servers: idempotent, crash-safe, late updates and hard deletes."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import (
    OPERATIONAL_TABLES,
    PROJECT_DIR,
    bronze_matches_source,
    cli_env,
    fingerprint,
    query,
    run_cli,
)

from loaders.operational import generator

AS_OF = dt.date(2026, 6, 30)
SMALL = generator.Scale(customers=120, suppliers=10, products=60, order_lines=8_000, history_days=120)


def _bronze_fingerprints(url: str) -> dict[str, tuple[int, str]]:
    result = {}
    for table in ("customers", "orders", "order_items", "pricing", "source_deletions"):
        cols = [c for c in _columns(url, table) if not c.startswith("_") and c != "detected_at"]
        result[table] = fingerprint(url, "bronze_operational", table, cols)
    return result


def _columns(url: str, table: str, schema: str = "bronze_operational") -> list[str]:
    rows = query(
        url,
        "select column_name from information_schema.columns "
        "where table_schema = %s and table_name = %s order by ordinal_position",
        (schema, table),
    )
    return [r[0] for r in rows]


def test_load_lands_every_table_and_rerun_changes_nothing(fresh_databases, tmp_path):
    generator.generate(fresh_databases["operational"], scale=SMALL, seed=7, as_of=AS_OF)
    env = cli_env(fresh_databases, tmp_path)

    run_cli(env, "load", "operational")
    for table, (source, bronze) in bronze_matches_source(fresh_databases).items():
        assert source == bronze, f"bronze {table} differs from the source"
    first = _bronze_fingerprints(fresh_databases["warehouse"])

    run_cli(env, "load", "operational")
    assert _bronze_fingerprints(fresh_databases["warehouse"]) == first
    # merged on id: a re-run never duplicates a row version
    dupes = query(
        fresh_databases["warehouse"],
        "select count(*) - count(distinct id) from bronze_operational.order_items",
    )
    assert dupes == [(0,)]

    # each run is in the processing log, with what it merged per table
    runs = query(
        fresh_databases["warehouse"],
        "select status, records_processed, records_invalid, details from ops.processing_log "
        "where component = 'operational' order by started_at",
    )
    assert [r[0] for r in runs] == ["completed", "completed"]
    ((source_lines,),) = query(fresh_databases["operational"], "select count(*) from order_items")
    assert runs[0][3]["row_counts"]["order_items"] == source_lines
    assert runs[0][1] == sum(runs[0][3]["row_counts"].values()) and runs[0][2] == 0


def test_bulk_path_is_used_not_row_inserts(fresh_databases, tmp_path):
    generator.generate(fresh_databases["operational"], scale=SMALL, seed=7, as_of=AS_OF)
    env = cli_env(fresh_databases, tmp_path)
    run_cli(env, "load", "operational")
    # dlt keeps the completed jobs of each package: every table's data arrives as CSV (COPY), never as
    # insert_values; the .sql jobs are the merge statements dlt runs inside the warehouse afterwards.
    job_files = [p.name for p in (tmp_path / "dlt").rglob("completed_jobs/*") if p.is_file()]
    data_jobs = [name for name in job_files if not name.startswith("_dlt") and not name.endswith(".sql")]
    assert {name.split(".")[0] for name in data_jobs} == {*OPERATIONAL_TABLES, "source_deletions"}
    assert all(name.endswith((".csv", ".csv.gz")) for name in data_jobs), data_jobs


def test_late_updates_and_hard_deletes_are_caught(fresh_databases, tmp_path):
    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=11, as_of=AS_OF)
    env = cli_env(urls, tmp_path)
    run_cli(env, "load", "operational")

    summaries = generator.advance_day(urls["operational"], days=2)
    deleted = [order_id for day in summaries for order_id in day["deleted_order_ids"]]
    assert deleted, "the generator should hard-delete an order every day"
    late_rows = [row for day in summaries for row in day["late_update_rows"]]
    assert late_rows, "the generator should produce late-arriving updates"
    assert all(row["updated_at"] < row["previous_high_water_mark"] for row in late_rows)
    run_cli(env, "load", "operational")

    for table, (source, bronze) in bronze_matches_source(urls).items():
        assert source == bronze, f"after late updates and deletes, bronze {table} differs from the source"
    flagged = {
        row[0]
        for row in query(
            urls["warehouse"],
            "select id from bronze_operational.source_deletions where table_name = 'orders'",
        )
    }
    assert set(deleted) <= flagged
    for row in late_rows:
        landed = query(
            urls["warehouse"],
            f"select updated_at from bronze_operational.{row['table']} where id = %s",
            (row["id"],),
        )
        assert landed == [(row["updated_at"],)], f"late update of {row['table']} {row['id']} was missed"


@pytest.fixture(scope="module")
def uninterrupted_load(embedded_pg, tmp_path_factory):
    """One operational database (kept as a template to clone) and a clean, uninterrupted load of it."""
    from conftest import make_databases

    scale = generator.Scale(customers=300, suppliers=15, products=120, order_lines=120_000, history_days=200)
    reference = make_databases(embedded_pg, "kill_reference")
    generator.generate(reference["operational"], scale=scale, seed=5, as_of=AS_OF)
    started = time.monotonic()
    run_cli(cli_env(reference, tmp_path_factory.mktemp("reference")), "load", "operational")
    return {
        "urls": reference,
        "seconds": time.monotonic() - started,
        "template": _database(reference["operational"]),
    }


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.mark.parametrize("kill_after_fraction", [0.2, 0.5, 0.7])
def test_killed_mid_load_then_rerun_equals_uninterrupted(
    embedded_pg, uninterrupted_load, tmp_path, kill_after_fraction
):
    """SIGKILL the loader part-way (extract, normalize or load), re-run: same rows as a clean run."""
    from conftest import make_databases

    delay = uninterrupted_load["seconds"] * kill_after_fraction
    for attempt in range(3):  # the machine's load varies: if the loader finished first, kill sooner
        crashed = make_databases(embedded_pg, f"kill_{int(kill_after_fraction * 100)}_{attempt}")
        clone, template = _database(crashed["operational"]), uninterrupted_load["template"]
        query(embedded_pg.url("postgres"), f'drop database "{clone}"', autocommit=True)
        query(
            embedded_pg.url("postgres"), f'create database "{clone}" template "{template}"', autocommit=True
        )
        state_dir = tmp_path / f"attempt-{attempt}"
        state_dir.mkdir()
        env = cli_env(crashed, state_dir)
        proc = subprocess.Popen(
            [sys.executable, "-m", "loaders", "load", "operational"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        if proc.wait() == -signal.SIGKILL:
            break
        delay /= 2
    assert proc.returncode == -signal.SIGKILL, "the loader finished before it could be killed, three times"

    run_cli(env, "load", "operational")  # one re-run is enough: it finishes the crashed run, then loads
    reference = uninterrupted_load["urls"]["warehouse"]
    assert _bronze_fingerprints(crashed["warehouse"]) == _bronze_fingerprints(reference)
    for table, (source, bronze) in bronze_matches_source(crashed).items():
        assert source == bronze, f"bronze {table} differs from the source after a crash and re-run"


def test_bad_connection_url_gives_a_clear_error_without_the_password(embedded_pg, tmp_path: Path):
    env = cli_env(
        {
            "warehouse": "postgresql://loader:s3cr3t-pw@127.0.0.1:1/warehouse",
            "operational": "postgresql://loader:s3cr3t-pw@127.0.0.1:1/operational",
        },
        tmp_path,
    )
    result = run_cli(env, "load", "operational", check=False)
    assert result.returncode == 2
    assert "cannot connect to the warehouse database at postgresql://loader:****@127.0.0.1:1/warehouse" in (
        result.stderr
    )
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    # a reachable warehouse and an unreachable source: the message names the source
    env["WAREHOUSE_URL"] = embedded_pg.url("warehouse")
    result = run_cli(env, "load", "operational", check=False)
    assert result.returncode == 2
    expected = (
        "cannot connect to the operational database at postgresql://loader:****@127.0.0.1:1/operational"
    )
    assert expected in result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr

    env["WAREHOUSE_URL"] = "mysql://somewhere/warehouse"
    result = run_cli(env, "transform", check=False)
    assert result.returncode == 2
    assert "the warehouse URL must look like postgresql://" in result.stderr


def _all_columns_fingerprints(url: str, schema: str) -> dict[str, tuple]:
    """Per table: column names and types, and the content of every column dlt does not stamp per run."""
    result: dict[str, tuple] = {}
    for table in OPERATIONAL_TABLES:
        typed = query(
            url,
            "select column_name, data_type, is_nullable from information_schema.columns "
            "where table_schema = %s and table_name = %s order by column_name",
            (schema, table),
        )
        cols = [name for name, _, _ in typed if name not in ("_dlt_id", "_dlt_load_id", "_loaded_at")]
        result[table] = (typed, fingerprint(url, schema, table, cols))
    return result


def test_first_load_appends_and_gives_the_rows_a_merge_gives(fresh_databases, tmp_path):
    """An empty bronze is appended to (no staging, no delete/insert): same rows and types as a merge."""
    from dlt.common.data_writers.writers import ArrowToCsvWriter
    from dlt.normalize.items_normalizers import arrow as arrow_normalizer

    from loaders.operational.pipeline import load_operational

    dlt_as_it_was = (ArrowToCsvWriter.write_data, arrow_normalizer.generate_dlt_ids)

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=3, as_of=AS_OF)
    appended = load_operational(
        urls["operational"],
        urls["warehouse"],
        bronze_schema="bronze_appended",
        pipelines_dir=str(tmp_path / "a"),
    )
    merged = load_operational(
        urls["operational"],
        urls["warehouse"],
        bronze_schema="bronze_merged",
        pipelines_dir=str(tmp_path / "m"),
        append_when_empty=False,
    )
    dispositions = {
        name: table["write_disposition"]
        for name, table in appended.pipeline.default_schema.tables.items()
        if name in OPERATIONAL_TABLES
    }
    assert set(dispositions.values()) == {"append"}, dispositions
    assert {
        table["write_disposition"]
        for name, table in merged.pipeline.default_schema.tables.items()
        if name in OPERATIONAL_TABLES
    } == {"merge"}
    # the merge went through a staging dataset; the appends did not need one
    staging = query(
        urls["warehouse"],
        "select schema_name from information_schema.schemata where schema_name like 'bronze_%%_staging'",
    )
    assert staging == [("bronze_merged_staging",)]
    assert _all_columns_fingerprints(urls["warehouse"], "bronze_appended") == _all_columns_fingerprints(
        urls["warehouse"], "bronze_merged"
    )
    # the fast paths are the loader's own: other pipelines of the process get dlt as it was
    assert (ArrowToCsvWriter.write_data, arrow_normalizer.generate_dlt_ids) == dlt_as_it_was

    # the next run of the appended pipeline merges: a changed row replaces its old version
    query(urls["operational"], "update orders set status = 'cancelled', updated_at = now() where id = 1")
    again = load_operational(
        urls["operational"],
        urls["warehouse"],
        bronze_schema="bronze_appended",
        pipelines_dir=str(tmp_path / "a"),
    )
    assert again.pipeline.default_schema.tables["orders"]["write_disposition"] == "merge"
    assert query(urls["warehouse"], "select status from bronze_appended.orders where id = 1") == [
        ("cancelled",)
    ]
    for table in OPERATIONAL_TABLES:
        dupes = query(urls["warehouse"], f"select count(*) - count(distinct id) from bronze_appended.{table}")
        assert dupes == [(0,)], table
    for table, (source, bronze) in bronze_matches_source(urls, "bronze_appended").items():
        assert source == bronze, f"bronze {table} differs from the source"


def _load_into(urls: dict[str, str], tmp_path: Path, schema: str, **options: Any) -> Any:
    """load_operational into bronze `schema`, with a pipeline folder of its own (the same one on every call)."""
    from loaders.operational.pipeline import load_operational

    return load_operational(
        urls["operational"],
        urls["warehouse"],
        bronze_schema=schema,
        pipelines_dir=str(tmp_path / schema),
        **options,
    )


def _extracted_files(info: Any) -> dict[str, set[str]]:
    """Per data table, the kinds of file dlt's extract step wrote or imported for the last run."""
    kinds: dict[str, set[str]] = {}
    for steps in info.pipeline.last_trace.last_extract_info.metrics.values():
        for step in steps:
            for metrics in step["job_metrics"].values():
                table = Path(metrics.file_path).name.split(".")[0]
                if table in OPERATIONAL_TABLES:
                    kinds.setdefault(table, set()).add(Path(metrics.file_path).suffix)
    return kinds


def _stored_dlt_columns(url: str, schema: str) -> dict[str, dict[str, Any]]:
    """The column hints of the operational tables in the dlt schema stored with bronze (its last version)."""
    ((stored,),) = query(url, f"select schema from {schema}._dlt_version order by inserted_at desc limit 1")
    tables = json.loads(stored)["tables"]
    return {name: tables[name]["columns"] for name in OPERATIONAL_TABLES}


def test_csv_load_files_land_what_dlts_normalize_lands(fresh_databases, tmp_path):
    """The CSV load files written at extract (no Parquet, no normalize pass) give bronze the same rows,
    column types and dlt schema hints as dlt's own path, and well-formed `_dlt_id` / `_dlt_load_id`;
    merges after them work as before."""
    from loaders.operational.pipeline import loaded_row_counts

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=41, as_of=AS_OF)
    imported = _load_into(urls, tmp_path, "bronze_csv")
    normalized = _load_into(urls, tmp_path, "bronze_dlt", write_csv_load_files=False)
    assert _extracted_files(imported) == {table: {".csv"} for table in OPERATIONAL_TABLES}
    assert _extracted_files(normalized) == {table: {".parquet"} for table in OPERATIONAL_TABLES}
    assert loaded_row_counts(imported.pipeline) == loaded_row_counts(normalized.pipeline)
    assert _all_columns_fingerprints(urls["warehouse"], "bronze_csv") == _all_columns_fingerprints(
        urls["warehouse"], "bronze_dlt"
    )
    assert _stored_dlt_columns(urls["warehouse"], "bronze_csv") == _stored_dlt_columns(
        urls["warehouse"], "bronze_dlt"
    )
    for table in OPERATIONAL_TABLES:
        ((rows, ids, id_lengths, load_ids),) = query(
            urls["warehouse"],
            f"select count(*), count(distinct _dlt_id), array_agg(distinct length(_dlt_id)), "
            f"array_agg(distinct _dlt_load_id) from bronze_csv.{table}",
        )
        assert (ids, id_lengths, load_ids) == (rows, [14], list(imported.loads_ids)), table
    # the CSV folder is gone after the run: each file lives on in its load package only
    assert not list(tmp_path.glob("bronze_csv/*/csv-load-files"))

    # a change merges through the same path: one new version replaces the old, nothing else loads
    query(urls["operational"], "update customers set tier = 'gold', updated_at = now() where id = 3")
    merged = _load_into(urls, tmp_path, "bronze_csv")
    assert {t: n for t, n in loaded_row_counts(merged.pipeline).items() if n} == {"customers": 1}
    assert query(urls["warehouse"], "select tier from bronze_csv.customers where id = 3") == [("gold",)]
    for table, (source, bronze) in bronze_matches_source(urls, "bronze_csv").items():
        assert source == bronze, f"bronze {table} differs from the source"


def test_deletions_are_reconciled_in_the_warehouse(fresh_databases, tmp_path):
    """Source ids are anti-joined in the warehouse: every deleted id, all of a dropped table, no others."""
    from loaders.operational.pipeline import _deleted_ids_postgres, load_operational

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=13, as_of=AS_OF)
    # nothing loaded yet: no bronze table, nothing deleted (and the source ids are not even read)
    assert _deleted_ids_postgres(urls["operational"], urls["warehouse"], "bronze_operational", "orders") == []
    load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"))

    all_lines = {row[0] for row in query(urls["operational"], "select id from order_items")}
    gone = {
        row[0] for row in query(urls["operational"], "delete from order_items where id % 97 = 0 returning id")
    }
    assert gone
    found = _deleted_ids_postgres(urls["operational"], urls["warehouse"], "bronze_operational", "order_items")
    assert found == sorted(gone) and gone < all_lines
    query(urls["operational"], "alter table suppliers rename to suppliers_old")
    suppliers = {row[0] for row in query(urls["warehouse"], "select id from bronze_operational.suppliers")}
    assert _deleted_ids_postgres(
        urls["operational"], urls["warehouse"], "bronze_operational", "suppliers"
    ) == (sorted(suppliers))
    query(urls["operational"], "alter table suppliers_old rename to suppliers")

    load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"))
    flagged = query(
        urls["warehouse"],
        "select table_name, id from bronze_operational.source_deletions order by table_name, id",
    )
    assert flagged == [("order_items", line) for line in sorted(gone)]

    # a deletion keeps the time it was first seen; only a new one gets this run's (freshness moves only then)
    first_seen = dict(
        query(urls["warehouse"], "select id, detected_at from bronze_operational.source_deletions")
    )
    ((later,),) = query(
        urls["operational"], "delete from orders where id = (select max(id) from orders) returning id"
    )
    load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"))
    detected = dict(
        query(
            urls["warehouse"],
            "select id, detected_at from bronze_operational.source_deletions where table_name = 'order_items'",
        )
    )
    assert {line: detected[line] for line in first_seen} == first_seen  # (its lines are new deletions too)
    ((new_detection,),) = query(
        urls["warehouse"],
        "select detected_at from bronze_operational.source_deletions where table_name = 'orders' and id = %s",
        (later,),
    )
    assert new_detection > max(first_seen.values())


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_utc_timestamps_as_text_reads_back_as_the_same_instants(unit):
    """The fast path hands pyarrow's CSV writer text that reads back as the same values it would write:
    the writer's own text, or the same without the fraction for a column of whole seconds."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from loaders.dlt_fast_paths import utc_timestamps_as_text

    values = [
        dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.UTC),
        None,
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    ]
    whole_seconds = [dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=dt.UTC), None, values[2]]
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "at": pa.array(values, pa.timestamp(unit, tz="UTC")),
            "whole": pa.array(whole_seconds, pa.timestamp(unit, tz="UTC")),
            "local": pa.array(values, pa.timestamp(unit, tz="UTC")).cast(
                pa.timestamp(unit, tz="America/Sao_Paulo")
            ),
            "naive": pa.array([v.replace(tzinfo=None) if v else None for v in values], pa.timestamp(unit)),
            # one value in every row (a run's `_loaded_at`) is formatted once and repeated
            "stamp": pa.array([values[0]] * 3, pa.timestamp(unit, tz="UTC")),
            "no_value": pa.array([None] * 3, pa.timestamp(unit, tz="UTC")),
        }
    )
    fast = utc_timestamps_as_text(table)
    for name in ("at", "whole", "stamp", "no_value"):
        assert fast.schema.field(name).type == pa.string()
    assert fast.schema.field("local").type == table.schema.field("local").type  # only UTC is rewritten
    assert fast.column("naive").equals(table.column("naive"))

    def written(item: pa.Table, column_types: dict[str, pa.DataType]) -> pa.Table:
        sink = io.BytesIO()
        pacsv.write_csv(item, sink)
        # an unquoted empty field is NULL for COPY, a quoted one an empty string: keep them apart
        convert = pacsv.ConvertOptions(
            column_types=column_types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        return pacsv.read_csv(io.BytesIO(sink.getvalue()), convert_options=convert)

    as_text = {name: pa.string() for name in table.column_names}
    assert (
        written(fast, as_text).drop_columns(["whole"]).equals(written(table, as_text).drop_columns(["whole"]))
    )
    assert written(fast, as_text).column("at").to_pylist()[1] is None
    if unit != "s":  # the writer's own text has a fraction; a column of whole seconds is written without
        assert "." in written(table, as_text).column("whole").to_pylist()[0]
    assert written(fast, as_text).column("whole").to_pylist()[0] == "2024-02-29 23:59:58Z"
    # read back as instants, every column holds the values it was given
    as_instants = {name: table.schema.field(name).type for name in table.column_names}
    as_instants["local"] = as_instants["naive"] = pa.string()
    assert (
        written(fast, as_instants)
        .select(["at", "whole", "stamp", "no_value"])
        .equals(table.select(["at", "whole", "stamp", "no_value"]))
    )


def test_values_kept_as_text_carry_their_type_to_dlt_and_are_written_unquoted():
    """A column read as PostgreSQL's text of its values (a first load) tells dlt its real type, and a load
    file of such columns needs no quoting, while a real text column still is quoted."""
    import pyarrow as pa

    from loaders.dlt_fast_paths import _typed_schema, csv_quoting, text_value_field, text_value_type

    typed = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("total", pa.decimal128(12, 2)),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("name", pa.string()),
        ]
    )
    as_text = pa.schema([text_value_field(field) if field.name != "id" else field for field in typed])
    assert as_text.field("total").type == pa.string() and as_text.field("created_at").type == pa.string()
    assert text_value_type(as_text.field("total")) == pa.field("total", pa.decimal128(12, 2))
    assert text_value_type(as_text.field("name")) is None, "a text column is text either way"
    assert text_value_type(typed.field("id")) is None
    assert _typed_schema(as_text) == typed
    assert csv_quoting(as_text.remove(3)) == "quote_none", "numbers and timestamps as text need no quotes"
    assert csv_quoting(as_text) == "quote_needed", "a real text column is quoted"


def test_dlt_ids_are_the_ids_dlt_makes():
    """The vectorized row ids equal dlt's own encoding of the same random bytes, and are unique."""
    import base64
    import secrets

    from dlt.common.normalizers.utils import DLT_ID_LENGTH_BYTES, generate_dlt_ids

    from loaders.dlt_fast_paths import dlt_ids

    raw = secrets.token_bytes(5_000 * DLT_ID_LENGTH_BYTES)
    expected = [
        base64.b64encode(raw[i : i + DLT_ID_LENGTH_BYTES]).decode("ascii").rstrip("=")
        for i in range(0, len(raw), DLT_ID_LENGTH_BYTES)
    ]
    assert dlt_ids(5_000, raw).to_pylist() == expected
    assert {len(i) for i in dlt_ids(10, None).to_pylist()} == {len(generate_dlt_ids(1)[0])}
    fresh = dlt_ids(200_000).to_pylist()
    assert len(set(fresh)) == len(fresh)


def test_full_refresh_drops_and_appends_without_duplicates(fresh_databases, tmp_path):
    """A full refresh drops bronze and reloads it by append: every row once, as at the source. Views built
    on bronze (dbt's silver staging views, and views on those), which would make PostgreSQL refuse to drop
    the tables, are dropped first and named in the log; a view on dlt's own tables stays."""
    from loaders.operational.pipeline import load_operational, loaded_row_counts

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=23, as_of=AS_OF)
    load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"))
    for statement in (
        "create schema silver_views",
        "create view silver_views.stg_orders as select id, status from bronze_operational.orders",
        "create view silver_views.orders_per_status as "
        "select status, count(*) as orders from silver_views.stg_orders group by status",
        "create view silver_views.loads as select load_id from bronze_operational._dlt_loads",
    ):
        query(urls["warehouse"], statement)
    query(urls["operational"], "update customers set updated_at = now() where id % 10 = 0")
    refreshed = load_operational(
        urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"), full_refresh=True
    )
    assert _last_run_details(urls["warehouse"])["views_dropped"] == ["silver_views.stg_orders"]
    assert query(
        urls["warehouse"],
        "select table_name from information_schema.views where table_schema = 'silver_views'",
    ) == [("loads",)]
    assert {
        table["write_disposition"]
        for name, table in refreshed.pipeline.default_schema.tables.items()
        if name in OPERATIONAL_TABLES
    } == {"append"}
    row_counts = loaded_row_counts(refreshed.pipeline)
    for table in OPERATIONAL_TABLES:
        ((source_rows,),) = query(urls["operational"], f"select count(*) from {table}")
        assert row_counts[table] == source_rows, table  # re-extracted whole, not from the old cursor
        dupes = query(
            urls["warehouse"], f"select count(*) - count(distinct id) from bronze_operational.{table}"
        )
        assert dupes == [(0,)], table
    for table, (source, bronze) in bronze_matches_source(urls).items():
        assert source == bronze, f"bronze {table} differs from the source after a full refresh"

    # the merge path (as on BigQuery): bronze is compared with nothing, since the refresh drops it
    merged = load_operational(
        urls["operational"],
        urls["warehouse"],
        pipelines_dir=str(tmp_path / "dlt"),
        full_refresh=True,
        append_when_empty=False,
    )
    row_counts = loaded_row_counts(merged.pipeline)
    for table in OPERATIONAL_TABLES:
        ((source_rows,),) = query(urls["operational"], f"select count(*) from {table}")
        assert row_counts[table] == source_rows, table
    for table, (source, bronze) in bronze_matches_source(urls).items():
        assert source == bronze, f"bronze {table} differs from the source after a merged full refresh"


def _lookup_indexes(url: str) -> dict[str, str]:
    rows = query(
        url,
        "select indexname, indexdef from pg_indexes where schemaname = 'bronze_operational' "
        "and indexname like '%%lookup'",
    )
    return {name: definition.split(" USING btree ", 1)[1] for name, definition in rows}


def _last_run_details(url: str) -> dict[str, Any]:
    """The processing log's details of the newest operational run."""
    ((details,),) = query(
        url,
        "select details from ops.processing_log where component = 'operational' order by started_at desc limit 1",
    )
    return details


def test_dbt_builds_the_bronze_lookup_indexes_when_they_are_missing(fresh_databases, tmp_path):
    """Bronze's lookup indexes (orders by id, order_items by order_id, both by loaded_at as staging computes
    it), which the incremental order models find and read changed orders by, are declared on the sources and
    built by dbt's on-run-start when missing: after the first load, not again while they exist, and again
    when bronze lost one. Loading does not build them."""
    from loaders.operational.pipeline import load_operational

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=29, as_of=AS_OF)
    env = cli_env(urls, tmp_path / "state")
    loaded_at = "(timezone('UTC'::text, _loaded_at))"  # as the staging models read it (to_utc_timestamp)
    expected = {
        "orders__id__lookup": "(id)",
        "order_items__order_id__lookup": "(order_id)",
        "orders__loaded_at__lookup": loaded_at,
        "order_items__loaded_at__lookup": loaded_at,
    }

    def load(**options: Any) -> None:
        load_operational(
            urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"), **options
        )

    def dbt_run() -> list[str]:
        # any model will do: on-run-start runs before the selected nodes
        result = run_cli(
            env,
            "transform",
            "--",
            "--select",
            "stg_operational__suppliers",
            "--exclude-resource-type",
            "test",
        )
        assert _lookup_indexes(urls["warehouse"]) == expected
        return sorted(
            line.split("Created lookup index ")[1].split(" ")[0]
            for line in result.stdout.splitlines()
            if "Created lookup index " in line
        )

    load()
    assert _lookup_indexes(urls["warehouse"]) == {}, "loading does not build them"
    created = [f'"bronze_operational"."{name}"' for name in sorted(expected)]
    assert dbt_run() == created, "the first dbt run after the first load builds them"
    expression_statistics = query(
        urls["warehouse"],
        "select tablename from pg_stats where schemaname = 'bronze_operational' and tablename like '%%loaded_at%%'",
    )
    assert sorted({name for (name,) in expression_statistics}) == [
        "order_items__loaded_at__lookup",
        "orders__loaded_at__lookup",
    ], "the tables are analyzed, so the planner knows the expressions' values"
    query(urls["operational"], "update order_items set updated_at = now() where id % 20 = 0")
    load()
    assert dbt_run() == [], "they are kept by later loads and not built again"
    # bronze rebuilt without them (another tool's reload, a dropped and recreated table)
    query(urls["warehouse"], "drop index bronze_operational.orders__id__lookup")
    assert dbt_run() == ['"bronze_operational"."orders__id__lookup"'], (
        "the next dbt run builds what is missing"
    )


def _typed_fingerprints(url: str, schema: str) -> dict[str, tuple]:
    """Per table: every column's full type (length, precision, scale, nullability) and the content of every
    column dlt does not stamp per run."""
    result: dict[str, tuple] = {}
    for table in OPERATIONAL_TABLES:
        typed = query(
            url,
            "select column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, "
            "datetime_precision, is_nullable from information_schema.columns "
            "where table_schema = %s and table_name = %s order by ordinal_position",
            (schema, table),
        )
        cols = [row[0] for row in typed if row[0] not in ("_dlt_id", "_dlt_load_id", "_loaded_at")]
        result[table] = (typed, fingerprint(url, schema, table, cols))
    return result


# values that a text format can get wrong: NULL vs '', quotes, separators, line breaks, backslashes, the
# spellings other readers take for NULL, numeric extremes, DST edges, microseconds
AWKWARD_TEXTS = ("", 'say "hi", then\nleave\r\n', "NULL", "NA", "\\N", "tab\there \\ back", "  padded  ")
AWKWARD_TIMES = (
    "2026-03-08 02:30:00.000001 America/New_York",  # in the spring-forward gap
    "2026-11-01 01:30:00.999999-04",  # the repeated hour, first time
    "2026-11-01 01:30:00.999999-05",  # the repeated hour, second time
    "2026-10-25 00:59:59.123456+00",  # Europe's DST end
    "1999-12-31 23:59:59.5+00",
)


def _insert_awkward_rows(url: str) -> None:
    """Rows with the values above into customers, suppliers and orders of a generated source."""
    ((customer_id,), (supplier_id,), (order_id,)) = query(
        url,
        "select max(id) from customers union all select max(id) from suppliers "
        "union all select max(id) from orders",
    )
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            for n, (text, at) in enumerate(zip(AWKWARD_TEXTS, AWKWARD_TIMES * 2, strict=False), start=1):
                cur.execute(
                    "insert into customers (id, name, cnpj, contact_name, email, phone, address, city, uf, "
                    "region, tier, credit_limit, payment_terms, status, created_at, updated_at, utm_source, "
                    "utm_campaign) values (%s, %s, %s, %s, null, %s, %s, 'São Paulo', 'SP', 'Sudeste', "
                    "'gold', %s, '30 dias', 'active', %s, %s, null, %s)",
                    (
                        customer_id + n,
                        f"Farmácia {text}",
                        f"{n:014d}",
                        text,
                        text,
                        text,
                        "999999999999.99" if n % 2 else "0.01",
                        at,
                        at,
                        text or None,
                    ),
                )
                cur.execute(
                    "insert into suppliers (id, name, cnpj, type, contact_name, payment_terms, uf, region, "
                    "status, created_at, updated_at) values (%s, %s, %s, 'distributor', %s, 'à vista', 'PE', "
                    "'Nordeste', 'active', %s, %s)",
                    (supplier_id + n, f"Fornecedor {n}", f"9{n:013d}", text, at, at),
                )
                cur.execute(
                    "insert into orders (id, customer_id, order_date, status, subtotal, discount, tax, "
                    "shipping_cost, total, payment_method, payment_status, shipping_address, notes, "
                    "created_at, updated_at) values (%s, %s, cast(%s as timestamptz)::date, 'pending', "
                    "%s, 0.01, -0.00, 1234567890.12, 123456789012.34, 'pix', 'paid', %s, %s, %s, %s)",
                    (order_id + n, customer_id + n, at, "999999999999.99", text, text, at, at),
                )
        conn.commit()
    finally:
        conn.close()


def test_copy_reader_lands_what_the_row_reader_lands(fresh_databases, tmp_path):
    """COPY + pyarrow CSV gives bronze the same column types and values as dlt's row-by-row pyarrow reader,
    awkward values included."""
    from loaders.operational.pipeline import load_operational, loaded_row_counts

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=29, as_of=AS_OF)
    _insert_awkward_rows(urls["operational"])
    copied = load_operational(
        urls["operational"], urls["warehouse"], bronze_schema="bronze_copy", pipelines_dir=str(tmp_path / "c")
    )
    load_operational(
        urls["operational"],
        urls["warehouse"],
        bronze_schema="bronze_rows",
        pipelines_dir=str(tmp_path / "r"),
        read_with_copy=False,
    )
    by_copy = _typed_fingerprints(urls["warehouse"], "bronze_copy")
    assert by_copy == _typed_fingerprints(urls["warehouse"], "bronze_rows")
    assert by_copy["orders"][0], "bronze has no orders table"
    # the COPY reader really read every table (no silent fallback to the row reader), and this first load
    # (appended through CSV load files) kept the values as PostgreSQL's text, which COPY reads back
    ((details,),) = query(
        urls["warehouse"],
        "select details from ops.processing_log where component = 'operational' "
        "and details ->> 'full_refresh' is not null order by started_at limit 1",
    )
    assert details["source_reads"] == {table: "copy, values as text" for table in OPERATIONAL_TABLES}
    assert loaded_row_counts(copied.pipeline)["customers"] == SMALL.customers + len(AWKWARD_TEXTS)
    # and both hold the source's values: every row and column of the tables with awkward values, compared in
    # Python (timestamps as instants, numerics exactly), the other tables by fingerprint. One exception,
    # the same for both readers: dlt's COPY of CSV files lands an empty string as NULL (FORCE_NULL).
    awkward = ("customers", "suppliers", "orders")
    for table in awkward:
        cols = ", ".join(f'"{c}"' for c in _columns(urls["warehouse"], table, "bronze_copy") if c[0] != "_")
        source = [
            tuple(None if value == "" else value for value in row)
            for row in query(urls["operational"], f"select {cols} from {table} order by id")
        ]
        for schema in ("bronze_copy", "bronze_rows"):
            assert query(urls["warehouse"], f"select {cols} from {schema}.{table} order by id") == source
    for schema in ("bronze_copy", "bronze_rows"):
        for table, (source, bronze) in bronze_matches_source(urls, schema).items():
            assert table in awkward or source == bronze, f"{schema}.{table} differs from the source"
    assert query(
        urls["warehouse"],
        'select count(*) filter (where email is null), count(*) filter (where contact_name like \'say "hi", '
        "then\nleave\r\n'), count(*) filter (where address = 'NULL') from bronze_copy.customers "
        "where cnpj like '000000000000%%'",
    ) == [(len(AWKWARD_TEXTS), 1, 1)]


def test_incremental_run_reads_only_changes_and_the_lag_window(fresh_databases, tmp_path):
    """A second run reads the updated and inserted rows plus the rows inside the lag window, no more, with
    either reader, and loads only the updated and inserted ones: the re-read rows equal bronze."""
    from loaders.operational.pipeline import loaded_row_counts

    urls = fresh_databases
    lag = 2 * 24 * 3600
    generator.generate(urls["operational"], scale=SMALL, seed=31, as_of=AS_OF)
    readers = (("bronze_copy", True), ("bronze_rows", False))

    def load(schema: str, copy: bool) -> Any:
        return _load_into(urls, tmp_path, schema, lag_seconds=lag, read_with_copy=copy)

    for schema, copy in readers:
        load(schema, copy)
    high_water = {
        table: query(urls["operational"], f"select max(updated_at) from {table}")[0][0]
        for table in OPERATIONAL_TABLES
    }
    query(
        urls["operational"],
        "update order_items set quantity = quantity + 1, updated_at = now() where id % 50 = 0",
    )
    query(
        urls["operational"], "update customers set status = 'suspended', updated_at = now() where id % 7 = 0"
    )
    query(
        urls["operational"],
        "insert into orders select id + 1000000, customer_id, order_date, status, subtotal, discount, tax, "
        "shipping_cost, total, payment_method, payment_status, shipping_address, notes, created_at, now() "
        "from orders where id % 20 = 0",
    )
    expected = {
        table: query(
            urls["operational"],
            f"select count(*) from {table} where updated_at >= %s",
            (high_water[table] - dt.timedelta(seconds=lag),),
        )[0][0]
        for table in OPERATIONAL_TABLES
    }
    changed = query(urls["operational"], "select count(*) from order_items where id % 50 = 0")[0][0]
    assert expected["order_items"] >= changed > 0
    expected_loaded = {
        table: query(
            urls["operational"], f"select count(*) from {table} where updated_at > %s", (high_water[table],)
        )[0][0]
        for table in OPERATIONAL_TABLES
    }
    assert expected_loaded["order_items"] == changed and expected_loaded["orders"] > 0
    assert expected_loaded["products"] == 0 < expected["products"], "a quiet table re-read in the lag window"
    ((all_lines,),) = query(urls["operational"], "select count(*) from order_items")
    assert expected["order_items"] < all_lines / 2, "the lag window should not cover most of the table"

    for schema, copy in readers:
        info = load(schema, copy)
        row_counts = loaded_row_counts(info.pipeline)
        assert {table: row_counts.get(table, 0) for table in OPERATIONAL_TABLES} == expected_loaded, schema
        ((details,),) = query(
            urls["warehouse"],
            "select details from ops.processing_log where component = 'operational' "
            "and details->>'schema' = %s order by started_at desc limit 1",
            (schema,),
        )
        skipped = details["unchanged_rows_skipped"]
        read = {table: expected_loaded[table] + skipped.get(table, 0) for table in OPERATIONAL_TABLES}
        assert read == expected, f"{schema}: rows read = loaded + skipped as unchanged"
        for table, (source, bronze) in bronze_matches_source(urls, schema).items():
            assert source == bronze, f"{schema}.{table} differs from the source after the incremental run"
    assert _typed_fingerprints(urls["warehouse"], "bronze_copy") == _typed_fingerprints(
        urls["warehouse"], "bronze_rows"
    )


def _loaded_at(url: str, table: str) -> dict[int, dt.datetime]:
    return dict(query(url, f"select id, _loaded_at from bronze_operational.{table}"))


def test_a_reread_chunk_without_a_changed_row_does_not_stop_the_load(fresh_databases, tmp_path, monkeypatch):
    """The lag window is re-read in chunks, and a chunk whose rows all equal bronze loses them all. That
    empty chunk must not reach dlt's incremental step: with a lagged cursor, an empty table there made the
    next chunk fail an assertion, and the nightly load stopped (found on a benchmark warehouse at 1M lines,
    where the first chunk of the window held no change and a later one did)."""
    from loaders.operational import copy_backend, pipeline

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=43, as_of=AS_OF)
    lag = dt.timedelta(days=60)

    def load() -> dict[str, Any]:
        pipeline.load_operational(
            urls["operational"],
            urls["warehouse"],
            pipelines_dir=str(tmp_path / "dlt"),
            lag_seconds=lag.total_seconds(),
        )
        return _last_run_details(urls["warehouse"])

    load()
    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 500)
    monkeypatch.setattr(copy_backend, "READ_BLOCK_BYTES", 16 << 10)
    ((high_water,),) = query(urls["operational"], "select max(updated_at) from order_items")
    ((in_window,),) = query(
        urls["operational"], "select count(*) from order_items where updated_at >= %s", (high_water - lag,)
    )
    assert in_window > 2_000, "several chunks of re-read rows"
    # the changed line moves to the end of the table (an update writes a new row version), so COPY reads
    # it in the last chunk, after chunks of unchanged rows
    query(
        urls["operational"],
        "update order_items set quantity = quantity + 1 where id = (select max(id) from order_items)",
    )
    details = load()
    assert details["row_counts"]["order_items"] == 1
    assert details["unchanged_rows_skipped"]["order_items"] == in_window - 1
    for table, (source, bronze) in bronze_matches_source(urls).items():
        assert source == bronze, f"bronze {table} differs from the source"


def test_rerun_keeps_the_loaded_at_of_rows_that_did_not_change(fresh_databases, tmp_path):
    """Re-read rows equal to bronze are not loaded again, so `_loaded_at` (what dbt's freshness and the
    incremental models read) moves only for rows that changed, even when `updated_at` did not move."""
    from loaders.operational.pipeline import load_operational, loaded_row_counts

    urls = fresh_databases
    lag = dt.timedelta(days=30)
    generator.generate(urls["operational"], scale=SMALL, seed=41, as_of=AS_OF)

    def load() -> dict[str, int]:
        info = load_operational(
            urls["operational"],
            urls["warehouse"],
            pipelines_dir=str(tmp_path / "dlt"),
            lag_seconds=lag.total_seconds(),
        )
        counts = loaded_row_counts(info.pipeline)
        return {table: counts.get(table, 0) for table in OPERATIONAL_TABLES}

    # three customers inside the lag window (by updated_at, which none of the edits below moves)
    (high_water,) = query(urls["operational"], "select max(updated_at) from customers")[0]
    renamed, blanked, null_to_blank = (
        row[0]
        for row in query(
            urls["operational"],
            "select id from customers where updated_at >= %s and contact_name is not null order by id limit 3",
            (high_water - lag,),
        )
    )
    query(urls["operational"], "update customers set email = null where id = %s", (null_to_blank,))

    load()
    before = {table: _loaded_at(urls["warehouse"], table) for table in OPERATIONAL_TABLES}
    assert load() == dict.fromkeys(OPERATIONAL_TABLES, 0), "a quiet source loads nothing"
    assert {table: _loaded_at(urls["warehouse"], table) for table in OPERATIONAL_TABLES} == before
    details = _last_run_details(urls["warehouse"])
    assert details["unchanged_rows_skipped"]["customers"] >= 3, "customers were re-read in the lag window"

    # updated_at untouched: a changed name and a value that became '' (dlt lands it as NULL) are changes;
    # '' where bronze holds NULL is what dlt would land anyway, so it is not one
    query(urls["operational"], "update customers set name = name || ' (matriz)' where id = %s", (renamed,))
    query(urls["operational"], "update customers set contact_name = '' where id = %s", (blanked,))
    query(urls["operational"], "update customers set email = '' where id = %s", (null_to_blank,))

    assert load() == {table: 2 if table == "customers" else 0 for table in OPERATIONAL_TABLES}
    after = _loaded_at(urls["warehouse"], "customers")
    assert {key for key, at in after.items() if at != before["customers"][key]} == {renamed, blanked}
    landed = dict(
        (row[0], row[1:])
        for row in query(
            urls["warehouse"],
            "select id, name, contact_name, email from bronze_operational.customers where id = any(%s)",
            ([renamed, blanked, null_to_blank],),
        )
    )
    ((source_name,),) = query(urls["operational"], "select name from customers where id = %s", (renamed,))
    assert landed[renamed][0] == source_name
    assert landed[blanked][1] is None and landed[null_to_blank][2] is None
    for table, (source, bronze) in bronze_matches_source(urls).items():
        if table != "customers":  # '' at the source is NULL in bronze
            assert source == bronze, f"bronze {table} differs from the source"


def test_rows_a_resumed_load_copied_twice_are_dropped(fresh_databases, tmp_path):
    """A COPY replayed after its commit (killed before dlt marked the job done) leaves each such row twice,
    with the same _dlt_id: drop_replayed_rows keeps one of each and touches nothing else."""
    from loaders.operational.pipeline import REPLAY_CHECK_MARKER, drop_replayed_rows, load_operational

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=37, as_of=AS_OF)
    load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"))
    before = _bronze_fingerprints(urls["warehouse"])
    replayed = query(
        urls["warehouse"],
        "insert into bronze_operational.order_items select * from bronze_operational.order_items "
        "where id % 3 = 0 returning id",
    )
    assert replayed and _bronze_fingerprints(urls["warehouse"]) != before
    removed = drop_replayed_rows(urls["warehouse"], "bronze_operational", OPERATIONAL_TABLES)
    assert removed == {"order_items": len(replayed)}
    assert _bronze_fingerprints(urls["warehouse"]) == before
    assert drop_replayed_rows(urls["warehouse"], "bronze_operational", OPERATIONAL_TABLES) == {}

    # a crash during the resume itself: the marker left in the pipeline's folder makes the next run drop
    # them (lag 0, so the run's merge rewrites no old row and cannot hide a duplicate)
    query(
        urls["warehouse"],
        "insert into bronze_operational.order_items select * from bronze_operational.order_items "
        "where id % 3 = 0 returning id",
    )
    marker = tmp_path / "dlt" / "operational_to_bronze_operational" / REPLAY_CHECK_MARKER
    assert marker.parent.is_dir()
    marker.touch()
    load_operational(
        urls["operational"], urls["warehouse"], pipelines_dir=str(tmp_path / "dlt"), lag_seconds=0
    )
    assert not marker.exists()
    for table in OPERATIONAL_TABLES:
        ((rows, ids),) = query(
            urls["warehouse"], f"select count(*), count(distinct _dlt_id) from bronze_operational.{table}"
        )
        assert rows == ids, f"{table} still holds rows copied twice"


def test_copy_reader_stops_cleanly_and_reports_source_errors(fresh_databases):
    """Closing the reader early ends the COPY (no thread left writing); a failing COPY raises its error."""
    import threading

    import pyarrow as pa

    from loaders.operational.copy_backend import copy_arrow_tables

    url = fresh_databases["operational"]
    query(url, "create table t as select g as id, repeat('x', 200) as text from generate_series(1, 200000) g")
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("text", pa.string())])
    threads = threading.active_count()
    tables = copy_arrow_tables(url, "select id, text from t order by id", schema, chunk_rows=1_000)
    first = next(tables)
    assert first.num_rows >= 1_000 and first.column("id")[0].as_py() == 1 and first.schema == schema
    tables.close()  # the consumer stops: the producer must not stay blocked on the pipe
    assert threading.active_count() == threads
    whole = pa.concat_tables(copy_arrow_tables(url, "select id, text from t", schema, chunk_rows=50_000))
    assert whole.num_rows == 200_000 and sum(whole.column("id").to_pylist()) == 200_000 * 200_001 // 2
    assert list(copy_arrow_tables(url, "select id, text from t where false", schema, 10)) == []
    with pytest.raises(psycopg2.Error, match="division by zero"):
        list(copy_arrow_tables(url, "select id / (id - 150000), text from t", schema, 1_000))


def _completed_jobs(pipelines_dir: Path, table: str) -> list[Path]:
    return [p for p in pipelines_dir.rglob(f"completed_jobs/{table}.*") if p.is_file()]


def test_big_tables_land_as_several_load_jobs_with_every_row(fresh_databases, tmp_path, monkeypatch):
    """Rotated load files (`LOAD_FILE_MAX_ROWS`): a table is COPYed as several parallel jobs, first load
    (append) and merge alike, and bronze still holds every row once; the setting does not outlive the run."""
    import os

    from loaders.operational import copy_backend, pipeline

    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=41, as_of=AS_OF)
    monkeypatch.delenv("DATA_WRITER__FILE_MAX_ITEMS", raising=False)
    # the 1M-line proportions at 8k lines: files rotate between Arrow tables, so those are small too
    monkeypatch.setattr(pipeline, "LOAD_FILE_MAX_ROWS", 1_000)
    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 1_000)
    monkeypatch.setattr(copy_backend, "READ_BLOCK_BYTES", 64 << 10)
    first_dir = tmp_path / "first"
    pipeline.load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(first_dir))
    assert "DATA_WRITER__FILE_MAX_ITEMS" not in os.environ  # other loaders of the process keep dlt's
    ((lines,),) = query(urls["operational"], "select count(*) from order_items")
    assert lines > 5_000
    jobs = _completed_jobs(first_dir, "order_items")
    assert len(jobs) >= 4, [p.name for p in jobs]  # chunks round up to whole CSV blocks
    assert all(p.name.endswith(".csv") for p in jobs)
    for table, (source, bronze) in bronze_matches_source(urls).items():
        assert source == bronze, f"bronze {table} differs from the source"
    ((rows, ids, dlt_ids),) = query(
        urls["warehouse"],
        "select count(*), count(distinct id), count(distinct _dlt_id) from bronze_operational.order_items",
    )
    assert rows == ids == dlt_ids == lines

    # a merge of several files per table: late updates at the source reach bronze, nothing doubles
    query(
        urls["operational"],
        "update order_items set quantity = quantity + 1, "
        "updated_at = (select max(updated_at) from order_items) + interval '1 second' where id % 4 = 0",
    )
    pipeline.load_operational(urls["operational"], urls["warehouse"], pipelines_dir=str(first_dir))
    for table, (source, bronze) in bronze_matches_source(urls).items():
        assert source == bronze, f"bronze {table} differs from the source after the merge"
    assert query(
        urls["warehouse"], "select count(*) - count(distinct id) from bronze_operational.order_items"
    ) == [(0,)]


def test_loader_dlt_settings_are_scoped_and_overridable(monkeypatch):
    """The loader's dlt settings apply during its run only, and a value already in the environment wins."""
    import os

    from loaders.dlt_fast_paths import environment_defaults, load_file_rotation
    from loaders.operational.pipeline import LOAD_FILE_MAX_ROWS

    settings = load_file_rotation("postgres", LOAD_FILE_MAX_ROWS)
    assert settings == {"DATA_WRITER__FILE_MAX_ITEMS": str(LOAD_FILE_MAX_ROWS)}
    assert load_file_rotation("bigquery", LOAD_FILE_MAX_ROWS) == {}
    monkeypatch.delenv("DATA_WRITER__FILE_MAX_ITEMS", raising=False)
    with environment_defaults(settings):
        assert os.environ["DATA_WRITER__FILE_MAX_ITEMS"] == str(LOAD_FILE_MAX_ROWS)
    assert "DATA_WRITER__FILE_MAX_ITEMS" not in os.environ
    monkeypatch.setenv("DATA_WRITER__FILE_MAX_ITEMS", "7")
    with environment_defaults(settings):
        assert os.environ["DATA_WRITER__FILE_MAX_ITEMS"] == "7"
    assert os.environ["DATA_WRITER__FILE_MAX_ITEMS"] == "7"


def test_parquet_files_are_written_without_dictionary_pages_and_read_back_equal(monkeypatch):
    """Under the fast paths dlt's Parquet writer passes dlt's own options (so an upgrade that adds one is
    caught here) with dictionary encoding off; the file reads back as the table written."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from dlt.common.data_writers.writers import ArrowToParquetWriter, ParquetDataWriter
    from dlt.common.destination import DestinationCapabilitiesContext

    from loaders.dlt_fast_paths import dlt_fast_paths, parquet_writer_options

    caps = DestinationCapabilitiesContext.generic_capabilities("parquet")
    table = pa.table(
        {
            "id": pa.array(range(5_000), pa.int64()),
            "name": pa.array([f"n{i % 7}" for i in range(5_000)], pa.string()),
            "price": pa.array([None if i % 11 == 0 else i / 4 for i in range(5_000)]).cast(
                pa.decimal128(14, 2)
            ),
            "at": pa.array(range(5_000), pa.timestamp("us", tz="UTC")),
        }
    )
    # what dlt itself passes to pyarrow, recorded by a writer class that only keeps the arguments
    passed: dict[str, Any] = {}

    class Recorder:
        def __init__(self, sink: Any, schema: pa.Schema, **options: Any) -> None:
            passed.update(options)

    writer = ParquetDataWriter(io.BytesIO(), caps)
    monkeypatch.setattr(pq, "ParquetWriter", Recorder)
    writer._create_writer(table.schema)
    monkeypatch.undo()
    assert parquet_writer_options(writer.parquet_format) == {**passed, "use_dictionary": False}

    sink = io.BytesIO()
    with dlt_fast_paths():
        writer = ArrowToParquetWriter(sink, caps)
        writer.write_data([table])
        writer.close()
    assert ParquetDataWriter._create_writer.__module__.startswith("dlt.")  # restored on exit
    written = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    for index in range(written.metadata.num_columns):
        assert not written.metadata.row_group(0).column(index).has_dictionary_page
    assert written.read().equals(table)


def test_copy_text_format_reads_what_csv_reads_for_tables_without_text(fresh_databases):
    """A query without text columns is read in COPY's text format: the same Arrow values as csv, NULLs,
    extremes and time zones included; a query with a text column stays csv."""
    import pyarrow as pa

    from loaders.operational.copy_backend import copy_arrow_tables, copy_format_for

    url = fresh_databases["operational"]
    query(
        url,
        "create table t as select g as id, "
        "case when g % 5 = 0 then null when g % 7 = 0 then -9223372036854775808 "
        "when g % 11 = 0 then 9223372036854775807 else g * 37 end as big, "
        "case when g % 6 = 0 then null when g % 9 = 0 then -999999999999.99 "
        "when g % 13 = 0 then 999999999999.99 else cast(g / 7.0 as numeric(14, 2)) end as amount, "
        "case when g % 4 = 0 then null else g % 3 = 0 end as flag, "
        "case when g % 8 = 0 then null else date '2024-02-29' + g end as day, "
        "case when g % 10 = 0 then null else timestamptz '2025-03-30 00:59:59.999999+00' "
        "+ g * interval '17 minutes 0.000013 seconds' end as at, "
        "case when g % 12 = 0 then null else timestamp '1999-12-31 23:59:59' + g * interval '1 hour' "
        "end as naive "
        "from generate_series(1, 20000) g",
    )
    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("big", pa.int64()),
            pa.field("amount", pa.decimal128(14, 2)),
            pa.field("flag", pa.bool_()),
            pa.field("day", pa.date32()),
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("naive", pa.timestamp("us")),
        ]
    )
    assert copy_format_for(schema) == "text"
    assert copy_format_for(schema.append(pa.field("name", pa.string()))) == "csv"
    sql = "select id, big, amount, flag, day, at, naive from t order by id"
    text = pa.concat_tables(copy_arrow_tables(url, sql, schema, 5_000))
    csv = pa.concat_tables(copy_arrow_tables(url, sql, schema, 5_000, copy_format="csv"))
    assert text.num_rows == 20_000 and text.schema == schema
    assert text.equals(csv)
    # and both are what the server holds, value by value (psycopg2 reads timestamptz in the session zone)
    rows = query(url, "set timezone = 'UTC'; " + sql)
    assert [tuple(r.values()) for r in text.to_pylist()] == [tuple(r) for r in rows]
    assert text.column("amount").null_count > 0 and text.column("at").null_count > 0

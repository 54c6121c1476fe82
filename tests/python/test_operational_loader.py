"""The operational loader against real servers: idempotent, crash-safe, late updates and hard deletes."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _columns(url: str, table: str) -> list[str]:
    rows = query(
        url,
        "select column_name from information_schema.columns "
        "where table_schema = 'bronze_operational' and table_name = %s order by ordinal_position",
        (table,),
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

    crashed = make_databases(embedded_pg, f"kill_{int(kill_after_fraction * 100)}")
    clone, template = _database(crashed["operational"]), uninterrupted_load["template"]
    query(embedded_pg.url("postgres"), f'drop database "{clone}"', autocommit=True)
    query(embedded_pg.url("postgres"), f'create database "{clone}" template "{template}"', autocommit=True)

    env = cli_env(crashed, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loaders", "load", "operational"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(uninterrupted_load["seconds"] * kill_after_fraction)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the loader finished before it could be killed"

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

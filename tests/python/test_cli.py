"""The embedded default, as a user meets it: no URLs configured, the CLI starts its own PostgreSQL."""

from __future__ import annotations

import os
import re
import stat

import psycopg2
import pytest
from helpers import query, run_cli

from loaders.embedded_postgres import EmbeddedPostgres, free_port


@pytest.fixture()
def embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WAREHOUSE_URL", "OPERATIONAL_URL", "DBT_TARGET")}
    env.update(
        {
            "WAREHOUSE_STATE_DIR": str(tmp_path / "state"),
            "WAREHOUSE_PG_PORT": str(free_port()),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "RUNTIME__LOG_LEVEL": "WARNING",
        }
    )
    yield env
    run_cli(env, "down", check=False)


def test_embedded_server_lifecycle(embedded_env, tmp_path):
    run_cli(embedded_env, "up")
    run_cli(embedded_env, "up")  # idempotent: already running

    url = run_cli(embedded_env, "url").stdout.strip()
    port = embedded_env["WAREHOUSE_PG_PORT"]
    assert url.startswith("postgresql://postgres:") and url.endswith(f"@127.0.0.1:{port}/warehouse")
    assert query(url, "select current_database()") == [("warehouse",)]
    operational = run_cli(embedded_env, "url", "operational").stdout.strip()
    assert query(operational, "select current_database()") == [("operational",)]

    # the password is required over TCP, and kept in a file only its owner can read
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(f"postgresql://postgres@127.0.0.1:{port}/warehouse", connect_timeout=3).close()
    password_file = tmp_path / "state" / "postgres" / "superuser.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600

    run_cli(embedded_env, "down")
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(url, connect_timeout=3).close()


def test_embedded_server_starts_in_a_folder_too_deep_for_a_unix_socket(tmp_path):
    """Socket paths are limited to 107 bytes: a deep state folder (CI, xdist workers) still gets a server."""
    deep = tmp_path / ("state-" + "d" * 60) / ("nested-" + "e" * 60)
    server = EmbeddedPostgres(deep, port=free_port())
    assert len(f"{server.pgdata}/.s.PGSQL.{server.port}") > 107
    server.start()
    try:
        assert query(server.url("warehouse"), "select 1") == [(1,)]
    finally:
        server.stop()
    assert not server.is_running()


def test_port_taken_by_another_program_gives_a_clear_error(embedded_env, embedded_pg):
    embedded_env["WAREHOUSE_PG_PORT"] = str(embedded_pg.port)
    result = run_cli(embedded_env, "up", check=False)
    assert result.returncode == 2
    assert f"port {embedded_pg.port} on 127.0.0.1 is taken by another program" in result.stderr


def test_demo_runs_end_to_end_on_the_embedded_default(embedded_env, tmp_path):
    """The main job at a small scale: same code path as `make demo`, prints where to connect."""
    result = run_cli(
        embedded_env,
        "demo",
        "--customers=60",
        "--suppliers=6",
        "--products=40",
        "--order-lines=3000",
        "--history-days=90",
    )
    out = result.stdout
    port = embedded_env["WAREHOUSE_PG_PORT"]
    assert f"Connect (psql, BI tools): postgresql://postgres:****@127.0.0.1:{port}/warehouse" in out
    password = (tmp_path / "state" / "postgres" / "superuser.password").read_text().strip()
    assert password not in out + result.stderr
    assert (tmp_path / "state" / "target" / "static_index.html").exists()
    assert (tmp_path / "state" / "target" / "catalog.json").exists()

    url = run_cli(embedded_env, "url").stdout.strip()
    ((orders,),) = query(url, "select count(*) from gold.fact_orders")
    printed = re.search(r"gold\.fact_orders\s+([\d,]+) rows", out)
    assert printed is not None and int(printed.group(1).replace(",", "")) == orders > 0
    ((customers,),) = query(url, "select count(*) from gold.customer_360")
    assert customers == 60

    # a second run reuses the world and is a no-op for the data
    before = query(url, "select count(*), sum(total_amount) from gold.fact_orders")
    again = run_cli(embedded_env, "demo")
    assert "reusing it" in again.stdout
    assert query(url, "select count(*), sum(total_amount) from gold.fact_orders") == before

"""Shared fixtures: every test talks to a real PostgreSQL started here, on a free loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from bigquery_emulator import BigQueryEmulator
from helpers import query  # noqa: F401  (re-exported for the tests)

from loaders.embedded_postgres import EmbeddedPostgres, free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One real PostgreSQL server for the whole session, in its own folder and port."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), port=free_port())
    server.start()
    yield server
    server.stop()


def make_databases(server: EmbeddedPostgres, label: str) -> dict[str, str]:
    """A pair of empty databases (operational, warehouse) named after `label`; returns their URLs."""
    base = "t_" + "".join(c if c.isalnum() else "_" for c in label.lower())[:40]
    urls = {}
    conn = psycopg2.connect(server.url("postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role in ("operational", "warehouse"):
                name = f"{base}_{role}"[:63]
                cur.execute(f'drop database if exists "{name}" with (force)')
                cur.execute(f'create database "{name}"')
                urls[role] = server.url(name)
    finally:
        conn.close()
    return urls


@pytest.fixture()
def fresh_databases(embedded_pg: EmbeddedPostgres, request: pytest.FixtureRequest) -> dict[str, str]:
    """A pair of empty databases (operational, warehouse) private to one test; returns their URLs."""
    return make_databases(embedded_pg, request.node.name)


# The longest work units of the suite (an xdist_group, else a test), longest first, as measured on the 2-core
# CI machine. `--dist loadgroup` (with --no-loadscope-reorder, see pyproject.toml) hands the units to the two
# workers in collection order, each worker taking the next one as it frees up; starting with the longest
# keeps a five-minute unit from starting last and running alone at the end. Only the order changes.
LONGEST_FIRST = (
    "bigquery_daily",
    "tests/python/test_nightly.py",
    "e2e_daily",
    "lgpd_warehouse",
    "tests/python/test_cli.py::test_demo_runs_end_to_end_on_the_embedded_default",
    "gcs_pipeline",
    "gold_warehouse",
    "tests/python/test_bench_smoke.py",
    "marketing_pipeline",
    "tests/python/test_bigquery_dbt.py",
    "tests/python/test_style.py::test_sqlfluff_lint_is_clean",
    "tests/python/test_bigquery_loaders.py",
)


def xdist_groups(item: pytest.Item) -> list[str]:
    return sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group") if mark.args})


def work_unit_rank(item: pytest.Item) -> int:
    """Position of the item's work unit in LONGEST_FIRST; the others keep their order after them."""
    groups = xdist_groups(item)
    for rank, unit in enumerate(LONGEST_FIRST):
        if unit in groups or (not groups and item.nodeid.startswith(unit)):
            return rank
    return len(LONGEST_FIRST)


@pytest.hookimpl(trylast=True)  # after pytest's reordering by fixture scope and xdist's own hook
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=work_unit_rank)  # stable: a unit's tests keep their order, a module stays contiguous


os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """One BigQuery API emulator (bqemulator) for the whole session; see tests/python/bigquery_emulator.py."""
    with BigQueryEmulator(tmp_path_factory.mktemp("bqemulator")) as emulator:
        yield emulator

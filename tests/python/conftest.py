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


os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """One BigQuery API emulator (bqemulator) for the whole session; see tests/python/bigquery_emulator.py."""
    with BigQueryEmulator(tmp_path_factory.mktemp("bqemulator")) as emulator:
        yield emulator

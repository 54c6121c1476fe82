"""Least privilege: the BI role `bi_reader` reads gold and nothing else, logged in as that role.

The grants come from dbt (the `grants` config of the marts and the on-run hooks in dbt_project.yml); the
test only gives the role a password and LOGIN, as a DBA would for a BI tool's connection.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import pytest
from helpers import query
from lgpd_warehouse import GOLD, PREFIX, built_warehouse, relations

# one shared warehouse per test process: keep these modules on one xdist worker
pytestmark = pytest.mark.xdist_group("lgpd_warehouse")

FORBIDDEN_SCHEMAS = (
    "bronze_operational",
    "bronze_facebook_ads_staging",  # dlt's merge staging (first loads of the other sources append: none)
    "bronze_gcs",
    "bronze_facebook_ads",
    f"{PREFIX}_silver",
    f"{PREFIX}_snapshots",
    f"{PREFIX}_audit",
    "ops",
)


@pytest.fixture(scope="module")
def warehouse(embedded_pg, tmp_path_factory) -> dict[str, Any]:
    return built_warehouse(embedded_pg, tmp_path_factory)


@pytest.fixture(scope="module")
def bi_reader(warehouse) -> Iterator[Any]:
    """A connection logged in as bi_reader (password and LOGIN set here; the role itself comes from dbt)."""
    url = warehouse["urls"]["warehouse"]
    password = secrets.token_urlsafe(16)
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("select rolcanlogin from pg_roles where rolname = 'bi_reader'")
        assert cur.fetchone() == (False,), "dbt should create bi_reader as a NOLOGIN role"
        cur.execute("alter role bi_reader login password %s", (password,))
    parts = urlsplit(url)
    reader_url = urlunsplit(
        parts._replace(netloc=f"bi_reader:{quote(password)}@{parts.hostname}:{parts.port}")
    )
    conn = psycopg2.connect(reader_url)
    conn.autocommit = True
    yield conn
    conn.close()
    with admin.cursor() as cur:
        cur.execute("alter role bi_reader nologin password null")
    admin.close()


def can_select(conn: Any, schema: str, table: str) -> bool:
    with conn.cursor() as cur:
        try:
            cur.execute(f'select count(*) from "{schema}"."{table}"')
            cur.fetchone()
            return True
        except psycopg2.errors.InsufficientPrivilege:
            return False


def test_bi_reader_reads_every_gold_table_and_view(warehouse, bi_reader):
    gold = [t for s, t in relations(warehouse["urls"]["warehouse"]) if s == GOLD]
    assert {"fact_orders", "dim_customers", "customer_360"} <= set(gold)
    for table in gold:
        assert can_select(bi_reader, GOLD, table), f"bi_reader cannot read {GOLD}.{table}"
    with bi_reader.cursor() as cur:
        cur.execute(f"select count(*), sum(total_amount) from {GOLD}.fact_orders")
        count, total = cur.fetchone()
    assert count > 0 and total > 0


@pytest.mark.parametrize("schema", FORBIDDEN_SCHEMAS)
def test_bi_reader_reads_nothing_outside_gold(warehouse, bi_reader, schema):
    tables = [t for s, t in relations(warehouse["urls"]["warehouse"]) if s == schema]
    assert tables, f"{schema} should exist and hold tables for this test to mean anything"
    for table in tables:
        assert not can_select(bi_reader, schema, table), f"bi_reader can read {schema}.{table}"


def test_bi_reader_cannot_read_the_processing_log_or_the_erasure_register(warehouse, bi_reader):
    url = warehouse["urls"]["warehouse"]
    assert query(url, "select count(*) from ops.processing_log")[0][0] > 0
    assert not can_select(bi_reader, "ops", "processing_log")
    with bi_reader.cursor() as cur:
        cur.execute("select has_schema_privilege('ops', 'usage')")
        assert cur.fetchone() == (False,)


def test_bi_reader_cannot_change_gold(bi_reader):
    with bi_reader.cursor() as cur:
        for statement in (
            f"delete from {GOLD}.fact_orders",
            f"update {GOLD}.dim_customers set tier = 'gold'",
            f"create table {GOLD}.bi_scratch (x int)",
            f"drop table {GOLD}.dim_time",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)


def test_every_gold_model_declares_the_bi_grant(warehouse):
    """The grant is dbt configuration (re-applied on every build), not a one-off statement."""
    from lgpd_warehouse import manifest

    doc = manifest(warehouse["state_dir"])
    gold_models = [n for n in doc["nodes"].values() if n["resource_type"] == "model" and n["schema"] == GOLD]
    assert len(gold_models) >= 12
    for node in gold_models:
        assert node["config"]["grants"] == {"select": ["bi_reader"]}, node["name"]
    others = [n for n in doc["nodes"].values() if n["resource_type"] in ("model", "seed", "snapshot")]
    for node in others:
        if node["schema"] != GOLD:
            assert not node["config"].get("grants"), f"{node['name']} ({node['schema']}) must not be granted"

"""Helpers shared by the pipeline tests: run the real CLI, compare tables by content."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2

PROJECT_DIR = Path(__file__).resolve().parents[2]
OPERATIONAL_TABLES = ("suppliers", "customers", "products", "pricing", "inventory", "orders", "order_items")


def cli_env(urls: dict[str, str], state_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "WAREHOUSE_URL": urls["warehouse"],
            "OPERATIONAL_URL": urls["operational"],
            "WAREHOUSE_STATE_DIR": str(state_dir),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "RUNTIME__LOG_LEVEL": "WARNING",
            # the Facebook source is the local Graph API double, driven by the test's operational world
            "FACEBOOK_ADS_SOURCE": "double",
        }
    )
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "loaders", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"warehouse {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def columns(url: str, schema: str, table: str) -> list[str]:
    rows = query(
        url,
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
        "order by ordinal_position",
        (schema, table),
    )
    return [r[0] for r in rows]


def fingerprint(url: str, schema: str, table: str, cols: list[str], where: str = "true") -> tuple[int, str]:
    """Row count and md5 of the ordered rows restricted to `cols`: equal content <=> equal fingerprint."""
    col_list = ", ".join(f'"{c}"' for c in cols)
    order = "id" if "id" in cols else col_list
    sql = (
        f"select count(*), coalesce(md5(string_agg(cast(t as text), '|' order by {order})), '') "
        f'from (select {col_list} from "{schema}"."{table}" where {where}) as t'
    )
    ((count, digest),) = query(url, sql)
    return count, digest


def query(url: str, sql: str, params: tuple | None = None, autocommit: bool = False) -> list[tuple]:
    """Run one statement and commit; autocommit for statements that refuse transactions (create database)."""
    conn = psycopg2.connect(url)
    conn.autocommit = autocommit
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def delete_one_order_line(url: str) -> tuple[int, int]:
    """Hard-delete one line of an order nothing else touched lately, at the source: (line id, order id).

    The order with several lines whose header and lines were updated longest ago keeps its other lines
    and does not change itself, so only the deletion of the line tells a model summing lines per order
    that the order changed. Its last line goes (never the first line of all: other tests corrupt that one).
    """
    ((item_id, order_id),) = query(
        url,
        """
        delete from order_items where id = (
            select max(items.id) from order_items as items
            where items.order_id = (
                select orders.id from orders
                inner join order_items as lines on lines.order_id = orders.id
                group by orders.id, orders.updated_at
                having count(*) > 1
                order by greatest(orders.updated_at, max(lines.updated_at)), orders.id
                limit 1
            )
        )
        returning id, order_id
        """,
    )
    return item_id, order_id


def bronze_matches_source(
    urls: dict[str, str], bronze_schema: str = "bronze_operational"
) -> dict[str, tuple]:
    """Per table: (source fingerprint, bronze fingerprint of the rows not deleted at the source)."""
    result = {}
    for table in OPERATIONAL_TABLES:
        cols = columns(urls["operational"], "public", table)
        source = fingerprint(urls["operational"], "public", table, cols)
        bronze = fingerprint(
            urls["warehouse"],
            bronze_schema,
            table,
            cols,
            where=f"id not in (select id from \"{bronze_schema}\".source_deletions where table_name = '{table}')",
        )
        result[table] = (source, bronze)
    return result


def interaction(n: int, **overrides: Any) -> dict[str, Any]:
    """A valid customer_interactions record; an override of `...` drops the field."""
    record = {
        "interaction_id": f"INT-{n:05d}",
        "customer_cnpj": "11222333000181",
        "channel": "whatsapp",
        "type": "inquiry",
        "started_at": "2026-06-30T09:15:00",
        "resolved": True,
        "resolved_at": "2026-06-30T09:27:30",
        "resolution_time_minutes": 12.5,
        "agent_type": "ai",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}

"""The whole pipeline on BigQuery, on the BigQuery API emulator (tests/python/bigquery_emulator.py).

The real CLI does everything, with the one switch WAREHOUSE=bigquery: the three loaders land bronze in BigQuery
(load jobs), then `warehouse transform` runs `dbt build` (seeds, models, snapshots, tests, unit tests) on the
bigquery_ci target. A daily cycle follows (generator `advance`, load, incremental build), and the incremental
facts and the snapshots are compared with a full refresh and with the source (one cycle is enough here: the
PostgreSQL module runs three). A bad record in bronze must stop
the build (quality gate).

Assertions read BigQuery through fully qualified names: the emulator may answer an unqualified name with an
empty result. The scale is tiny on purpose: the PostgreSQL tests cover the logic in depth; this module proves
the same project runs unchanged on BigQuery with its own physical design (partitions, insert_overwrite).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bigquery_emulator import DBT_THREADS_ARGS
from conftest import make_databases
from helpers import cli_env, delete_one_order_line, query, run_cli

from loaders.operational import generator

# its module-scoped warehouse is built once: keep the module on one xdist worker. The first build and the
# daily run on the emulator take minutes, a busy machine can double that, and pytest-timeout counts the
# module fixture's set-up against its first test.
pytestmark = [pytest.mark.xdist_group("bigquery_daily"), pytest.mark.timeout(2400)]

AS_OF = dt.date(2026, 6, 30)
SCALE = generator.Scale(
    customers=40, suppliers=5, products=25, order_lines=800, history_days=45, warehouses=2
)
PREFIX = "bqdaily"
REFRESH_PREFIX = "bqrefresh"
INCREMENTAL_FACTS = {
    # fact: (partition column, key columns)
    "fact_orders": ("order_date", ("order_item_id",)),
    "fact_customer_interactions": ("interaction_date", ("interaction_id",)),
    "fact_inventory_snapshots": ("snapshot_date", ("inventory_snapshot_id",)),
    "fact_ad_performance": ("date_day", ("ad_id", "date_day")),
}
ZERO_LOOKBACK = {f"{fact}_lookback_hours": 0 for fact in INCREMENTAL_FACTS}
# the daily builds skip the data tests (the first build ran all of them) to keep the module fast
NO_TESTS = ("--exclude-resource-type", "test", "--exclude-resource-type", "unit_test")


def dbt_vars(as_of: dt.date, **extra: object) -> str:
    return json.dumps({"as_of_date": as_of.isoformat(), **extra})


def bigquery_env(urls: dict[str, str], state_dir: Path, emulator: Any, prefix: str) -> dict[str, str]:
    """The CLI's environment for WAREHOUSE=bigquery on the emulator, with bronze and ops datasets of its own."""
    env = cli_env(urls, state_dir, **emulator.dbt_env(prefix))
    env.pop("WAREHOUSE_URL", None)  # the warehouse is BigQuery; only the operational source is PostgreSQL
    env.update(
        {
            "BRONZE_OPERATIONAL_SCHEMA": f"{PREFIX}_bronze_operational",
            "BRONZE_GCS_SCHEMA": f"{PREFIX}_bronze_gcs",
            "BRONZE_FACEBOOK_SCHEMA": f"{PREFIX}_bronze_facebook_ads",
            "OPS_SCHEMA": f"{PREFIX}_ops",
        }
    )
    return env


def rows(emulator: Any, dataset: str, table: str, columns: list[str] | None = None, where: str = "") -> list:
    cols = ", ".join(columns) if columns else "*"
    sql = f"select {cols} from {emulator.table(dataset, table)}" + (f" where {where}" if where else "")
    return sorted((tuple(_plain(v) for v in row) for row in emulator.query(sql)), key=repr)


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


@pytest.fixture(scope="module")
def bq_daily(embedded_pg, bigquery_emulator, tmp_path_factory):
    """Generate, load and build on BigQuery; then a daily cycle of advance -> load -> incremental build."""
    urls = make_databases(embedded_pg, "bq_daily")
    generator.generate(urls["operational"], scale=SCALE, seed=11, as_of=AS_OF)
    state = tmp_path_factory.mktemp("bq_state")
    env = bigquery_env(urls, state, bigquery_emulator, PREFIX)
    run_cli(env, "gcs", "samples", "--as-of", AS_OF.isoformat())
    run_cli(env, "load")
    first_build = run_cli(env, "transform", "--", "--vars", dbt_vars(AS_OF), *DBT_THREADS_ARGS)
    days = generator.advance_day(urls["operational"], days=1)
    # a line deleted alone: its order stays, with a new total (int_order_totals_summed)
    deleted_line = delete_one_order_line(urls["operational"])
    run_cli(env, "load")
    world = generator.world_date(urls["operational"])
    run_cli(env, "transform", "--", "--vars", dbt_vars(world, **ZERO_LOOKBACK), *NO_TESTS, *DBT_THREADS_ARGS)
    return {
        "urls": urls,
        "env": env,
        "state": state,
        "days": days,
        "deleted_line": deleted_line,
        "first_build": first_build,
    }


def test_first_build_ran_every_test_and_unit_test_on_bigquery(bq_daily):
    out = bq_daily["first_build"].stdout
    assert "target='bigquery_ci'" in out
    done = [line for line in out.splitlines() if "Done. PASS=" in line]
    assert done and "ERROR=0" in done[-1] and "SKIP=0" in done[-1], done
    assert int(done[-1].split("PASS=")[1].split()[0]) > 400, "seeds, models, snapshots, tests, unit tests"


def test_fact_orders_reconciles_with_the_operational_source(bq_daily, bigquery_emulator):
    source = query(bq_daily["urls"]["operational"], "select count(*), sum(total) from order_items")
    ((count, total),) = bigquery_emulator.query(
        f"select count(*), sum(total_amount) from {bigquery_emulator.table(f'{PREFIX}_gold', 'fact_orders')} "
        "where order_date >= '1900-01-01'"
    )
    assert (count, Decimal(total)) == (source[0][0], source[0][1])


def test_hard_deleted_orders_leave_gold(bq_daily, bigquery_emulator):
    deleted = [i for day in bq_daily["days"] for i in day["deleted_order_ids"]]
    assert deleted, "the generator deletes orders every day"
    ids = ", ".join(str(i) for i in deleted)
    left = bigquery_emulator.query(
        f"select count(*) from {bigquery_emulator.table(f'{PREFIX}_gold', 'fact_orders')} "
        f"where order_date >= '1900-01-01' and order_id in ({ids})"
    )
    assert left == [(0,)]


def test_daily_incremental_runs_equal_a_full_refresh(bq_daily, bigquery_emulator, tmp_path):
    urls = bq_daily["urls"]
    env = dict(bq_daily["env"], DBT_SCHEMA_PREFIX=REFRESH_PREFIX, WAREHOUSE_STATE_DIR=str(tmp_path))
    as_of = generator.world_date(urls["operational"])
    run_cli(
        env,
        "transform",
        "--",
        "--full-refresh",
        "--select",
        "+marts",
        "--vars",
        dbt_vars(as_of),
        *NO_TESTS,
        *DBT_THREADS_ARGS,
    )
    for fact, (partition_column, _) in INCREMENTAL_FACTS.items():
        everything = f"{partition_column} >= '1900-01-01'"
        incremental = rows(bigquery_emulator, f"{PREFIX}_gold", fact, where=everything)
        full = rows(bigquery_emulator, f"{REFRESH_PREFIX}_gold", fact, where=everything)
        assert incremental, f"{fact} is empty"
        assert incremental == full, f"gold {fact} after daily runs differs from a full refresh"
    everything = "order_date >= '1900-01-01'"
    incremental = rows(bigquery_emulator, f"{PREFIX}_silver", "int_order_totals_summed", where=everything)
    full = rows(bigquery_emulator, f"{REFRESH_PREFIX}_silver", "int_order_totals_summed", where=everything)
    assert incremental == full, "int_order_totals_summed after a daily run differs from a full refresh"
    _, order_id = bq_daily["deleted_line"]
    ((lines, revenue),) = query(
        urls["operational"], "select count(*), sum(total) from order_items where order_id = %s", (order_id,)
    )
    summed = rows(
        bigquery_emulator,
        f"{PREFIX}_silver",
        "int_order_totals_summed",
        ["order_lines", "order_revenue"],
        where=f"order_id = {order_id}",
    )
    assert summed == [(lines, float(revenue))]


def test_incremental_facts_are_partitioned_and_rewrite_only_changed_partitions(bq_daily, bigquery_emulator):
    client = bigquery_emulator.client()
    for fact, (partition_column, _) in INCREMENTAL_FACTS.items():
        table = client.get_table(f"{bigquery_emulator.project}.{PREFIX}_gold.{fact}")
        assert table.time_partitioning is not None, fact
        assert table.time_partitioning.field == partition_column
        assert table.time_partitioning.type_ == "DAY"
    orders = client.get_table(f"{bigquery_emulator.project}.{PREFIX}_gold.fact_orders")
    assert orders.time_partitioning.require_partition_filter is True
    # the last daily run: insert_overwrite with dynamic partitions (only the days computed from the new rows)
    run_sql = (
        bq_daily["state"]
        / "target"
        / "run"
        / "pharma_warehouse"
        / "models"
        / "marts"
        / "core"
        / "fact_orders.sql"
    ).read_text()
    assert "dbt_partitions_for_replacement" in run_sql
    assert (
        "when not matched by source" in run_sql.lower()
        and "in unnest(dbt_partitions_for_replacement)" in run_sql
    )
    assert "partition by order_date" in run_sql.lower() or "merge" in run_sql.lower()


def test_snapshots_follow_the_source_after_daily_runs(bq_daily, bigquery_emulator):
    urls = bq_daily["urls"]
    snapshots = f"{PREFIX}_snapshots"
    source = sorted(query(urls["operational"], "select id, tier from customers"))
    current = rows(
        bigquery_emulator, snapshots, "snap_customers", ["customer_id", "tier"], where="dbt_valid_to is null"
    )
    assert current == sorted(((i, t) for i, t in source), key=repr)
    changed = {c for day in bq_daily["days"] for c in day["tier_changes"]}
    assert changed, "the generator changes tiers every day"
    history = dict(
        bigquery_emulator.query(
            f"select customer_id, count(distinct tier) from {bigquery_emulator.table(snapshots, 'snap_customers')} "
            f"where customer_id in ({', '.join(str(c) for c in changed)}) group by customer_id"
        )
    )
    assert all(history.get(c, 0) >= 2 for c in changed), history


def test_quality_gate_stops_the_build_on_bad_data(bq_daily, bigquery_emulator):
    """A negative quantity in bronze fails the staging test; dbt build exits non-zero and builds nothing after."""
    bronze = bigquery_emulator.table(f"{PREFIX}_bronze_operational", "order_items")
    ((bad_id,),) = bigquery_emulator.query(f"select max(id) + 1000000 from {bronze}")
    bigquery_emulator.query(
        f"insert into {bronze} select * replace ({bad_id} as id, -5 as quantity) from {bronze} "
        f"where id = (select min(id) from {bronze})"
    )
    try:
        as_of = generator.world_date(bq_daily["urls"]["operational"])
        result = run_cli(
            bq_daily["env"],
            "transform",
            "--",
            "--select",
            "stg_operational__order_items+1",
            "--vars",
            dbt_vars(as_of),
            *DBT_THREADS_ARGS,
            check=False,
        )
        assert result.returncode != 0, result.stdout[-3000:]
        assert "FAIL" in result.stdout and "stg_operational__order_items" in result.stdout
        assert "SKIP" in result.stdout, "what depends on the failed test is not built"
    finally:
        bigquery_emulator.query(f"delete from {bronze} where id = {bad_id}")

"""The Facebook Ads loader against the Graph API test double over real HTTP, into a real PostgreSQL.

The double serves the sample world of the operational generator (campaigns acquire pharmacies, which
place orders); each test injects the faults it is about and checks bronze against the API's own answers
(`double.insights`, the ground truth) or against a clean reference load.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import make_databases
from helpers import PROJECT_DIR, fingerprint, query

from loaders.facebook.bronze_versions import BronzeVersions
from loaders.facebook.client import ClientSettings, FacebookAuthError, FacebookThrottled
from loaders.facebook.graph_double import GraphDouble, serve
from loaders.facebook.pipeline import GRAIN, earliest_insights_date, load_facebook
from loaders.operational import generator

AS_OF = dt.date(2024, 3, 15)
START = AS_OF - dt.timedelta(days=70)
SCALE = generator.Scale(
    customers=150, suppliers=8, products=40, order_lines=5_000, history_days=120, warehouses=2
)
TOKEN = "EAAGtest0Secret0Token0" + "7f3a9c1e5b"  # distinctive, so a leak is easy to find
SCHEMA = "bronze_facebook_ads"
TABLES = ("ad_accounts", "campaigns", "ad_sets", "ads", "ad_insights")
# waits keep their API length in the logic (and in stats) but sleep 1/1000 of it
FAST = ClientSettings(time_scale=0.001, poll_interval_seconds=2, stall_polls=4, transient_backoff_seconds=1)
METRICS = ("spend", "impressions", "reach", "clicks", "frequency", "actions", "action_values")


# -- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(embedded_pg) -> str:
    """One operational world shared by the module (the double only reads it)."""
    url = make_databases(embedded_pg, "fb_world")["operational"]
    generator.generate(url, scale=SCALE, seed=7, as_of=AS_OF)
    return url


@pytest.fixture()
def double(world):
    with serve(world, access_token=TOKEN, today=AS_OF) as d:
        yield d


@pytest.fixture()
def warehouse(embedded_pg, request) -> str:
    return make_databases(embedded_pg, "fbw_" + request.node.name)["warehouse"]


@pytest.fixture(scope="module")
def reference(embedded_pg, world, tmp_path_factory):
    """A clean, uninterrupted load of the world (START..AS_OF): what every recovered run must equal."""
    url = make_databases(embedded_pg, "fb_reference")["warehouse"]
    with serve(world, access_token=TOKEN, today=AS_OF) as d:
        started = time.monotonic()
        result = run_load(d, url, tmp_path_factory.mktemp("fb_reference"))
        seconds = time.monotonic() - started
        requests = len(d.requests)
    return {"url": url, "fingerprints": bronze_fingerprints(url), "seconds": seconds, "requests": requests,
            "result": result}  # fmt: skip


def run_load(double: GraphDouble, warehouse: str, state_dir: Path, **overrides):
    args = {
        "base_url": double.base_url,
        "access_token": TOKEN,
        "account_ids": double.account_ids,
        "pipelines_dir": str(state_dir / "dlt"),
        "start_date": START,
        "today": double.today,
        "client_settings": FAST,
        "progress": None,
    }
    args.update(overrides)
    return load_facebook(warehouse, **args)


def cli_load(
    double: GraphDouble, warehouse: str, state_dir: Path, *extra: str, token: str = TOKEN
) -> list[str]:
    """The command line of one load in a subprocess; the token travels in the environment only."""
    accounts = [arg for account in double.account_ids for arg in ("--account", account)]
    return [
        sys.executable, "-m", "loaders.facebook", "load", "--warehouse-url", warehouse, "--base-url",
        double.base_url, *accounts, "--pipelines-dir", str(state_dir / "dlt"), "--start-date", START.isoformat(),
        "--today", double.today.isoformat(), "--client-settings", json.dumps(FAST.__dict__), *extra,
    ]  # fmt: skip


def cli_env(token: str = TOKEN, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SOURCES__FACEBOOK_ADS__ACCESS_TOKEN": token, "RUNTIME__LOG_LEVEL": "INFO", **extra})
    return env


def data_columns(url: str, table: str) -> list[str]:
    rows = query(
        url,
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
        "order by ordinal_position",
        (SCHEMA, table),
    )
    return [r[0] for r in rows if not r[0].startswith("_")]


def bronze_fingerprints(url: str, tables: tuple[str, ...] = TABLES) -> dict[str, tuple[int, str]]:
    return {t: fingerprint(url, SCHEMA, t, data_columns(url, t)) for t in tables}


def bronze_tables(url: str) -> list[str]:
    rows = query(url, "select table_name from information_schema.tables where table_schema = %s", (SCHEMA,))
    return sorted(r[0] for r in rows if not r[0].startswith("_dlt"))


def _actions(value) -> list:
    items = json.loads(value) if isinstance(value, str) else (value or [])
    return sorted((a["action_type"], str(a["value"])) for a in items)


def bronze_insights(url: str, table: str = "ad_insights", breakdowns: tuple[str, ...] = ()) -> dict:
    keys = ", ".join((*GRAIN, *breakdowns))
    rows = query(url, f"select {keys}, {', '.join(METRICS)} from {SCHEMA}.{table}")
    n = len(GRAIN) + len(breakdowns)
    return {
        tuple(str(v) for v in row[:n]): (row[n], row[n + 1], row[n + 2], row[n + 3], row[n + 4],
                                         _actions(row[n + 5]), _actions(row[n + 6]))
        for row in rows
    }  # fmt: skip


def api_insights(
    double: GraphDouble, since: dt.date, until: dt.date, breakdowns: tuple[str, ...] = ()
) -> dict:
    result = {}
    for account in double.account_ids:
        for r in double.insights(account, since, until, breakdowns):
            key = tuple(str(r[k]) for k in (*GRAIN, *breakdowns))
            result[key] = (Decimal(r["spend"]), int(r["impressions"]), int(r["reach"]), int(r["clicks"]),
                           float(r["frequency"]), _actions(r.get("actions")), _actions(r.get("action_values")))  # fmt: skip
    return result


def state_of(url: str) -> list[tuple]:
    """dlt's committed pipeline state rows (the incremental cursors live there)."""
    if not query(url, "select to_regclass(%s)", (f"{SCHEMA}._dlt_pipeline_state",))[0][0]:
        return []
    return query(url, f"select version, state from {SCHEMA}._dlt_pipeline_state order by version")


def warehouse_text(url: str) -> str:
    """Every row of every table of every user schema, as text (to look for leaked secrets)."""
    tables = query(
        url,
        "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' "
        "and table_schema not in ('pg_catalog', 'information_schema')",
    )
    return "\n".join(
        str(query(url, f'select coalesce(string_agg(t::text, chr(10)), \'\') from "{s}"."{t}" t')[0][0])
        for s, t in tables
    )


def files_containing(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def processing_log(url: str) -> list[tuple]:
    return query(url, "select status, message, details::text from ops.processing_log order by started_at")


# -- the happy path ----------------------------------------------------------------------------------


def test_first_load_matches_the_api_and_keeps_archived_and_deleted_objects(double, warehouse, tmp_path):
    result = run_load(double, warehouse, tmp_path)

    assert bronze_tables(warehouse) == sorted(TABLES)
    assert bronze_insights(warehouse) == api_insights(double, START, AS_OF)
    # every facebook acquisition of the window is a purchase in bronze
    purchases = query(
        warehouse,
        f"""select coalesce(sum((a ->> 'value')::int), 0) from {SCHEMA}.ad_insights,
            jsonb_array_elements(actions) a where a ->> 'action_type' = 'purchase'""",
    )[0][0]
    since = dt.datetime.combine(START, dt.time(3), dt.UTC)
    acquired = query(
        double.operational_url,
        "select count(*) from customers where utm_source = 'facebook' and created_at >= %s",
        (since,),
    )[0][0]
    assert acquired > 0 and purchases >= acquired

    # entities: every object of every status, archived and deleted ones included
    api_campaigns = {c["id"]: c["effective_status"] for c in double.campaigns()}
    bronze_campaigns = dict(query(warehouse, f"select id, effective_status from {SCHEMA}.campaigns"))
    assert bronze_campaigns == api_campaigns
    assert {"ARCHIVED", "DELETED", "ACTIVE"} <= set(bronze_campaigns.values())
    deleted = [c for c, s in bronze_campaigns.items() if s == "DELETED"]
    assert (
        query(warehouse, f"select count(*) from {SCHEMA}.ads where campaign_id = any(%s)", (deleted,))[0][0]
        > 0
    )
    assert query(warehouse, f"select count(*), count(distinct id) from {SCHEMA}.ad_accounts") == [(2, 2)]
    assert query(warehouse, f"select count(*) from {SCHEMA}.ads where creative_id is null") == [(0,)]
    # lineage columns and the bulk path (CSV + COPY, never insert_values)
    for table in TABLES:
        assert query(warehouse, f"select count(*) from {SCHEMA}.{table} where _loaded_at is null") == [(0,)]
    jobs = [p.name for p in (tmp_path / "dlt").rglob("completed_jobs/*") if p.is_file()]
    data_jobs = [j for j in jobs if not j.startswith("_dlt") and not j.endswith(".sql")]
    assert {j.split(".")[0] for j in data_jobs} == set(TABLES)
    assert all(j.endswith((".csv", ".csv.gz")) for j in data_jobs), data_jobs
    # the first run back-filled START..AS_OF through report runs, and logged itself
    assert all(r[2] == "async" for ranges in result.stats.ranges.values() for r in ranges)
    assert result.stats.ranges[double.account_ids[0]][0][0] == START.isoformat()
    [(status, _, details)] = processing_log(warehouse)
    assert status == "completed" and '"report_runs"' in details


def test_rerun_changes_nothing_and_only_reads_the_refetch_window(double, warehouse, tmp_path, reference):
    run_load(double, warehouse, tmp_path)
    first = bronze_fingerprints(warehouse)
    assert first == reference["fingerprints"]

    again = run_load(double, warehouse, tmp_path)
    assert bronze_fingerprints(warehouse) == first
    window_start = (AS_OF - dt.timedelta(days=27)).isoformat()
    assert {ranges[0][0] for ranges in again.stats.ranges.values()} == {window_start}
    dupes = query(
        warehouse,
        f"select count(*) - count(distinct ({', '.join(GRAIN)})) from {SCHEMA}.ad_insights",
    )
    assert dupes == [(0,)]

    # a full refresh drops the tables and the cursors, back-fills again and lands the same rows; a view
    # on bronze (as dbt's staging views), which would make PostgreSQL refuse the drop, is dropped first
    query(warehouse, "create schema if not exists silver_views")
    query(warehouse, f"create or replace view silver_views.stg_ads as select id from {SCHEMA}.ads")
    refreshed = run_load(double, warehouse, tmp_path, full_refresh=True)
    assert {ranges[0][0] for ranges in refreshed.stats.ranges.values()} == {START.isoformat()}
    assert bronze_fingerprints(warehouse) == first
    assert refreshed.stats.views_dropped == ["silver_views.stg_ads"]
    assert query(warehouse, "select to_regclass('silver_views.stg_ads')") == [(None,)]


def loaded_at(url: str) -> dict[str, dict[tuple, dt.datetime]]:
    """Per table, the `_loaded_at` of every row by its primary key."""
    keys = {t: ("id",) for t in TABLES if t != "ad_insights"} | {"ad_insights": GRAIN}
    return {
        table: {tuple(row[:-1]): row[-1] for row in query(url, f"select {', '.join(key)}, _loaded_at from {SCHEMA}.{table}")}
        for table, key in keys.items()
    }  # fmt: skip


def test_a_rerun_loads_only_the_rows_that_changed_the_rest_keep_their_loaded_at(double, warehouse, tmp_path):
    """Entities are re-listed whole and 28 days of insights re-read on every run; rows equal to bronze are
    not loaded again, so a quiet source does not look fresher to the nightly job (source_status:fresher+)."""
    first = run_load(double, warehouse, tmp_path)
    assert first.stats.skipped == dict.fromkeys(TABLES, 0)  # nothing in bronze yet to compare with
    stamped = loaded_at(warehouse)

    # no change at the API: every re-read row is dropped, nothing is loaded, no _loaded_at moves
    quiet = run_load(double, warehouse, tmp_path)
    extracted = {t: sum(per.get(t, 0) for per in quiet.stats.rows.values()) for t in TABLES}
    assert extracted["ad_insights"] > 0 and all(extracted.values()), extracted
    assert quiet.stats.skipped == extracted
    assert loaded_at(warehouse) == stamped
    quiet_log = query(
        warehouse,
        "select records_processed, records_loaded, details -> 'unchanged_rows_skipped' from ops.processing_log "
        "where run_id = %s",
        (quiet.run_id,),
    )
    assert quiet_log == [(0, 0, extracted)]
    quiet_insights = bronze_insights(warehouse)

    # the API changes: a campaign is renamed, one ad-day inside the re-fetch window gets a late conversion
    campaigns = double.world.campaigns
    shown = {c["id"] for c in double.campaigns()}
    index = next(i for i, c in enumerate(campaigns) if c.id in shown)
    renamed = campaigns[index] = dataclasses.replace(
        campaigns[index], name=campaigns[index].name + " (renamed)"
    )
    window_start = AS_OF - dt.timedelta(days=27)
    restated = min(k for k in stamped["ad_insights"] if k[4] >= window_start)
    double.world.conversions.setdefault((restated[3], generator.day_number(restated[4])), []).append(
        Decimal("123.45")
    )
    double._cache.clear()  # the double caches its answers per request
    changed = run_load(double, warehouse, tmp_path)

    after = loaded_at(warehouse)
    moved = {t: sorted(k for k, v in after[t].items() if v != stamped[t].get(k)) for t in TABLES}
    assert moved == {t: [] for t in TABLES} | {"campaigns": [(renamed.id,)], "ad_insights": [restated]}
    assert after["campaigns"][(renamed.id,)] > stamped["campaigns"][(renamed.id,)]
    assert changed.stats.skipped == {t: n - len(moved[t]) for t, n in extracted.items()}
    # bronze says what the API says
    assert bronze_insights(warehouse) == api_insights(double, START, AS_OF)
    restated_key = tuple(map(str, restated))
    assert bronze_insights(warehouse)[restated_key] != quiet_insights[restated_key]  # the conversion landed
    names = dict(query(warehouse, f"select id, name from {SCHEMA}.campaigns"))
    assert names == {c["id"]: c["name"] for c in double.campaigns()}
    assert names[renamed.id].endswith(" (renamed)")


def test_the_bronze_comparison_drops_only_rows_equal_as_landed_and_loads_what_it_cannot_compare(embedded_pg):
    url = make_databases(embedded_pg, "fb_compare")["warehouse"]
    stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    row = {"id": "1", "account_id": "9", "name": "", "daily_budget": 150, "spend": Decimal("12.5"),
           "frequency": 1.234567, "targeting": json.dumps({"b": 1, "a": [1.5, "x"]}),
           "start_time": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), "_loaded_at": stamp}  # fmt: skip

    def changed(*rows: dict) -> list[dict]:
        bronze = BronzeVersions(url, SCHEMA)
        bronze.json_columns["campaigns"] = frozenset({"targeting"})
        try:
            return bronze.changed("campaigns", list(rows), ("id",), {"account_id": "9"})
        finally:
            bronze.close()

    assert changed(row) == [row]  # no bronze schema / table yet: load
    query(url, f"create schema {SCHEMA}")
    query(
        url,
        f"""create table {SCHEMA}.campaigns (id text, account_id text, name text, daily_budget bigint,
            spend numeric(38, 9), frequency double precision, targeting jsonb, start_time timestamptz,
            _loaded_at timestamptz, _dlt_load_id text, _dlt_id text)""",
    )
    query(
        url,
        f"""insert into {SCHEMA}.campaigns values ('1', '9', null, 150, 12.5, 1.234567,
            '{{"a": [1.5, "x"], "b": 1}}', '2024-01-01 09:00-03', '2025-01-01', 'l', 'd'),
            ('2', '8', 'other account', null, null, null, null, null, '2025-01-01', 'l', 'd')""",
    )
    # equal as landed ('' is NULL after COPY, numeric(38,9), jsonb, an instant in another offset)
    assert changed(row, {**row, "id": "3"}) == [{**row, "id": "3"}]  # a new row loads
    for column, value in [("name", "x"), ("daily_budget", 151), ("spend", Decimal("12.51")), ("frequency", 1.2346),
                          ("targeting", json.dumps({"a": [1.5], "b": 1})), ("start_time", stamp)]:  # fmt: skip
        assert changed({**row, column: value}) == [{**row, column: value}], column
    assert changed({**row, "daily_budget": None}) != []  # NULL differs from a value
    assert changed({k: v for k, v in row.items() if k != "spend"}) != []  # a column left out is NULL
    # what cannot be compared loads: a column bronze lacks, a value of an unknown type
    assert changed({**row, "objective": None}) != []
    assert changed({**row, "name": ["x"]}) != []
    assert changed({**row, "targeting": "not json"}) != []


def test_restated_conversions_inside_the_window_are_updated_older_days_stay_frozen(embedded_pg, tmp_path):
    """The world moves on (advance_day): late-attributed conversions appear on past days. A run with a
    5-day re-fetch window updates those days and leaves older ones exactly as first loaded."""
    urls = make_databases(embedded_pg, "fb_restate")
    generator.generate(urls["operational"], scale=SCALE, seed=11, as_of=AS_OF)
    start = AS_OF - dt.timedelta(days=40)
    with serve(urls["operational"], access_token=TOKEN) as d:  # today = the world's world_date
        run_load(d, urls["warehouse"], tmp_path, start_date=start, refetch_days=5)
        before_api, before_bronze = api_insights(d, start, AS_OF), bronze_insights(urls["warehouse"])
        assert before_bronze == before_api

        generator.advance_day(urls["operational"], days=3)
        today = AS_OF + dt.timedelta(days=3)
        assert d.today == today
        result = run_load(d, urls["warehouse"], tmp_path, start_date=start, refetch_days=5, today=today)
        now_api, bronze = api_insights(d, start, today), bronze_insights(urls["warehouse"])

    window = today - dt.timedelta(days=4)
    assert {r[0][0] for r in result.stats.ranges.values()} == {window.isoformat()}
    inside = {k for k in now_api if k[4] >= window.isoformat()}
    outside = {k for k in now_api if k[4] < window.isoformat()}
    assert {k: bronze[k] for k in inside} == {k: now_api[k] for k in inside}
    assert {k: bronze[k] for k in outside} == {k: before_bronze[k] for k in outside}
    restated_inside = [k for k in inside if k in before_api and before_api[k] != now_api[k]]
    restated_outside = [k for k in outside if before_api[k] != now_api[k]]
    assert restated_inside, "the double should restate some days inside the window"
    assert restated_outside, "the double should restate some older days too (the loader must ignore them)"
    # restatements only touch conversions, never delivery
    for k in restated_inside + restated_outside:
        assert before_api[k][:5] == now_api[k][:5] and before_api[k][5] != now_api[k][5]


def test_a_campaign_archived_or_deleted_later_stays_in_bronze_with_its_new_status(
    double, warehouse, tmp_path
):
    campaigns = {c.id: c for c in double.world.campaigns}
    ended = [
        c
        for c in campaigns.values()
        if c.fate in ("DELETED", "ARCHIVED") and c.end_day < generator.day_number(AS_OF)
    ]
    target = max(ended, key=lambda c: c.end_day)
    running_day = generator.EPOCH + dt.timedelta(days=target.end_day - 2)

    double.today = running_day
    run_load(double, warehouse, tmp_path, start_date=running_day - dt.timedelta(days=10), today=running_day)
    status = query(warehouse, f"select effective_status from {SCHEMA}.campaigns where id = %s", (target.id,))
    assert status == [("ACTIVE",)]

    double.today = AS_OF
    run_load(double, warehouse, tmp_path, today=AS_OF)
    status = query(warehouse, f"select effective_status from {SCHEMA}.campaigns where id = %s", (target.id,))
    assert status == [(target.fate,)]
    children = query(
        warehouse, f"select distinct effective_status from {SCHEMA}.ads where campaign_id = %s", (target.id,)
    )
    assert children == [(target.fate,)]
    assert (
        query(warehouse, f"select count(*) from {SCHEMA}.ad_insights where campaign_id = %s", (target.id,))[
            0
        ][0]
        > 0
    )


def test_first_run_is_clamped_to_the_37_months_the_api_keeps(double, warehouse, tmp_path, caplog):
    earliest = earliest_insights_date(AS_OF)
    assert earliest == dt.date(2021, 2, 16)
    with caplog.at_level("WARNING", logger="loaders.facebook"):
        result = run_load(double, warehouse, tmp_path, start_date=dt.date(2019, 1, 1), days_per_request=400)
    assert result.stats.clamped == dict.fromkeys(double.account_ids, earliest.isoformat())
    assert {r[0][0] for r in result.stats.ranges.values()} == {earliest.isoformat()}
    assert "clamped to 2021-02-16" in caplog.text
    assert bronze_insights(warehouse) == api_insights(double, earliest, AS_OF)


def test_breakdowns_land_in_their_own_table_at_their_grain(double, warehouse, tmp_path):
    breakdowns = ("publisher_platform",)
    run_load(double, warehouse, tmp_path, breakdowns=list(breakdowns))
    table = "ad_insights_by_publisher_platform"
    assert table in bronze_tables(warehouse) and "ad_insights" not in bronze_tables(warehouse)
    assert bronze_insights(warehouse, table, breakdowns) == api_insights(double, START, AS_OF, breakdowns)
    platforms = {r[0] for r in query(warehouse, f"select distinct publisher_platform from {SCHEMA}.{table}")}
    assert {"facebook", "instagram"} <= platforms
    # the same delivery as the unbroken-down report, split by platform
    totals = query(warehouse, f"select sum(impressions), sum(clicks) from {SCHEMA}.{table}")[0]
    flat = api_insights(double, START, AS_OF)
    assert totals == (sum(v[1] for v in flat.values()), sum(v[3] for v in flat.values()))


# -- throttling, token, errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "header", "waits"),
    [(80000, "buc", [120.0] * 3), (17, "account", [120.0] * 3), (613, "none", [60.0, 120.0, 240.0])],
)
def test_throttle_storm_waits_as_the_api_says_then_succeeds(
    double, warehouse, tmp_path, reference, code, header, waits
):
    double.faults.throttle_requests = 3
    double.faults.throttle_minutes = 2
    double.faults.throttle_code = code
    double.faults.throttle_header = header
    double.faults.throttle_after_requests = 5  # mid-way through the run
    result = run_load(double, warehouse, tmp_path)
    assert result.stats.client.throttle_waits == waits  # API seconds, as announced (or the fallback)
    assert result.stats.client.throttled == 3
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]


def test_throttle_storm_longer_than_the_budget_fails_cleanly(double, warehouse, tmp_path, reference):
    budget = ClientSettings(**{**FAST.__dict__, "throttle_budget_seconds": 600})
    # on a first run: nothing lands
    double.faults.throttle_requests, double.faults.throttle_minutes = 100, 4
    double.faults.throttle_after_requests = 8
    with pytest.raises(FacebookThrottled, match="run again later") as failure:
        run_load(double, warehouse, tmp_path, client_settings=budget)
    assert "4.0 min" in str(failure.value)
    assert bronze_tables(warehouse) == [] and state_of(warehouse) == []
    assert TOKEN not in str(failure.value)

    # after a good run, a failed one changes no row and no cursor
    double.faults.throttle_requests = 0
    run_load(double, warehouse, tmp_path)
    fingerprints, state = bronze_fingerprints(warehouse), state_of(warehouse)
    double.faults.throttle_requests, double.faults.throttle_after_requests = 100, len(double.requests) + 12
    with pytest.raises(FacebookThrottled):
        run_load(double, warehouse, tmp_path, client_settings=budget, today=AS_OF + dt.timedelta(days=2))
    assert bronze_fingerprints(warehouse) == fingerprints == reference["fingerprints"]
    assert state_of(warehouse) == state
    statuses = [row[0] for row in processing_log(warehouse)]
    assert statuses == ["failed", "completed", "failed"]


def test_expired_token_fails_at_once_with_what_to_do_and_never_leaks(double, warehouse, tmp_path):
    double.faults.expire_token_after = 15  # mid-way through the run
    run = subprocess.run(
        cli_load(double, warehouse, tmp_path),
        cwd=PROJECT_DIR,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "access token: the token has expired" in run.stderr
    assert "ads_read" in run.stderr and "SOURCES__FACEBOOK_ADS__ACCESS_TOKEN" in run.stderr
    assert "Traceback" not in run.stderr
    rejected = [r for r in double.requests if r.error_code == 190]
    assert len(rejected) == 1, "an expired token must not be retried"
    assert double.requests[-1].error_code == 190
    assert bronze_tables(warehouse) == [] and state_of(warehouse) == []
    [(status, message, _)] = processing_log(warehouse)
    assert status == "failed" and "expired" in message

    # a successful run with throttling and an invalid cursor (so warnings are logged), then look everywhere
    double.faults.expired, double.faults.expire_token_after = False, None
    double.faults.throttle_requests, double.faults.invalid_cursors = 1, 1
    ok = subprocess.run(
        cli_load(double, warehouse, tmp_path),
        cwd=PROJECT_DIR,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "throttled" in ok.stderr and "invalid paging cursor" in ok.stderr
    for output in (run.stdout, run.stderr, ok.stdout, ok.stderr):
        assert TOKEN not in output
    assert files_containing(tmp_path, TOKEN) == []
    text = warehouse_text(warehouse)
    assert "act_" in text and TOKEN not in text  # the tables were read, and hold no token


def test_a_wrong_token_fails_at_once(double, warehouse, tmp_path):
    with pytest.raises(FacebookAuthError, match="Generate a new system user token") as failure:
        run_load(double, warehouse, tmp_path, access_token="EAAGwrong0token0value")
    assert "wrong0token" not in str(failure.value)
    assert len(double.requests) == 1


def test_transient_errors_are_retried(double, warehouse, tmp_path, reference):
    double.faults.transient_errors = 2
    result = run_load(double, warehouse, tmp_path)
    assert result.stats.client.transient_retries == 2
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]


# -- report runs, cursors, too much data ------------------------------------------------------------


def test_failed_report_runs_are_split_and_retried(double, warehouse, tmp_path, reference):
    double.faults.fail_jobs_longer_than_days = 12
    result = run_load(double, warehouse, tmp_path)
    assert result.stats.client.failed_report_runs >= 4
    assert {s["reason"] for s in result.stats.splits} == {"report run failed"}
    assert all((dt.date.fromisoformat(u) - dt.date.fromisoformat(s)).days < 12
               for ranges in result.stats.ranges.values() for s, u, how in ranges[-2:])  # fmt: skip
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]


def test_a_stalled_report_run_is_abandoned_split_and_retried(double, warehouse, tmp_path, reference):
    double.faults.stall_jobs = 1
    result = run_load(double, warehouse, tmp_path)
    assert result.stats.client.stalled_report_runs == 1
    assert len(result.stats.splits) == 1
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_invalid_cursor_restarts_the_range_without_duplicates(
    double, warehouse, tmp_path, reference, mode
):
    double.faults.invalid_cursors = 2
    extra = {"async_min_days": 1000} if mode == "sync" else {}
    result = run_load(double, warehouse, tmp_path, **extra)
    assert result.stats.client.invalid_cursors == 2
    expected = api_insights(double, START, AS_OF)
    extracted = sum(rows["ad_insights"] for rows in result.stats.rows.values())
    assert extracted == len(expected), "rows of the abandoned read must not be extracted twice"
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]


@pytest.mark.parametrize("style", ["subcode", "message"])
def test_too_much_data_halves_the_range(double, warehouse, tmp_path, reference, style):
    double.faults.too_much_data_days = 9
    double.faults.too_much_data_style = style
    result = run_load(double, warehouse, tmp_path, async_min_days=1000)  # the synchronous endpoint
    assert result.stats.splits and {s["reason"] for s in result.stats.splits} == {"too much data"}
    done = [(s, u) for ranges in result.stats.ranges.values() for s, u, _ in ranges]
    sizes = [(dt.date.fromisoformat(u) - dt.date.fromisoformat(s)).days + 1 for s, u in done]
    assert max(sizes) == 31 and min(sizes) <= 9
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]


# -- crashes -------------------------------------------------------------------------------------------


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.parametrize("kill_at", ["extract", "normalize", "load"])
def test_killed_mid_run_then_rerun_equals_a_clean_run(double, warehouse, tmp_path, reference, kill_at):
    """SIGKILL the loader while it reads the API (a request held open), right after its extract committed
    (normalize) or once the load into the warehouse began; run it again: bronze holds exactly the rows of
    an uninterrupted run."""
    pipeline_dir = tmp_path / "dlt" / f"facebook_ads_to_{SCHEMA}"
    if kill_at == "extract":
        double.faults.hold_after_requests = reference["requests"] // 2
    proc = subprocess.Popen(
        cli_load(double, warehouse, tmp_path), cwd=PROJECT_DIR, env=cli_env(RUNTIME__LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if kill_at == "extract":
            assert double.held.wait(60), "the loader never reached the held request"
        elif kill_at == "normalize":
            _wait_for(
                lambda: any((pipeline_dir / "normalize" / "extracted").glob("*/new_jobs")), "the extract"
            )
        else:
            _wait_for(lambda: bronze_tables(warehouse) != [], "the load step")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, "the loader finished before it could be killed"
    finally:
        double.release()
        if proc.poll() is None:
            proc.kill()
    if kill_at != "extract":  # the extracted package is pending: the next run finishes it first
        pending = [p for p in pipeline_dir.rglob("load_package_state.json") if "loaded" not in p.parts]
        assert pending, "the kill should leave a package for the next run to finish"
    rerun = run_load(double, warehouse, tmp_path)
    assert rerun.stats.ranges, "the re-run finishes the interrupted package and extracts as usual"
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]
    run_load(double, warehouse, tmp_path)
    assert bronze_fingerprints(warehouse) == reference["fingerprints"]

"""LGPD: personal data reaches gold only as keyed pseudonyms, test failures never copy it, and one
customer can be erased from the whole warehouse (bronze, silver, gold, snapshots, audit) for good.

One warehouse per process (lgpd_warehouse.py). The tests run in file order: the masking checks read the
warehouse before the erasure, the erasure test then erases the chosen customer, loads and builds again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import query, run_cli
from lgpd_warehouse import GOLD, built_warehouse, dbt_vars, drop_interactions, manifest, relations

from loaders.pii_key import hmac_pads, load_key, pseudonym

# one shared warehouse per test process: keep these modules on one xdist worker
pytestmark = pytest.mark.xdist_group("lgpd_warehouse")

IDENTIFYING = ("name", "cnpj", "contact_name", "email", "phone", "address")


@pytest.fixture(scope="module")
def warehouse(embedded_pg, tmp_path_factory) -> dict[str, Any]:
    return built_warehouse(embedded_pg, tmp_path_factory)


def personal_columns(nodes: dict[str, Any]) -> dict[str, set[str]]:
    """{model or source table name: columns with meta personal: true}, from the manifest."""
    result: dict[str, set[str]] = {}
    for node in nodes.values():
        for column in node.get("columns", {}).values():
            meta = {**column.get("meta", {}), **column.get("config", {}).get("meta", {})}
            if meta.get("personal"):
                result.setdefault(node["name"], set()).add(column["name"])
    return result


def places_holding(url: str, values: list[str], schema_filter: str | None = None) -> list[str]:
    """Every relation (table or view, any schema or the one given) with a row containing one of the values."""
    patterns = [f"%{v}%" for v in values]
    found = []
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for schema, table in relations(url, ("r", "v", "m")):
                if schema_filter is not None and schema != schema_filter:
                    continue
                try:
                    cur.execute(
                        f'select exists (select 1 from "{schema}"."{table}" as t '
                        "where cast(t as text) like any(%s))",
                        (patterns,),
                    )
                except psycopg2.Error as exc:  # a view that cannot be read is a failure of its own
                    raise AssertionError(f"{schema}.{table} cannot be read: {exc}") from exc
                if cur.fetchone()[0]:
                    found.append(f"{schema}.{table}")
    finally:
        conn.close()
    return found


def test_personal_columns_are_declared_in_column_metadata(warehouse):
    doc = manifest(warehouse["state_dir"])
    declared = personal_columns({**doc["nodes"], **doc["sources"]})
    assert {"contact_name", "email", "phone", "address"} <= declared["stg_operational__customers"]
    assert {"contact_name", "contact_email", "contact_phone"} <= declared["stg_operational__suppliers"]
    assert {"contact_name", "email", "phone"} <= declared["customers"]  # the bronze source table


def test_no_personal_value_reaches_gold_in_clear(warehouse):
    """Every value of every column tagged personal, searched in every text column of every gold relation."""
    url = warehouse["urls"]["warehouse"]
    doc = manifest(warehouse["state_dir"])
    silver = {n["name"]: n for n in doc["nodes"].values() if n["resource_type"] == "model"}
    personal_values: set[str] = set()
    for model, cols in personal_columns(doc["nodes"]).items():
        relation = silver[model]["relation_name"]
        for column in cols:
            rows = query(
                url, f'select distinct cast("{column}" as text) from {relation} where "{column}" is not null'
            )
            personal_values.update(v.strip().lower() for (v,) in rows)
    assert len(personal_values) > 100, (
        "the personal columns hold too little data for the check to mean anything"
    )
    gold_relations = [t for s, t in relations(url) if s == GOLD]
    assert "dim_customers" in gold_relations
    for table in gold_relations:
        text_columns = query(
            url,
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "and data_type in ('text', 'character varying', 'character', 'json', 'jsonb')",
            (GOLD, table),
        )
        for (column,) in text_columns:
            leaked = query(
                url,
                f'select count(*) from "{GOLD}"."{table}" where lower(trim(cast("{column}" as text))) = any(%s)',
                (sorted(personal_values),),
            )[0][0]
            assert leaked == 0, f"{GOLD}.{table}.{column} holds personal values in clear"
    gold_columns = {
        c["name"]: {**c.get("meta", {}), **c.get("config", {}).get("meta", {})}
        for n in doc["nodes"].values()
        if n["resource_type"] == "model" and n["schema"] == GOLD
        for c in n["columns"].values()
    }
    personal_names = set().union(*personal_columns(doc["nodes"]).values())
    assert not personal_names & set(gold_columns), "a gold column is named like a personal column"


def test_gold_pseudonyms_are_hmac_with_the_secret_key(warehouse):
    url = warehouse["urls"]["warehouse"]
    key = load_key(warehouse["state_dir"])
    rows = query(
        url,
        f"select s.email, s.phone, d.email_pseudonym, d.phone_pseudonym from {GOLD}.dim_customers d "
        "join lgpd_silver.stg_operational__customers s using (customer_id) where s.email is not null",
    )
    assert len(rows) > 10
    for email, phone, email_pseudonym, phone_pseudonym in rows:
        assert email_pseudonym == pseudonym(key, email)
        assert email_pseudonym != hashlib.sha256(email.encode()).hexdigest()  # keyed, not a plain hash
        assert phone_pseudonym == (pseudonym(key, phone) if phone else None)


def test_the_key_is_written_nowhere(warehouse):
    """Not in compiled SQL / run results / dbt logs, not in any table of the warehouse."""
    key = load_key(warehouse["state_dir"]).decode()
    inner, outer = hmac_pads(key.encode())
    secrets = (key, inner, outer)
    state_dir: Path = warehouse["state_dir"]
    scanned = 0
    for folder in (state_dir / "target", state_dir / "logs"):
        for path in folder.rglob("*"):
            if path.is_file():
                content = path.read_bytes().decode("utf-8", errors="ignore")
                scanned += 1
                assert not any(s in content for s in secrets), f"the key is in {path}"
    assert scanned > 50
    compiled = next((state_dir / "target").rglob("dim_customers.sql")).read_text()
    assert "warehouse_pii.inner_pad" in compiled  # what the SQL holds instead: the setting's name
    assert places_holding(warehouse["urls"]["warehouse"], list(secrets)) == []


# generic tests whose failing rows hold only the tested column(s) (not_null: macros/pii_safe_tests.sql)
COLUMN_ONLY_TESTS = {
    "not_null",
    "unique",
    "accepted_values",
    "relationships",
    "non_negative",
    "valid_cnpj",
    "unique_combination_of_columns",
}


def test_stored_test_failures_never_copy_personal_columns(warehouse):
    """A test storing failures on a model with personal columns stores only a non-personal tested column;
    the audit tables hold no personal column and no personal value."""
    doc = manifest(warehouse["state_dir"])
    nodes = {**doc["nodes"], **doc["sources"]}
    personal = personal_columns(nodes)
    storing = [
        n for n in doc["nodes"].values() if n["resource_type"] == "test" and n["config"].get("store_failures")
    ]
    assert len(storing) > 50
    checked_on_personal_models = 0
    for test in storing:
        for parent in test["depends_on"]["nodes"]:
            name = nodes[parent]["name"] if parent in nodes else parent
            if name not in personal:
                continue
            checked_on_personal_models += 1
            kind = (test.get("test_metadata") or {}).get("name")
            if kind is None:  # a singular test: its SQL must not mention a personal column
                mentioned = {c for c in personal[name] if c in test["raw_code"]}
                assert not mentioned, f"{test['name']} may store {mentioned} of {name}"
                continue
            assert kind in COLUMN_ONLY_TESTS, f"{test['name']} may store whole rows of {name}"
            stored = {
                test.get("column_name"),
                *test["test_metadata"]["kwargs"].get("combination_of_columns", []),
            }
            assert not stored & personal[name], f"{test['name']} stores a personal column of {name}"
    assert checked_on_personal_models > 0  # stg_operational__orders: shipping_address and notes are personal
    url = warehouse["urls"]["warehouse"]
    personal_of_audit_table = {
        test["alias"]: set().union(
            *(personal.get(nodes[p]["name"], set()) for p in test["depends_on"]["nodes"] if p in nodes)
        )
        for test in storing
    }
    values = query(
        url,
        "select array_agg(v) from (select contact_name as v from lgpd_silver.stg_operational__customers"
        " union select email from lgpd_silver.stg_operational__customers"
        " union select phone from lgpd_silver.stg_operational__customers"
        " union select shipping_address from lgpd_silver.stg_operational__orders) as t where v is not null",
    )[0][0]
    audit_tables = [t for s, t in relations(url, ("r",)) if s == "lgpd_audit"]
    assert len(audit_tables) > 50
    assert "source_not_null_operational_orders_id" in audit_tables  # a source with personal columns
    audit_columns: dict[str, set[str]] = {}
    for table, column in query(
        url,
        "select table_name, column_name from information_schema.columns where table_schema = 'lgpd_audit'",
    ):
        audit_columns.setdefault(table, set()).add(column)
    for table in audit_tables:
        copied = audit_columns[table] & personal_of_audit_table.get(table, set())
        assert not copied, f"lgpd_audit.{table} copies personal columns {copied}"
    assert places_holding(url, values, schema_filter="lgpd_audit") == []


# -- right to erasure ----------------------------------------------------------------------------


def marts_totals(url: str, customer_id: int) -> dict[str, Any]:
    return {
        "fact_orders": query(url, f"select count(*), sum(total_amount) from {GOLD}.fact_orders")[0],
        "customer_360": query(url, f"select sum(total_revenue), sum(total_orders) from {GOLD}.customer_360")[
            0
        ],
        "subject_360": query(
            url,
            f"select total_orders, total_revenue, total_interactions from {GOLD}.customer_360 where customer_id = %s",
            (customer_id,),
        )[0],
        "subject_orders": query(
            url,
            f"select count(*), sum(total_amount) from {GOLD}.fact_orders where customer_id = %s",
            (customer_id,),
        )[0],
    }


def test_erase_customer_everywhere_and_for_good(warehouse):
    urls, env, subject = warehouse["urls"], warehouse["env"], warehouse["subject"]
    url = urls["warehouse"]
    customer_id = subject["id"]
    values = [str(subject[k]).strip() for k in IDENTIFYING]
    # before: the person is in bronze, silver, gold, snapshots, payloads and rejects
    before = places_holding(url, values)
    for expected in (
        "bronze_operational.customers",
        "bronze_operational.orders",
        "bronze_gcs.customer_interactions",
        "bronze_gcs.rejects",
        "lgpd_snapshots.snap_customers",
        f"{GOLD}.dim_customers",
        "lgpd_silver.stg_operational__customers",
    ):
        assert expected in before, f"the test customer should be in {expected} before the erasure"
    totals = marts_totals(url, customer_id)
    assert totals["subject_orders"][0] >= 3 and totals["subject_360"][2] >= 1

    result = run_cli(env, "erase-customer", "--customer-id", str(customer_id), "--reference", "LGPD-2026-001")
    assert f"customer {customer_id} erased" in result.stdout
    assert not any(v in result.stdout + result.stderr for v in values)
    assert places_holding(url, values) == []
    assert marts_totals(url, customer_id) == totals  # orders, revenue and interactions kept
    ((is_erased, name, cnpj),) = query(
        url,
        f"select is_erased, customer_name, cnpj from {GOLD}.dim_customers where customer_id = %s",
        (customer_id,),
    )
    assert is_erased and name is None and cnpj is None
    log = query(
        url,
        "select status, message, details from ops.processing_log where component = 'erasure' order by started_at",
    )
    assert len(log) == 1 and log[0][0] == "completed" and str(customer_id) in log[0][1]

    # idempotent: a second request changes nothing and says so
    again = run_cli(env, "erase-customer", "--customer-id", str(customer_id))
    assert "already erased" in again.stdout and "nothing left" in again.stdout

    # the source has not erased yet: it sends the customer again (an update) and a new interaction file
    query(urls["operational"], "update customers set updated_at = now() where id = %s", (customer_id,))
    drop_interactions(warehouse["state_dir"], subject, "lgpd-after-erasure.json", day="2026-07-01")
    run_cli(env, "load", "operational", "gcs")
    assert (
        query(
            url,
            "select count(*) from bronze_gcs.customer_interactions where _source_file like %s",
            ("%lgpd-after-erasure%",),
        )[0][0]
        == 1
    )
    # what the re-sent rows feed (customers, interactions, the snapshot) and everything downstream
    selection = "stg_operational__customers+ stg_gcs__customer_interactions+ snap_customers+"
    run_cli(env, "transform", "--", "--select", selection, "--vars", dbt_vars())
    assert places_holding(url, values) == []
    after = marts_totals(url, customer_id)
    assert after["fact_orders"] == totals["fact_orders"] and after["customer_360"] == totals["customer_360"]
    assert after["subject_360"][2] == totals["subject_360"][2] + 1  # the new interaction, attached to the id


def test_erasing_an_unknown_customer_fails_clearly(warehouse):
    result = run_cli(warehouse["env"], "erase-customer", "--customer-id", "987654321", check=False)
    assert result.returncode == 2
    assert "customer 987654321 is not in" in result.stderr

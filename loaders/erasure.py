"""Right to erasure (LGPD art. 18): remove one customer's personal data from the whole warehouse.

`warehouse erase-customer --customer-id N` (docs/lgpd.md):

1. collects the customer's identifying values as the warehouse holds them today (bronze, both dlt staging
   copies, snapshot history, gold, audit): name, CNPJ, contact name, e-mail, phone, address;
2. registers the erasure in `<ops>.erasure_register` (customer id, keyed pseudonyms of its CNPJs, when,
   a request reference; never a clear value), so that every later `warehouse load` re-applies it to rows a
   source sends again;
3. scrubs bronze: the operational `customers` row keeps id, city, state, tier, credit limit, status and
   dates, its personal and identifying columns become null, its orders lose the shipping address and the
   free-text notes (amounts, dates and lines stay); payload records about the customer (matched by
   id, or by the keyed pseudonym of their CNPJ) keep only whitelisted non-personal fields in `_raw_json`
   and are attached to the customer id; rejected records that mention it lose their raw text;
4. nulls every other copy of those values in every base table of every schema (gold tables, snapshots,
   audit tables of stored test failures, dlt staging): in rows keyed by the customer any of its values,
   elsewhere only distinctive ones (CNPJ, e-mail, phone, address), so silver views and gold follow at once
   and the next `dbt build` reproduces the same; order facts (amounts, dates, products) are untouched;
5. verifies nothing is left (a distinctive value found anywhere aborts the whole transaction), records the
   erasure in the processing log (counts only), VACUUMs the touched tables so the old row versions are
   gone from disk, and deletes dlt's archived load packages (they hold copies of extracted rows).

Idempotent: a second run finds nothing to change and says so. PostgreSQL only (see docs/lgpd.md).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from loaders.pii_key import hmac_pads, pseudonym
from loaders.postgres import relation_exists

REGISTER_TABLE = "erasure_register"
# Columns of the operational customers table that identify the customer (a one-person business is
# identified by its name, CNPJ and address as much as by its contact): all become null on erasure.
CUSTOMER_IDENTIFYING_COLUMNS = ("name", "cnpj", "contact_name", "email", "phone", "address")
# The names these values take downstream (staging renames, gold, snapshots, payloads).
DOWNSTREAM_IDENTIFYING_COLUMNS = (
    "customer_name",
    "cnpj",
    "customer_cnpj",
    "source_customer_cnpj",
    "contact_name",
    "email",
    "phone",
    "address",
)
# Fields of a customer_interactions payload record kept after erasure (no free text, no identifiers).
INTERACTION_FIELDS_KEPT = (
    "interaction_id",
    "customer_id",
    "channel",
    "type",
    "started_at",
    "resolved_at",
    "resolved",
    "resolution_time_minutes",
    "agent_type",
    "agent_id",
)
ERASED_RAW_JSON = '{"_erased": "personal data removed on request (LGPD)"}'
CNPJ_PATTERN = r"[0-9]{2}\.?[0-9]{3}\.?[0-9]{3}/?[0-9]{4}-?[0-9]{2}"


class ErasureError(RuntimeError):
    """The erasure could not be done (unknown customer, leftovers found); nothing was changed."""


@dataclass
class ErasureResult:
    customer_id: int
    newly_registered: bool
    rows_changed: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows_changed.values())

    def summary(self) -> str:
        state = "erased" if self.newly_registered else "already erased"
        tables = ", ".join(f"{t} {n}" for t, n in sorted(self.rows_changed.items()) if n) or "nothing left"
        return f"customer {self.customer_id} {state}; rows scrubbed: {tables}"


@dataclass(frozen=True)
class Schemas:
    bronze_operational: str = "bronze_operational"
    bronze_gcs: str = "bronze_gcs"
    ops: str = "ops"


def erase_customer(
    warehouse_url: str,
    customer_id: int,
    key: bytes,
    schemas: Schemas = Schemas(),
    reference: str | None = None,
    dlt_pipelines_dir: Path | None = None,
) -> ErasureResult:
    """Erase one customer everywhere in the warehouse database (one transaction), then log and vacuum."""
    conn = psycopg2.connect(warehouse_url, options=_key_options(key))
    touched: set[tuple[str, str]] = set()
    try:
        with conn, conn.cursor() as cur:
            _ensure_register(cur, schemas.ops)
            values = _identifying_values(cur, customer_id, schemas)
            registered = _is_registered(cur, schemas.ops, customer_id)
            if not values and not registered and not _customer_exists(cur, customer_id, schemas):
                raise ErasureError(
                    f"customer {customer_id} is not in {schemas.bronze_operational}.customers: nothing to erase"
                )
            cnpj_pseudonyms = sorted({pseudonym(key, v) for v in values.get("cnpj", set())})
            newly_registered = _register(cur, schemas.ops, customer_id, cnpj_pseudonyms, reference)
            result = ErasureResult(customer_id, newly_registered)
            result.rows_changed.update(_scrub_bronze(cur, schemas, touched))
            exact = set().union(*values.values()) if values else set()
            distinctive = _distinctive(values)
            result.rows_changed.update(
                _null_exact_values(cur, customer_id, exact, distinctive, schemas.ops, touched)
            )
            result.rows_changed.update(_mark_erased(cur, customer_id, schemas.ops, touched))
            result.rows_changed.update(_delete_audit_rows(cur, distinctive, touched))
            leftovers = find_values(cur, distinctive, exclude_schemas=(schemas.ops,))
            if leftovers:
                raise ErasureError(
                    f"customer {customer_id}: personal values still found in {', '.join(leftovers)}; "
                    "nothing was changed"
                )
    finally:
        conn.close()
    _log(warehouse_url, schemas.ops, result)
    _vacuum(warehouse_url, touched)
    if dlt_pipelines_dir is not None:
        remove_loaded_packages(dlt_pipelines_dir)
    return result


def apply_erasures(warehouse_url: str, key: bytes, schemas: Schemas = Schemas()) -> int:
    """Re-apply the register to bronze after a load (a source that did not erase sends the rows again).

    Returns the number of bronze rows scrubbed; 0 without a register. Silver and gold follow on the next
    `dbt build`, which only ever sees the scrubbed rows.
    """
    conn = psycopg2.connect(warehouse_url, options=_key_options(key))
    touched: set[tuple[str, str]] = set()
    try:
        with conn, conn.cursor() as cur:
            if not relation_exists(cur, f"{schemas.ops}.{REGISTER_TABLE}"):
                return 0
            changed = sum(_scrub_bronze(cur, schemas, touched).values())
    finally:
        conn.close()
    _vacuum(warehouse_url, touched)
    return changed


def find_values(cur: Any, values: Iterable[str], exclude_schemas: Sequence[str] = ()) -> list[str]:
    """`schema.table` of every base table whose rows contain one of `values` (as a substring of the row)."""
    patterns = [f"%{_like_escape(v)}%" for v in values if v]
    if not patterns:
        return []
    found = []
    for schema, table in _base_tables(cur, exclude_schemas):
        cur.execute(
            sql.SQL("select exists (select 1 from {} as t where cast(t as text) like any(%s))").format(
                sql.Identifier(schema, table)
            ),
            (patterns,),
        )
        if cur.fetchone()[0]:
            found.append(f"{schema}.{table}")
    return found


def remove_loaded_packages(pipelines_dir: Path) -> int:
    """dlt keeps every completed load package (copies of the extracted rows); they are history only."""
    removed = 0
    for package in pipelines_dir.glob("*/load/loaded/*"):
        if package.is_dir():
            shutil.rmtree(package, ignore_errors=True)
            removed += 1
    return removed


# -- steps ---------------------------------------------------------------------------------------


def _key_options(key: bytes) -> str:
    inner, outer = hmac_pads(key)
    return f"-c warehouse_pii.inner_pad={inner} -c warehouse_pii.outer_pad={outer}"


# HMAC-SHA256 in SQL, as macros/pii.sql computes it (the padded keys are this session's settings).
_HMAC_SQL = (
    "encode(sha256(decode(current_setting('warehouse_pii.outer_pad'), 'hex') || "
    "sha256(decode(current_setting('warehouse_pii.inner_pad'), 'hex') || convert_to({}, 'UTF8'))), 'hex')"
)


def _ensure_register(cur: Any, ops: str) -> None:
    cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(ops)))
    cur.execute(
        sql.SQL(
            "create table if not exists {} ("
            " customer_id bigint primary key,"
            " cnpj_pseudonyms text[] not null default '{{}}',"
            " erased_at timestamptz not null,"
            " request_reference text)"
        ).format(sql.Identifier(ops, REGISTER_TABLE))
    )


def _is_registered(cur: Any, ops: str, customer_id: int) -> bool:
    cur.execute(
        sql.SQL("select exists (select 1 from {} where customer_id = %s)").format(
            sql.Identifier(ops, REGISTER_TABLE)
        ),
        (customer_id,),
    )
    return bool(cur.fetchone()[0])


def _register(
    cur: Any, ops: str, customer_id: int, cnpj_pseudonyms: list[str], reference: str | None
) -> bool:
    cur.execute(
        sql.SQL(
            "insert into {table} (customer_id, cnpj_pseudonyms, erased_at, request_reference)"
            " values (%s, %s, %s, %s)"
            " on conflict (customer_id) do update set cnpj_pseudonyms = array("
            "   select distinct unnest({table}.cnpj_pseudonyms || excluded.cnpj_pseudonyms))"
            " returning (xmax = 0)"
        ).format(table=sql.Identifier(ops, REGISTER_TABLE)),
        (customer_id, cnpj_pseudonyms, dt.datetime.now(dt.UTC), reference),
    )
    return bool(cur.fetchone()[0])


def _customer_exists(cur: Any, customer_id: int, schemas: Schemas) -> bool:
    if not _table_exists(cur, schemas.bronze_operational, "customers"):
        return False
    cur.execute(
        sql.SQL("select exists (select 1 from {} where id = %s)").format(
            sql.Identifier(schemas.bronze_operational, "customers")
        ),
        (customer_id,),
    )
    return bool(cur.fetchone()[0])


def _identifying_values(cur: Any, customer_id: int, schemas: Schemas) -> dict[str, set[str]]:
    """Every value the warehouse holds for the customer, per kind, raw and as staging normalises it."""
    kinds = {
        "name": "name",
        "customer_name": "name",
        "cnpj": "cnpj",
        "customer_cnpj": "cnpj",
        "contact_name": "contact_name",
        "email": "email",
        "phone": "phone",
        "address": "address",
    }
    values: dict[str, set[str]] = {}
    for schema, table, key_column, columns in _tables_about_customers(cur, schemas):
        # `name` is the customer's name only in the customers table itself
        wanted = [c for c in columns if c in kinds and (c != "name" or key_column == "id")]
        cur.execute(
            sql.SQL("select {} from {} where {} = %s").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in wanted),
                sql.Identifier(schema, table),
                sql.Identifier(key_column),
            ),
            (customer_id,),
        )
        for row in cur.fetchall():
            for column, value in zip(wanted, row, strict=True):
                if value is None or not str(value).strip():
                    continue
                text = str(value)
                values.setdefault(kinds[column], set()).update({text, text.strip(), text.strip().lower()})
    return values


def _tables_about_customers(cur: Any, schemas: Schemas) -> list[tuple[str, str, str, list[str]]]:
    """Base tables keyed by a customer: bronze customers (id) and anything with a customer_id column."""
    cur.execute(
        """
        select c.table_schema, c.table_name, array_agg(c.column_name::text order by c.ordinal_position)
        from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where t.table_type = 'BASE TABLE'
          and c.table_schema not in ('pg_catalog', 'information_schema')
        group by c.table_schema, c.table_name
        """
    )
    result = []
    for schema, table, columns in cur.fetchall():
        identifying = set(columns) & (set(DOWNSTREAM_IDENTIFYING_COLUMNS) | {"name"})
        if table == "customers" and schema.startswith(schemas.bronze_operational) and "id" in columns:
            result.append((schema, table, "id", columns))
        elif "customer_id" in columns and identifying and schema != schemas.ops:
            result.append((schema, table, "customer_id", columns))
    return result


def _scrub_bronze(cur: Any, schemas: Schemas, touched: set[tuple[str, str]]) -> dict[str, int]:
    """Apply the whole register to bronze (and dlt's staging copies): idempotent."""
    register = sql.Identifier(schemas.ops, REGISTER_TABLE)
    changed: dict[str, int] = {}
    for schema in (schemas.bronze_operational, f"{schemas.bronze_operational}_staging"):
        if not _table_exists(cur, schema, "customers"):
            continue
        table = sql.Identifier(schema, "customers")
        present = [c for c in CUSTOMER_IDENTIFYING_COLUMNS if _column_exists(cur, schema, "customers", c)]
        for column in present:
            cur.execute(
                sql.SQL("alter table {} alter column {} drop not null").format(table, sql.Identifier(column))
            )
        cur.execute(
            sql.SQL("update {} set {} where id in (select customer_id from {}) and ({})").format(
                table,
                sql.SQL(", ").join(sql.SQL("{} = null").format(sql.Identifier(c)) for c in present),
                register,
                sql.SQL(" or ").join(sql.SQL("{} is not null").format(sql.Identifier(c)) for c in present),
            )
        )
        _count(changed, touched, schema, "customers", cur.rowcount)
        if _table_exists(cur, schema, "orders"):
            # the shipping address is the customer's address; notes are free text typed by people
            cur.execute(
                sql.SQL(
                    "update {} set shipping_address = null, notes = null"
                    " where customer_id in (select customer_id from {})"
                    " and (shipping_address is not null or notes is not null)"
                ).format(sql.Identifier(schema, "orders"), register)
            )
            _count(changed, touched, schema, "orders", cur.rowcount)
    for schema in (schemas.bronze_gcs, f"{schemas.bronze_gcs}_staging"):
        if _table_exists(cur, schema, "customer_interactions"):
            _scrub_interactions(cur, schema, register, changed, touched)
        if _table_exists(cur, schema, "rejects"):
            _scrub_rejects(cur, schema, register, changed, touched)
    return changed


def _scrub_interactions(
    cur: Any, schema: str, register: sql.Identifier, changed: dict[str, int], touched: set[tuple[str, str]]
) -> None:
    """Payload records of erased customers (by id or by CNPJ pseudonym): keep only non-personal fields."""
    table = sql.Identifier(schema, "customer_interactions")
    cnpj_hmac = sql.SQL(_HMAC_SQL).format(sql.SQL("regexp_replace(t.customer_cnpj, '[^0-9]', '', 'g')"))
    cur.execute(
        sql.SQL(
            """
            with matched as (
                select t._dlt_id, r.customer_id
                from {table} as t
                join {register} as r
                    on t.customer_id = r.customer_id
                    or (t.customer_cnpj is not null and {cnpj_hmac} = any(r.cnpj_pseudonyms))
            )
            update {table} as t
            set customer_id = matched.customer_id,
                customer_cnpj = null,
                _raw_json = (
                    select cast(
                        coalesce(jsonb_object_agg(key, value), '{{}}'::jsonb)
                        || jsonb_build_object('customer_id', matched.customer_id, '_erased', true)
                        as text)
                    from jsonb_each(cast(t._raw_json as jsonb))
                    where key = any(%s)
                )
            from matched
            where t._dlt_id = matched._dlt_id
              and (t.customer_cnpj is not null or t._raw_json not like '%%"_erased": true%%')
            """
        ).format(table=table, register=register, cnpj_hmac=cnpj_hmac),
        (list(INTERACTION_FIELDS_KEPT),),
    )
    _count(changed, touched, schema, "customer_interactions", cur.rowcount)


def _scrub_rejects(
    cur: Any, schema: str, register: sql.Identifier, changed: dict[str, int], touched: set[tuple[str, str]]
) -> None:
    """Rejected records are raw text (maybe not JSON): drop the text of any that mention an erased customer."""
    table = sql.Identifier(schema, "rejects")
    digits = sql.SQL("regexp_replace(m.found[1], '[^0-9]', '', 'g')")
    cur.execute(
        sql.SQL(
            """
            update {table} as t
            set _raw_json = %s
            where t._raw_json is distinct from %s
              and exists (
                select 1 from {register} as r
                where t._raw_json ~ ('"customer_id"\\s*:\\s*"?' || r.customer_id || '([^0-9]|$)')
                   or exists (
                        select 1 from regexp_matches(t._raw_json, %s, 'g') as m(found)
                        where {cnpj_hmac} = any(r.cnpj_pseudonyms)
                   )
              )
            """
        ).format(table=table, register=register, cnpj_hmac=sql.SQL(_HMAC_SQL).format(digits)),
        (ERASED_RAW_JSON, ERASED_RAW_JSON, f"({CNPJ_PATTERN})"),
    )
    _count(changed, touched, schema, "rejects", cur.rowcount)


def _null_exact_values(
    cur: Any,
    customer_id: int,
    values: set[str],
    distinctive: set[str],
    ops: str,
    touched: set[tuple[str, str]],
) -> dict[str, int]:
    """Copies of the values in every base table (gold, snapshots, audit, ...) become null.

    Rows keyed by this customer (a customer_id column) lose any of its values; elsewhere only distinctive
    values (CNPJ, e-mail, phone, address) are nulled, so another company that happens to share a trade
    name keeps it.
    """
    changed: dict[str, int] = {}
    if not values:
        return changed
    for schema, table in _base_tables(cur, (ops,)):
        if table.startswith("_dlt_"):
            continue
        cur.execute(
            """
            select column_name, is_nullable = 'YES' from information_schema.columns
            where table_schema = %s and table_name = %s
              and data_type in ('text', 'character varying', 'character')
            """,
            (schema, table),
        )
        text_columns = cur.fetchall()
        if not text_columns:
            continue
        keyed = _column_exists(cur, schema, table, "customer_id")
        params = {"v": sorted(values if keyed else distinctive), "id": customer_id}
        if not params["v"]:
            continue
        relation = sql.Identifier(schema, table)
        matches = sql.SQL("({})").format(
            sql.SQL(" or ").join(
                sql.SQL("{} = any(%(v)s)").format(sql.Identifier(c)) for c, _ in text_columns
            )
        )
        if keyed:
            matches = sql.SQL("customer_id = %(id)s and {}").format(matches)
        cur.execute(sql.SQL("select exists (select 1 from {} where {})").format(relation, matches), params)
        if not cur.fetchone()[0]:
            continue
        for column, nullable in text_columns:
            if not nullable:
                cur.execute(
                    sql.SQL("alter table {} alter column {} drop not null").format(
                        relation, sql.Identifier(column)
                    )
                )
        cur.execute(
            sql.SQL("update {} set {} where {}").format(
                relation,
                sql.SQL(", ").join(
                    sql.SQL("{c} = case when {c} = any(%(v)s) then null else {c} end").format(
                        c=sql.Identifier(c)
                    )
                    for c, _ in text_columns
                ),
                matches,
            ),
            params,
        )
        _count(changed, touched, schema, table, cur.rowcount)
    return changed


def _mark_erased(cur: Any, customer_id: int, ops: str, touched: set[tuple[str, str]]) -> dict[str, int]:
    """Tables that flag erased customers (gold dim_customers.is_erased) say so at once, before a rebuild."""
    changed: dict[str, int] = {}
    cur.execute(
        "select c.table_schema, c.table_name from information_schema.columns c"
        " join information_schema.tables t using (table_schema, table_name)"
        " where t.table_type = 'BASE TABLE' and c.column_name = 'is_erased' and c.data_type = 'boolean'"
        " and c.table_schema <> %s and exists (select 1 from information_schema.columns k"
        "  where k.table_schema = c.table_schema and k.table_name = c.table_name and k.column_name = 'customer_id')",
        (ops,),
    )
    for schema, table in cur.fetchall():
        cur.execute(
            sql.SQL(
                "update {} set is_erased = true where customer_id = %s and is_erased is distinct from true"
            ).format(sql.Identifier(schema, table)),
            (customer_id,),
        )
        _count(changed, touched, schema, table, cur.rowcount)
    return changed


def _delete_audit_rows(cur: Any, values: set[str], touched: set[tuple[str, str]]) -> dict[str, int]:
    """Stored test failures are copies: rows that still mention the customer are deleted outright."""
    changed: dict[str, int] = {}
    patterns = [f"%{_like_escape(v)}%" for v in values]
    if not patterns:
        return changed
    cur.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and (table_schema = 'audit' or table_schema like '%%\\_audit')"
    )
    for schema, table in cur.fetchall():
        cur.execute(
            sql.SQL("delete from {} as t where cast(t as text) like any(%s)").format(
                sql.Identifier(schema, table)
            ),
            (patterns,),
        )
        _count(changed, touched, schema, table, cur.rowcount)
    return changed


def _distinctive(values: dict[str, set[str]]) -> set[str]:
    """Values unlikely to occur by chance inside unrelated text: searched as substrings, everywhere."""
    result = set()
    for kind, found in values.items():
        for value in found:
            digits = "".join(ch for ch in value if ch.isdigit())
            if kind == "cnpj" and len(digits) == 14:
                result.add(digits)
            elif kind == "email" and "@" in value:
                result.add(value.strip().lower())
            elif (kind == "phone" and len(digits) >= 8) or (kind == "address" and len(value.strip()) >= 10):
                result.add(value.strip())
    return result


def _log(warehouse_url: str, ops: str, result: ErasureResult) -> None:
    from loaders.processing_log import ProcessingLog, new_run_id

    with ProcessingLog(warehouse_url, schema=ops, component="erasure") as log:
        log.write(
            new_run_id(),
            layer="bronze",
            status="completed",
            payload_type="customer_erasure",
            message=(
                f"LGPD erasure of customer {result.customer_id}: "
                f"{'registered' if result.newly_registered else 'already registered'}, "
                f"{result.total_rows} row(s) scrubbed"
            ),
            details={"customer_id": result.customer_id, "rows_scrubbed": result.rows_changed},
            records_processed=result.total_rows,
            records_loaded=result.total_rows,
            records_invalid=0,
        )


def _vacuum(warehouse_url: str, touched: set[tuple[str, str]]) -> None:
    """Old row versions keep the erased values on disk until VACUUM; don't wait for autovacuum."""
    if not touched:
        return
    conn = psycopg2.connect(warehouse_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for schema, table in sorted(touched):
                cur.execute(sql.SQL("vacuum {}").format(sql.Identifier(schema, table)))
    finally:
        conn.close()


# -- helpers -------------------------------------------------------------------------------------


def _count(changed: dict[str, int], touched: set[tuple[str, str]], schema: str, table: str, n: int) -> None:
    if n > 0:
        changed[f"{schema}.{table}"] = changed.get(f"{schema}.{table}", 0) + n
        touched.add((schema, table))


def _base_tables(cur: Any, exclude_schemas: Sequence[str] = ()) -> list[tuple[str, str]]:
    cur.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema') "
        "and not (table_schema = any(%s)) order by 1, 2",
        (list(exclude_schemas),),
    )
    return [(s, t) for s, t in cur.fetchall()]


def _table_exists(cur: Any, schema: str, table: str) -> bool:
    return relation_exists(cur, sql.Identifier(schema, table).as_string(cur))


def _column_exists(cur: Any, schema: str, table: str, column: str) -> bool:
    cur.execute(
        "select exists (select 1 from information_schema.columns "
        "where table_schema = %s and table_name = %s and column_name = %s)",
        (schema, table, column),
    )
    return bool(cur.fetchone()[0])


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def describe(result: ErasureResult) -> str:
    return json.dumps({"customer_id": result.customer_id, "rows_scrubbed": result.rows_changed})

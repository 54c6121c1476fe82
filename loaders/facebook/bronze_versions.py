"""Drop the Facebook rows a run re-reads unchanged, by comparing them with their bronze version.

Why: every run re-lists every account, campaign, ad set and ad whole, and re-reads the last `refetch_days`
(28) days of insights to catch restated conversions. Merging an unchanged row is harmless for bronze, but
it stamps the row with this run's `_loaded_at`: every Facebook table would look freshly loaded every
night, and the nightly dbt job (loaders/nightly.py, `source_status:fresher+`) would rebuild every mart
below it although nothing changed. So a row equal to its bronze version (same primary key) in every
column but the lineage ones is dropped before it is loaded: bronze keeps it with the `_loaded_at` of the
run that last changed it. A changed or new row loads as before.

Bronze is read once per account and table (entities) or per account and fetched window (insights), only
the rows that could match. Values are compared in the form they land in: text '' is NULL on PostgreSQL
(dlt's CSV + COPY lands it so), timestamps are compared as instants, decimals by value (numeric(38,9)
pads the scale), JSON by its parsed content (jsonb on PostgreSQL, JSON text on BigQuery), a column the
fresh row leaves out is NULL (a merge replaces the whole row). A bronze table or column that is missing,
or a value of a type not handled here, means the rows are loaded: slower, never lossy.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from loaders.destinations import BigQueryTarget, warehouse_kind

LINEAGE = frozenset({"_loaded_at", "_dlt_load_id", "_dlt_id"})


class Incomparable(Exception):
    """A value this module cannot compare exactly with its landed form."""


class BronzeVersions:
    """Reads bronze rows of one run's account / table / window and tells which fresh rows equal them."""

    def __init__(self, warehouse_url: str, dataset: str) -> None:
        self.warehouse_url = warehouse_url
        self.dataset = dataset
        self.kind = warehouse_kind(warehouse_url)
        self.json_columns: dict[str, frozenset[str]] = {}  # table -> its JSON columns (set by the loader)
        self.missing_tables: set[str] = set()
        self._conn: Any = None
        self._client: Any = None

    # -- comparing ----------------------------------------------------------------------------------

    def changed(
        self, table: str, rows: list[dict[str, Any]], key: Sequence[str], where: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """`rows` without those equal to the bronze row of the same `key`. `where` (column -> value, or
        column -> (low, high) for a range) selects the bronze rows that could match."""
        if not rows:
            return rows
        landed = self._read(table, where)
        if landed is None:
            return rows
        columns, bronze_rows = landed
        data_columns = [c for c in columns if c not in LINEAGE]
        fresh_columns = {name for row in rows for name in row if name not in LINEAGE}
        if not fresh_columns <= set(data_columns):  # bronze lacks a column: dlt will add it, load all
            return rows
        json_columns = self.json_columns.get(table, frozenset())
        try:
            versions = {
                self._key(bronze, key, json_columns): self._values(bronze, data_columns, json_columns)
                for bronze in bronze_rows
            }
        except Incomparable:
            return rows
        kept = []
        for row in rows:
            try:
                same = versions.get(self._key(row, key, json_columns)) == self._values(
                    row, data_columns, json_columns
                )
            except Incomparable:
                same = False
            if not same:
                kept.append(row)
        return kept

    def _key(self, row: Mapping[str, Any], key: Sequence[str], json_columns: frozenset[str]) -> tuple:
        return tuple(self._landed(row.get(name), name in json_columns) for name in key)

    def _values(self, row: Mapping[str, Any], columns: Sequence[str], json_columns: frozenset[str]) -> tuple:
        return tuple(self._landed(row.get(name), name in json_columns) for name in columns)

    def _landed(self, value: Any, is_json: bool) -> Any:
        """`value` in the form it has in bronze, tagged with its kind (so 1 never equals '1')."""
        if value is None:
            return None
        if is_json:
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise Incomparable from None
            return ("json", json.dumps(value, sort_keys=True, ensure_ascii=False))
        if isinstance(value, bool):
            return ("bool", value)
        if isinstance(value, str):
            if value == "" and self.kind == "postgres":
                return None  # dlt's CSV + COPY lands an empty string as NULL
            return ("text", value)
        if isinstance(value, int | Decimal):
            if isinstance(value, Decimal) and not value.is_finite():
                raise Incomparable
            return ("number", Decimal(value))
        if isinstance(value, float):
            if value != value:
                raise Incomparable
            return ("float", value)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return ("timestamp", value.astimezone(dt.UTC))
        if isinstance(value, dt.date):
            return ("date", value)
        raise Incomparable

    # -- reading bronze -----------------------------------------------------------------------------

    def _read(self, table: str, where: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]] | None:
        """(columns, rows) of bronze `table` matching `where`; None when bronze lacks the table or a column."""
        if table in self.missing_tables:
            return None
        landed = (
            self._read_postgres(table, where)
            if self.kind == "postgres"
            else self._read_bigquery(table, where)
        )
        if landed is None:
            self.missing_tables.add(table)
        return landed

    def _read_postgres(self, table: str, where: Mapping[str, Any]) -> tuple[list[str], list[dict]] | None:
        import psycopg2
        import psycopg2.errors

        if self._conn is None:
            self._conn = psycopg2.connect(self.warehouse_url)
            self._conn.autocommit = True
        conditions, params = [], []
        for column, value in where.items():
            if isinstance(value, tuple):
                conditions.append(f'"{column}" between %s and %s')
                params.extend(value)
            else:
                conditions.append(f'"{column}" = %s')
                params.append(value)
        sql = f'select * from "{self.dataset}"."{table}" where {" and ".join(conditions) or "true"}'
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                columns = [d[0] for d in cur.description]
                return columns, [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
        except (
            psycopg2.errors.UndefinedTable,
            psycopg2.errors.UndefinedColumn,
            psycopg2.errors.InvalidSchemaName,
        ):
            return None

    def _read_bigquery(self, table: str, where: Mapping[str, Any]) -> tuple[list[str], list[dict]] | None:
        from google.api_core.exceptions import BadRequest, NotFound
        from google.cloud import bigquery

        target = BigQueryTarget.from_url(self.warehouse_url)
        if self._client is None:
            self._client = target.client()
        if not target.table_exists(self._client, self.dataset, table):
            return None
        conditions, params = [], []
        for n, (column, value) in enumerate(where.items()):
            kind = (
                "DATE" if isinstance(value[0] if isinstance(value, tuple) else value, dt.date) else "STRING"
            )
            if isinstance(value, tuple):
                conditions.append(f"`{column}` between @low{n} and @high{n}")
                params += [
                    bigquery.ScalarQueryParameter(f"low{n}", kind, value[0]),
                    bigquery.ScalarQueryParameter(f"high{n}", kind, value[1]),
                ]
            else:
                conditions.append(f"`{column}` = @value{n}")
                params.append(bigquery.ScalarQueryParameter(f"value{n}", kind, value))
        sql = f"select * from {target.quoted(self.dataset, table)} where {' and '.join(conditions) or 'true'}"
        try:
            job = self._client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
            result = job.result()
        except (BadRequest, NotFound):  # a column bronze does not have yet
            return None
        columns = [f.name for f in result.schema]
        return columns, [dict(row.items()) for row in result]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._client is not None:
            self._client.close()
            self._client = None

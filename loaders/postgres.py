"""PostgreSQL catalog questions and chores the loaders share, on the warehouse and on the operational source.

Why one module: "does this relation exist" was asked the same way in five places; the answer depends on
`to_regclass`, which takes a name as SQL writes it (schema-qualified, quoted where needed) and returns NULL
instead of failing for a missing relation.
"""

from __future__ import annotations

from typing import Any

import psycopg2


def relation_exists(cur: Any, qualified_name: str) -> bool:
    """Whether a table, view or index exists; `qualified_name` as SQL writes it (`"schema"."table"`)."""
    cur.execute("select to_regclass(%s) is not null", (qualified_name,))
    return bool(cur.fetchone()[0])


_VIEWS_ON_SCHEMA_SQL = """
select distinct view_ns.nspname, view_class.relname, view_class.relkind
from pg_depend as dep
join pg_rewrite as rule on dep.objid = rule.oid
join pg_class as view_class on rule.ev_class = view_class.oid
join pg_namespace as view_ns on view_class.relnamespace = view_ns.oid
join pg_class as table_class on dep.refobjid = table_class.oid
join pg_namespace as table_ns on table_class.relnamespace = table_ns.oid
where table_ns.nspname = %s
  and table_class.relkind in ('r', 'p')
  and table_class.relname not like '\\_dlt\\_%%'
  and view_class.oid <> table_class.oid
  and view_class.relkind in ('v', 'm')
order by 1, 2
"""


def drop_views_on(warehouse_url: str, schema: str) -> list[str]:
    """Drop the views built on the data tables of a bronze schema (dbt's silver staging views and the views
    on them); returns their names. On PostgreSQL a view pins the table it reads, so dlt's full refresh
    (`refresh="drop_sources"`, a DROP TABLE without CASCADE) fails while dbt's views exist. The next dbt
    run builds them again on the new tables. BigQuery views do not pin tables: nothing to do there."""
    from loaders.destinations import warehouse_kind

    if warehouse_kind(warehouse_url) != "postgres":
        return []

    conn = psycopg2.connect(warehouse_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_VIEWS_ON_SCHEMA_SQL, (schema,))
            views = cur.fetchall()
            for view_schema, view, kind in views:  # cascade: the views on these views go too
                what = "materialized view" if kind == "m" else "view"
                cur.execute(f'drop {what} if exists "{view_schema}"."{view}" cascade')
    finally:
        conn.close()
    return [f"{view_schema}.{view}" for view_schema, view, _kind in views]

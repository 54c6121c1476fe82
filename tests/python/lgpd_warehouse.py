"""One small warehouse built once per test process for the access and LGPD tests (test_access, test_lgpd).

Built like production: generated operational data, sample payload files plus two more interactions of
one chosen customer (one matched only by CNPJ, one rejected on purpose, so the rejects table holds their
CNPJ), `warehouse load`, `warehouse transform`. The access tests only read it, so they can share it with
the erasure test whatever the order.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from helpers import cli_env, query, run_cli

from loaders.operational import generator

AS_OF = dt.date(2026, 6, 30)
SCALE = generator.Scale(customers=40, suppliers=5, products=30, order_lines=2_000, history_days=90)
PREFIX = "lgpd"
GOLD = f"{PREFIX}_gold"
_BUILT: dict[str, Any] = {}


def dbt_vars() -> str:
    return json.dumps({"as_of_date": AS_OF.isoformat()})


def built_warehouse(embedded_pg: Any, tmp_path_factory: Any) -> dict[str, Any]:
    """The warehouse of this process: urls, env, state dir and the customer the erasure test erases."""
    if _BUILT:
        return _BUILT
    from conftest import make_databases

    urls = make_databases(embedded_pg, "lgpd")
    generator.generate(urls["operational"], scale=SCALE, seed=11, as_of=AS_OF)
    state_dir = tmp_path_factory.mktemp("lgpd_state")
    env = cli_env(urls, state_dir, DBT_TARGET="ci", DBT_SCHEMA_PREFIX=PREFIX)
    env.pop("WAREHOUSE_PII_KEY", None)  # the CLI generates one in the state folder
    subject = choose_subject(urls["operational"])
    run_cli(env, "gcs", "samples", "--as-of", AS_OF.isoformat())
    drop_interactions(state_dir, subject, "lgpd-extra.json")
    run_cli(env, "load")
    run_cli(env, "transform", "--", "--vars", dbt_vars())
    _BUILT.update(urls=urls, env=env, state_dir=state_dir, subject=subject)
    return _BUILT


def choose_subject(operational_url: str) -> dict[str, Any]:
    """An active customer with orders whose values occur nowhere else in the source (so a search is exact)."""
    rows = query(
        operational_url,
        "select c.id, c.name, c.cnpj, c.contact_name, c.email, c.phone, c.address from customers c "
        "where c.status = 'active' and c.contact_name is not null and c.email is not null "
        "and c.phone is not null and c.address is not null "
        "and (select count(*) from orders o where o.customer_id = c.id) >= 3 order by c.id",
    )
    everything = query(
        operational_url,
        "select string_agg(cast(t as text), '|') from ("
        " select name, cnpj, contact_name, email, phone, address from customers"
        " union all select name, cnpj, contact_name, contact_email, contact_phone, null from suppliers"
        " union all select name, description, manufacturer, sku, null, null from products) as t",
    )[0][0]
    for row in rows:
        subject = dict(
            zip(("id", "name", "cnpj", "contact_name", "email", "phone", "address"), row, strict=True)
        )
        values = [str(v).strip() for k, v in subject.items() if k != "id"]
        if all(everything.count(v) == 1 for v in values):
            return subject
    raise AssertionError("no customer with values unique in the source: change the seed")


def drop_interactions(state_dir: Path, subject: dict[str, Any], name: str, day: str = "2026-06-30") -> None:
    """Two interactions of the subject by CNPJ only: a valid one and one rejected (unknown channel)."""
    folder = state_dir / "bucket" / "datalake" / "payload_data" / "pending" / "customer_interactions" / day
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".json")
    records = [
        {
            "interaction_id": f"{stem}-ok",
            "customer_cnpj": subject["cnpj"].strip(),
            "channel": "email",
            "type": "complaint",
            "subject": f"Reclamação de {subject['contact_name']} ({subject['email']})",
            "started_at": f"{day}T10:00:00",
            "resolved": False,
            "agent_type": "human",
            "agent_id": "atendente-7",
        },
        {
            "interaction_id": f"{stem}-bad",
            "customer_cnpj": subject["cnpj"].strip(),
            "channel": "carrier-pigeon",
            "type": "inquiry",
            "subject": f"Contato {subject['phone']}",
            "started_at": f"{day}T11:00:00",
            "agent_type": "human",
        },
    ]
    (folder / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")


def relations(url: str, kinds: tuple[str, ...] = ("r", "v", "m", "p")) -> list[tuple[str, str]]:
    """Every table / view of every user schema of a database."""
    return query(
        url,
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind = any(%s) and n.nspname not in ('pg_catalog', 'information_schema') "
        "and n.nspname not like 'pg\\_%%' order by 1, 2",
        (list(kinds),),
    )


def manifest(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / "target" / "manifest.json").read_text())

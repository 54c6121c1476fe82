"""Tests of the operational sample-data generator against a real PostgreSQL server.

They check the invariants downstream models rely on (valid CNPJs, referential integrity, totals that add
up, non-overlapping price history), determinism (md5 of every table), the daily changes advance_day must
produce (including late-arriving updates and hard deletes) and that generation streams in bounded memory.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import psycopg2
import pytest
from conftest import make_databases
from helpers import PROJECT_DIR, query

from loaders.operational.generator import Scale, advance_day, generate, world_date

AS_OF = dt.date(2024, 3, 15)
SMALL = Scale(customers=120, suppliers=12, products=80, order_lines=8_000, history_days=120, warehouses=3)
TABLES = ("suppliers", "customers", "products", "pricing", "inventory", "orders", "order_items")

REGION_OF_UF = {
    **dict.fromkeys(("AC", "AP", "AM", "PA", "RO", "RR", "TO"), "Norte"),
    **dict.fromkeys(("AL", "BA", "CE", "MA", "PB", "PE", "PI", "RN", "SE"), "Nordeste"),
    **dict.fromkeys(("DF", "GO", "MT", "MS"), "Centro-Oeste"),
    **dict.fromkeys(("ES", "MG", "RJ", "SP"), "Sudeste"),
    **dict.fromkeys(("PR", "RS", "SC"), "Sul"),
}


# -- helpers ------------------------------------------------------------------------------------------


def cnpj_is_valid(cnpj: str) -> bool:
    """Independent CNPJ validator (Receita Federal mod-11 rule), written from the spec, not the generator."""
    if not re.fullmatch(r"\d{14}", cnpj) or len(set(cnpj)) == 1:
        return False
    digits = [int(c) for c in cnpj]

    def check(n: int) -> int:
        weights = list(range(n - 7, 1, -1)) + list(range(9, 1, -1))
        total = sum(d * w for d, w in zip(digits[:n], weights, strict=True))
        return 0 if total % 11 < 2 else 11 - total % 11

    return check(12) == digits[12] and check(13) == digits[13]


def table_digests(url: str) -> dict[str, str]:
    """md5 of each table's full contents in primary-key order (text rendering in UTC)."""
    digests = {}
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("set timezone to 'UTC'")
            for table in (*TABLES, "generator_state"):
                cur.execute(
                    f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t.id), '')) from {table} t"
                )
                count, digest = cur.fetchone()
                digests[table] = f"{count}:{digest}"
    finally:
        conn.close()
    return digests


def scalar(url: str, sql: str, params: tuple | None = None):
    return query(url, sql, params)[0][0]


def run_module(*args: str) -> subprocess.CompletedProcess:
    """Run the generator CLI / a snippet in a fresh interpreter (no state shared with this process)."""
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=300
    )


def assert_consistent(url: str) -> None:
    """Invariants that must hold after generate() and after every advance_day()."""
    zero = {
        "orphan order_items": """select count(*) from order_items i left join orders o on o.id = i.order_id
                                  where o.id is null""",
        "orphan orders": """select count(*) from orders o left join customers c on c.id = o.customer_id
                             where c.id is null""",
        "orphan products": """select count(*) from products p left join suppliers s on s.id = p.supplier_id
                               where s.id is null""",
        "item total formula": """select count(*) from order_items
                                  where total <> round(quantity * unit_price - discount + tax, 2)""",
        "order sums": """select count(*) from orders o join (
                              select order_id, sum(quantity * unit_price) s, sum(discount) d, sum(tax) t,
                                     sum(total) tot
                              from order_items group by order_id) i on i.order_id = o.id
                          where o.subtotal <> i.s or o.discount <> i.d or o.tax <> i.t
                             or o.total <> o.subtotal - o.discount + o.tax + o.shipping_cost
                             or o.total <> i.tot + o.shipping_cost""",
        "orders without items": """select count(*) from orders o
                                    where not exists (select 1 from order_items i where i.order_id = o.id)""",
        "negative money": """select (select count(*) from orders
                                      where least(subtotal, discount, tax, shipping_cost, total) < 0)
                                  + (select count(*) from order_items
                                      where least(discount, tax, total) < 0 or unit_price <= 0)""",
        "money scale": """select count(*) from order_items where unit_price <> round(unit_price, 2)
                           or total <> round(total, 2)""",
        "updated before created": """select (select count(*) from orders where updated_at < created_at)
                                          + (select count(*) from order_items where updated_at < created_at)
                                          + (select count(*) from customers where updated_at < created_at)
                                          + (select count(*) from pricing where updated_at < created_at)
                                          + (select count(*) from inventory where updated_at < created_at)""",
        "overlapping prices": """select count(*) from pricing a join pricing b
                                  on a.product_id = b.product_id and a.id < b.id
                                 and a.customer_tier is not distinct from b.customer_tier
                                 and daterange(a.effective_from, a.effective_to, '[]')
                                     && daterange(b.effective_from, b.effective_to, '[]')""",
        "bad price ranges": "select count(*) from pricing where effective_to < effective_from",
        "several open prices": """select count(*) from (select product_id, customer_tier from pricing
                                   where effective_to is null group by 1, 2 having count(*) > 1) x""",
        "products without open list price": """select count(*) from products p where not exists (
                                    select 1 from pricing r where r.product_id = p.id
                                    and r.customer_tier is null and r.effective_to is null)""",
        "cancelled but paid": """select count(*) from orders where status = 'cancelled'
                                  and payment_status not in ('cancelled', 'refunded')""",
        "pending but settled": """select count(*) from orders where status = 'pending'
                                   and payment_status <> 'pending'""",
        "upfront not paid": """select count(*) from orders where payment_method in ('pix', 'cartao_credito')
                                and status in ('confirmed', 'processing', 'shipped', 'delivered')
                                and payment_status <> 'paid'""",
        "ordered before the customer existed": """select count(*) from orders o
                                   join customers c on c.id = o.customer_id where o.created_at < c.created_at""",
        "order_date is not the creation day": """select count(*) from orders
                                   where order_date <> (created_at at time zone 'UTC')::date""",
        "sold after discontinuation": """select count(*) from order_items i
                                   join orders o on o.id = i.order_id join products p on p.id = i.product_id
                                   where p.status = 'discontinued' and o.created_at > p.updated_at""",
        "inventory negative": """select count(*) from inventory where least(quantity_available,
                                  quantity_reserved, quantity_incoming) < 0""",
    }
    problems = {name: n for name, sql in zero.items() if (n := scalar(url, sql)) != 0}
    assert problems == {}
    for uf, region in query(
        url, "select distinct uf, region from customers union select distinct uf, region from suppliers"
    ):
        assert REGION_OF_UF[uf] == region


def unit_price_mismatches(url: str, where: str = "true") -> int:
    """Items whose unit_price is not the tier price (else list price) effective at the order date."""
    return scalar(
        url,
        f"""
        select count(*) from order_items i
        join orders o on o.id = i.order_id
        join customers c on c.id = o.customer_id
        left join pricing pt on pt.product_id = i.product_id and pt.customer_tier = c.tier
             and o.order_date between pt.effective_from and coalesce(pt.effective_to, 'infinity')
        left join pricing pl on pl.product_id = i.product_id and pl.customer_tier is null
             and o.order_date between pl.effective_from and coalesce(pl.effective_to, 'infinity')
        where ({where}) and i.unit_price is distinct from coalesce(pt.price, pl.price)
        """,
    )


def new_database(embedded_pg, label: str) -> str:
    """An empty operational database of our own (module fixtures cannot use the per-test fixture)."""
    return make_databases(embedded_pg, label)["operational"]


@pytest.fixture(scope="module")
def default_world(embedded_pg) -> Iterator[str]:
    """One database at the default scale, shared by the read-only tests of this module."""
    url = new_database(embedded_pg, "gen_default_world")
    generate(url, as_of=AS_OF, seed=7)
    yield url


# -- generate() ----------------------------------------------------------------------------------------


def test_default_scale_volumes_and_consistency(default_world: str) -> None:
    url = default_world
    counts = {t: scalar(url, f"select count(*) from {t}") for t in TABLES}
    assert counts["customers"] == 400 and counts["suppliers"] == 30 and counts["products"] == 250
    assert counts["inventory"] == 250 * 4
    assert 54_000 <= counts["order_items"] <= 66_000
    assert 3.3 <= counts["order_items"] / counts["orders"] <= 4.8
    assert_consistent(url)
    assert unit_price_mismatches(url) == 0
    assert world_date(url) == AS_OF
    # nothing happens after the simulated clock, or before the history window (for orders)
    assert scalar(url, "select max(order_date) from orders") == AS_OF
    assert scalar(url, "select min(order_date) from orders") >= AS_OF - dt.timedelta(days=365)
    end_of_day = dt.datetime.combine(AS_OF + dt.timedelta(days=1), dt.time(), dt.UTC)
    for table in TABLES:
        assert scalar(url, f"select max(updated_at) from {table}") < end_of_day


def test_every_cnpj_is_valid_and_unique(default_world: str) -> None:
    for table in ("customers", "suppliers"):
        cnpjs = [r[0] for r in query(default_world, f"select cnpj from {table}")]
        assert cnpjs and all(cnpj_is_valid(c) for c in cnpjs), [c for c in cnpjs if not cnpj_is_valid(c)][:5]
        assert len(set(cnpjs)) == len(cnpjs)
    assert cnpj_is_valid("11222333000181") and not cnpj_is_valid("11222333000182")  # validator sanity


def test_master_data_looks_real(default_world: str) -> None:
    url = default_world
    names = [r[0] for r in query(url, "select name from customers")]
    assert all(n.startswith(("Drogaria ", "Farmácia ")) for n in names)
    tiers = dict(query(url, "select tier, count(*) from customers group by 1"))
    assert tiers["bronze"] > tiers["silver"] > tiers["gold"] > tiers["platinum"] > 0
    assert scalar(url, "select count(*) from customers where status <> 'active'") > 0
    assert scalar(url, "select count(*) from customers where email not like '%@%.%'") == 0
    # credit limit grows with the tier
    limits = query(url, "select tier, min(credit_limit), max(credit_limit) from customers group by 1")
    ranges = {t: (lo, hi) for t, lo, hi in limits}
    assert ranges["bronze"][1] <= ranges["silver"][0] and ranges["gold"][1] <= ranges["platinum"][0]
    assert {r[0] for r in query(url, "select distinct type from suppliers")} == {
        "manufacturer",
        "distributor",
    }
    products = query(
        url, "select sku, regulatory_code, category, is_generic, dosage, package_size from products"
    )
    assert all(re.fullmatch(r"SKU-\d{6}", p[0]) and re.fullmatch(r"\d{13}", p[1]) for p in products)
    assert {p[2] for p in products} >= {
        "Medicamentos",
        "Genéricos",
        "OTC",
        "Dermocosméticos",
        "Higiene Pessoal",
    }
    assert all(p[3] for p in products if p[2] == "Genéricos")
    assert scalar(url, "select count(distinct active_ingredient) from products") >= 40
    assert scalar(url, "select count(*) from products where status = 'discontinued'") > 0
    assert {r[0] for r in query(url, "select distinct warehouse_id from inventory")} == {
        "CD-SP",
        "CD-MG",
        "CD-PE",
        "CD-RS",
    }


def test_pricing_history_and_tiers(default_world: str) -> None:
    url = default_world
    # some products changed price during the history: a closed row followed by an open one the next day
    assert (
        scalar(
            url,
            """select count(*) from pricing a join pricing b on a.product_id = b.product_id
               and a.customer_tier is not distinct from b.customer_tier
               and b.effective_from = a.effective_to + 1 and b.effective_to is null""",
        )
        > 10
    )
    # tier prices are discounts over the list price
    assert (
        scalar(
            url,
            """select count(*) from pricing t join pricing l on l.product_id = t.product_id
               and l.customer_tier is null and l.effective_to is null
               where t.customer_tier is not null and t.effective_to is null and t.price >= l.price""",
        )
        == 0
    )


def test_order_lifecycle_matches_age(default_world: str) -> None:
    url = default_world
    old = dict(
        query(
            url,
            "select status, count(*) from orders where order_date < %s group by 1",
            (AS_OF - dt.timedelta(days=14),),
        )
    )
    assert set(old) == {"delivered", "cancelled"} and old["cancelled"] < old["delivered"] * 0.1
    recent = {
        r[0]
        for r in query(
            url, "select distinct status from orders where order_date >= %s", (AS_OF - dt.timedelta(days=3),)
        )
    }
    assert {"pending", "confirmed", "processing", "shipped"} <= recent
    today = {r[0] for r in query(url, "select distinct status from orders where order_date = %s", (AS_OF,))}
    assert today <= {"pending", "confirmed", "processing", "cancelled"}
    # weekday seasonality: Mondays are much busier than Sundays
    by_dow = dict(query(url, "select extract(isodow from order_date)::int, count(*) from orders group by 1"))
    assert by_dow[1] > 3 * by_dow[7]
    # bigger tiers order more per customer
    per_customer = dict(
        query(
            url,
            """select c.tier, count(o.id)::float / count(distinct c.id) from customers c
               left join orders o on o.customer_id = c.id group by 1""",
        )
    )
    assert per_customer["platinum"] > per_customer["bronze"]


# -- determinism ---------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(embedded_pg) -> None:
    urls = [new_database(embedded_pg, f"gen_det_{i}") for i in range(3)]
    generate(urls[0], scale=SMALL, seed=11, as_of=AS_OF)
    generate(urls[1], scale=SMALL, seed=11, as_of=AS_OF)
    generate(urls[2], scale=SMALL, seed=12, as_of=AS_OF)
    first, second, other = (table_digests(u) for u in urls)
    assert first == second
    assert all(first[t] != other[t] for t in ("customers", "orders", "order_items"))
    assert_consistent(urls[0])


# -- advance_day ---------------------------------------------------------------------------------------


def test_advance_day_produces_each_kind_of_change(fresh_databases: dict[str, str]) -> None:
    url = fresh_databases["operational"]
    generate(url, scale=SMALL, seed=3, as_of=AS_OF)
    before_orders = dict(query(url, "select id, updated_at from orders"))
    before_inventory = dict(query(url, "select id, updated_at from inventory"))
    before_tiers = dict(query(url, "select id, tier from customers"))
    hwm = {t: scalar(url, f"select max(updated_at) from {t}") for t in ("orders", "inventory")}

    [summary] = advance_day(url)
    day = AS_OF + dt.timedelta(days=1)
    assert summary["date"] == day and world_date(url) == day
    assert_consistent(url)

    # new orders dated the new day, mostly at the start of their lifecycle, priced at today's prices
    new = dict(query(url, "select status, count(*) from orders where order_date = %s group by 1", (day,)))
    assert sum(new.values()) == summary["new_orders"] > 0
    assert new.get("pending", 0) + new.get("confirmed", 0) >= 0.6 * summary["new_orders"]
    assert (
        scalar(
            url,
            "select count(*) from order_items i join orders o on o.id = i.order_id where o.order_date = %s",
            (day,),
        )
        == summary["new_order_lines"]
    )
    assert unit_price_mismatches(url, f"o.order_date = '{day}'") == 0

    # status changes along the lifecycle, stamped on the new day
    moved = query(
        url, "select id, status from orders where updated_at::date = %s and order_date < %s", (day, day)
    )
    assert len(moved) >= summary["status_changes"] > 0

    # tier change visible, with updated_at bumped
    assert summary["tier_changes"]
    for customer_id in summary["tier_changes"]:
        tier, updated = query(url, "select tier, updated_at from customers where id = %s", (customer_id,))[0]
        assert tier != before_tiers[customer_id] and updated.date() == day

    # price change: closed row ends yesterday, new open row from today for the same product/tier
    assert summary["price_changes"] and len(summary["price_changes"]) == len(summary["new_price_ids"])
    for closed_id, new_id in zip(summary["price_changes"], summary["new_price_ids"], strict=True):
        closed = query(
            url,
            "select product_id, customer_tier, effective_to, updated_at from pricing where id = %s",
            (closed_id,),
        )[0]
        opened = query(
            url,
            "select product_id, customer_tier, effective_from, effective_to from pricing where id = %s",
            (new_id,),
        )[0]
        assert closed[2] == day - dt.timedelta(days=1) and closed[3].date() == day
        assert opened[:2] == closed[:2] and opened[2] == day and opened[3] is None

    # late-arriving updates: older than the previous high-water mark, but within 48 hours of it
    assert summary["late_updates"] >= 2
    tables_hit = set()
    for late in summary["late_update_rows"]:
        table, row_id = late["table"], late["id"]
        updated = scalar(url, f"select updated_at from {table} where id = %s", (row_id,))
        before = (before_orders if table == "orders" else before_inventory)[row_id]
        assert before < updated < hwm[table]
        assert hwm[table] - updated <= dt.timedelta(hours=48)
        tables_hit.add(table)
    assert "orders" in tables_hit

    # exactly one hard delete: the order and its items are gone
    [deleted] = summary["deleted_order_ids"]
    assert deleted in before_orders
    assert scalar(url, "select count(*) from orders where id = %s", (deleted,)) == 0
    assert scalar(url, "select count(*) from order_items where order_id = %s", (deleted,)) == 0

    # inventory moved today
    assert (
        scalar(url, "select count(*) from inventory where updated_at::date = %s", (day,))
        == summary["inventory_changes"]
        > 0
    )

    # a second day keeps everything consistent and never reuses the deleted id
    [second] = advance_day(url)
    assert second["date"] == day + dt.timedelta(days=1) and len(second["deleted_order_ids"]) == 1
    assert scalar(url, "select count(*) from orders where id = %s", (deleted,)) == 0
    assert_consistent(url)


def test_advance_day_is_deterministic_across_processes(embedded_pg) -> None:
    """Same seed + as_of + same calls => same bytes, even when the days run in separate processes;
    advance(days=2) equals two advance(days=1) calls because each day's randomness derives from the date."""
    urls = [new_database(embedded_pg, f"gen_adv_{i}") for i in range(2)]
    snippet = (
        "import datetime, sys; from loaders.operational.generator import Scale, generate; "
        "generate(sys.argv[1], scale=Scale(customers=60, suppliers=8, products=40, order_lines=3000, "
        "history_days=60, warehouses=2), seed=5, as_of=datetime.date(2024, 3, 15))"
    )
    for url in urls:
        run_module("-c", snippet, url)
    run_module("-m", "loaders.operational.generator", "advance", "--url", urls[0], "--days", "2")
    for _ in range(2):
        run_module("-m", "loaders.operational.generator", "advance", "--url", urls[1])
    assert world_date(urls[0]) == world_date(urls[1]) == AS_OF + dt.timedelta(days=2)
    assert table_digests(urls[0]) == table_digests(urls[1])


# -- scale ---------------------------------------------------------------------------------------------


def test_generation_streams_in_bounded_memory(embedded_pg) -> None:
    """Peak RSS of a 300k-line run must stay close to a tiny run: 300k item rows held as Python tuples
    (plus their orders) would need well over 150 MB."""
    url = new_database(embedded_pg, "gen_memory")
    snippet = (
        "import datetime, json, resource, sys; from loaders.operational.generator import Scale, generate; "
        "generate(sys.argv[1], scale=Scale(order_lines=int(sys.argv[2])), seed=1, as_of=datetime.date(2024, 3, 15)); "
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    small_kb = json.loads(run_module("-c", snippet, url, "2000").stdout.strip().splitlines()[-1])
    big_kb = json.loads(run_module("-c", snippet, url, "300000").stdout.strip().splitlines()[-1])
    rows = scalar(url, "select count(*) from order_items")
    assert rows >= 270_000
    growth_mb = (big_kb - small_kb) / 1024
    assert growth_mb < 40, f"peak RSS grew by {growth_mb:.0f} MB for {rows} order lines"


def test_cli_generate_and_advance(fresh_databases: dict[str, str]) -> None:
    url = fresh_databases["operational"]
    out = run_module(
        "-m", "loaders.operational.generator", "generate", "--url", url, "--customers", "30", "--products", "20",
        "--suppliers", "5", "--order-lines", "1500", "--history-days", "30", "--seed", "9", "--as-of", "2024-01-31",
    ).stdout  # fmt: skip
    assert "order_items" in out and scalar(url, "select count(*) from customers") == 30
    out = run_module("-m", "loaders.operational.generator", "advance", "--url", url).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["date"] == "2024-02-01" and summary["new_orders"] > 0
    assert world_date(url) == dt.date(2024, 2, 1)


# -- acquisition -----------------------------------------------------------------------------------


def test_facebook_acquired_customers_reference_campaigns_the_double_serves(embedded_pg) -> None:
    """Every facebook-acquired pharmacy names a campaign the Graph API double serves (archived and deleted
    ones included), and that campaign reports a purchase on the pharmacy's signup day."""
    import requests

    from loaders.facebook.graph_double import ACCOUNT_TZ, serve
    from loaders.facebook.pipeline import EFFECTIVE_STATUSES

    url = new_database(embedded_pg, "gen_facebook")
    generate(url, scale=SMALL, seed=3, as_of=AS_OF)
    sources = dict(query(url, "select coalesce(utm_source, 'unknown'), count(*) from customers group by 1"))
    assert set(sources) == {"facebook", "google", "organic", "referral", "unknown"}
    assert (
        scalar(url, "select count(*) from customers where utm_source = 'facebook' and utm_campaign is null")
        == 0
    )
    assert (
        scalar(
            url, "select count(*) from customers where utm_source in ('organic') and utm_campaign is not null"
        )
        == 0
    )
    acquired = query(url, "select id, utm_campaign, created_at from customers where utm_source = 'facebook'")
    assert len(acquired) >= 5
    with serve(url) as double, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {double.access_token}"
        api = f"{double.base_url}/v21.0"
        campaign_account = {}
        for account in double.account_ids:
            params = {
                "fields": "id",
                "effective_status": json.dumps(EFFECTIVE_STATUSES["campaigns"]),
                "limit": 500,
            }
            campaign_account |= {
                c["id"]: account for c in http.get(f"{api}/{account}/campaigns", params=params).json()["data"]
            }
        assert {campaign for _, campaign, _ in acquired} <= set(campaign_account)
        expected: dict[tuple[str, dt.date], int] = {}
        for _, campaign, created in acquired:
            key = (campaign, created.astimezone(ACCOUNT_TZ).date())
            expected[key] = expected.get(key, 0) + 1
        for (campaign, day), count in expected.items():
            time_range = json.dumps({"since": day.isoformat(), "until": day.isoformat()})
            rows = http.get(
                f"{api}/{campaign_account[campaign]}/insights",
                params={"level": "ad", "time_increment": 1, "time_range": time_range, "limit": 500,
                        "fields": "campaign_id,ad_id,actions"},
            ).json()["data"]  # fmt: skip
            purchases = sum(
                int(a["value"])
                for row in rows
                if row["campaign_id"] == campaign
                for a in row.get("actions", [])
                if a["action_type"] == "purchase"
            )
            assert purchases >= count, f"campaign {campaign} on {day}: {purchases} purchases, {count} signups"


def test_extra_ad_accounts_leave_the_worlds_own_unchanged() -> None:
    """Benchmarks ask the Graph API double for 50 ad accounts: the world's own accounts and campaigns (which
    the pharmacies' acquisition refers to) must stay exactly what they are without the extra ones."""
    from loaders.operational import generator

    own_ids = generator.facebook_account_ids(5)
    own = generator.facebook_campaigns(5, 20_000, 20_700)
    ids = generator.facebook_account_ids(5, 50)
    campaigns = generator.facebook_campaigns(5, 20_000, 20_700, 50)
    assert ids[: len(own_ids)] == own_ids and len(set(ids)) == 50
    assert [c for c in campaigns if c.account_id in own_ids] == own
    assert {c.account_id for c in campaigns} == set(ids), "every extra account runs campaigns"
    assert len(generator.facebook_account_names(50)) == 50

"""Sample payload files for the embedded demo, consistent with the operational database.

The demo drops these into the bucket's pending/ folders and loads them with the same code path as
production files. They reference real customers (CNPJ and id) and real products (SKU and id) of the
`operational` database, in the formats producers actually send: NDJSON, a gzip-compressed JSON array, a
plain JSON array, and nested NF-e documents. On purpose they also contain what real feeds contain:
interactions of customers the ERP does not know (prospects, a mistyped CNPJ), and exactly one bad record
(an interaction on a channel that does not exist), which lands in the rejects table.

Deterministic: the same seed, as_of and operational data give byte-identical files, so re-dropping them is
recognised as a duplicate upload and skipped.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from typing import Any

import psycopg2

from loaders.gcs.bucket import open_bucket
from loaders.gcs.pipeline import layout_key
from loaders.operational.generator import WAREHOUSES, cnpj_check_digits

CHANNELS = (("whatsapp", 45), ("email", 20), ("phone", 20), ("web", 15))
TYPES = (("inquiry", 40), ("order", 30), ("support", 20), ("complaint", 10))
SUBJECTS = {
    "inquiry": ("Disponibilidade de produto", "Prazo de entrega", "Tabela de preços", "Boleto em aberto"),
    "order": ("Pedido de reposição", "Alteração de pedido", "Cancelamento de item"),
    "support": ("Segunda via de nota fiscal", "Acesso ao portal", "Rastreamento de entrega"),
    "complaint": ("Produto avariado", "Atraso na entrega", "Cobrança indevida"),
}


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _read(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _unknown_cnpj(rng: random.Random, known: set[str]) -> str:
    while True:
        base = f"{rng.randrange(10**7, 10**8)}0001"
        cnpj = base + cnpj_check_digits(base)
        if cnpj not in known:
            return cnpj


def _interactions(
    rng: random.Random, customers: list[tuple[int, str]], day: dt.date, count: int, first_number: int
) -> list[dict[str, Any]]:
    known = {c[1] for c in customers}
    records = []
    for n in range(count):
        channel = _pick(rng, CHANNELS)
        kind = _pick(rng, TYPES)
        agent = "ai" if channel in ("whatsapp", "web") and rng.random() < 0.6 else "human"
        started = dt.datetime.combine(day, dt.time(8)) + dt.timedelta(minutes=rng.randrange(0, 10 * 60))
        resolved = rng.random() < (0.9 if agent == "ai" else 0.75)
        minutes = round(rng.lognormvariate(3.0 if agent == "ai" else 4.2, 0.8), 1) if resolved else None
        record: dict[str, Any] = {"interaction_id": f"INT-{day:%Y%m%d}-{first_number + n:05d}"}
        customer_id, cnpj = rng.choice(customers)
        identify = rng.random()
        if identify < 0.45:
            record["customer_cnpj"] = cnpj
        elif identify < 0.8:
            record["customer_id"] = customer_id
        else:
            record.update(customer_cnpj=cnpj, customer_id=customer_id)
        record.update(
            channel=channel,
            type=kind,
            subject=rng.choice(SUBJECTS[kind]),
            # the platform writes local time (America/Sao_Paulo) without an offset
            started_at=started.isoformat(timespec="seconds"),
            resolved=resolved,
            resolved_at=(started + dt.timedelta(minutes=minutes)).isoformat(timespec="seconds")
            if minutes is not None
            else None,
            resolution_time_minutes=minutes,
            agent_type=agent,
            agent_id=f"bot-{rng.randrange(1, 4)}"
            if agent == "ai"
            else f"atendente-{rng.randrange(1, 25):02d}",
        )
        records.append(record)
    # interactions of customers the ERP does not know: a prospect, and a CNPJ typed wrong
    for i, record in enumerate(rng.sample(records, 3)):
        record.pop("customer_id", None)
        record["customer_cnpj"] = _unknown_cnpj(rng, known)
        if i == 0:
            record["subject"] = "Cadastro de nova farmácia"
    return records


def write_sample_files(
    bucket_url: str,
    operational_url: str,
    *,
    seed: int = 42,
    as_of: dt.date | None = None,
) -> list[str]:
    """Write one day of sample payload files (the three payload types) into pending/; returns their URLs.

    Requires a generated operational database (customers, products, suppliers, inventory).
    """
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    rng = random.Random(f"gcs-samples:{seed}:{as_of.isoformat()}")
    customers = [
        (int(i), str(c).strip())
        for i, c in _read(
            operational_url, "select id, cnpj from customers where status = 'active' order by id"
        )
    ]
    products = _read(operational_url, "select id, sku, name, supplier_id from products order by id")
    suppliers = {
        row[0]: row
        for row in _read(operational_url, "select id, cnpj, name, uf, region from suppliers order by id")
    }
    inventory = _read(
        operational_url,
        "select p.id, p.sku, i.warehouse_id, i.quantity_available, i.quantity_reserved, i.quantity_incoming "
        "from inventory i join products p on p.id = i.product_id order by i.warehouse_id, p.sku",
    )
    if not customers or not products:
        raise ValueError("the operational database has no customers or products: run `warehouse generate`")
    bucket = open_bucket(bucket_url)
    day = f"{as_of:%Y-%m-%d}"
    written: list[str] = []

    def put(payload_type: str, name: str, data: bytes) -> None:
        key = layout_key("pending", payload_type, f"{day}/{name}")
        bucket.write(key, data)
        written.append(bucket.object_url(key))

    # 1. customer interactions: NDJSON from the contact-centre platform, with one bad record
    first = _interactions(rng, customers, as_of, 120, 1)
    first[17]["channel"] = "fax"  # not a channel we have: rejected by the JSON Schema
    ndjson = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in first)
    put("customer_interactions", f"interactions-{day}-morning.ndjson", ndjson.encode())
    # 2. the afternoon export: a gzip-compressed JSON array
    second = _interactions(rng, customers, as_of, 80, 121)
    array = json.dumps(second, ensure_ascii=False, indent=1).encode()
    put("customer_interactions", f"interactions-{day}-afternoon.json.gz", gzip.compress(array, mtime=0))

    # 3. inventory snapshot from the WMS: one JSON array, every product in every distribution centre
    captured = dt.datetime.combine(as_of, dt.time(23, 30)).isoformat(timespec="seconds")
    if inventory:
        positions = [
            {
                "snapshot_date": day,
                "warehouse_id": warehouse,
                "sku": sku,
                "product_id": product_id,
                # the WMS counts what the ERP knows, give or take the day's movements
                "quantity_available": max(0, available + rng.randint(-5, 5)),
                "quantity_reserved": reserved,
                "quantity_incoming": incoming,
                "captured_at": captured,
            }
            for product_id, sku, warehouse, available, reserved, incoming in inventory
        ]
    else:
        positions = [
            {
                "snapshot_date": day,
                "warehouse_id": warehouse,
                "sku": sku,
                "product_id": product_id,
                "quantity_available": rng.randint(0, 500),
                "quantity_reserved": rng.randint(0, 40),
                "captured_at": captured,
            }
            for product_id, sku, _name, _supplier in products
            for warehouse in WAREHOUSES[:4]
        ]
    put("inventory_snapshots", f"wms-snapshot-{day}.json", json.dumps(positions).encode())

    # 4. supplier invoices (NF-e): nested supplier, items with batches, taxes and totals
    invoices = []
    by_supplier: dict[int, list[tuple[Any, ...]]] = {}
    for product in products:
        by_supplier.setdefault(product[3], []).append(product)
    supplier_ids = sorted(by_supplier)
    for n in range(12):
        supplier_id = rng.choice(supplier_ids)
        supplier = suppliers.get(supplier_id) or (supplier_id, "00000000000000", "Fornecedor", "SP", "")
        cnpj = str(supplier[1]).strip()
        chosen = rng.sample(by_supplier[supplier_id], min(len(by_supplier[supplier_id]), rng.randint(1, 6)))
        items = []
        for line, (product_id, sku, name, _supplier) in enumerate(chosen, start=1):
            quantity = rng.choice((12, 24, 48, 60, 120, 240))
            unit_price = round(rng.uniform(2.5, 180.0), 2)
            expires = as_of + dt.timedelta(days=rng.randint(300, 900))
            items.append(
                {
                    "line": line,
                    "sku": sku,
                    "product_id": product_id,
                    "description": name,
                    "quantity": quantity,
                    "unit_price": unit_price,
                    "batch": {
                        "lot": f"L{rng.randrange(10**5, 10**6)}",
                        "manufactured_on": (expires - dt.timedelta(days=730)).isoformat(),
                        "expires_on": expires.isoformat(),
                    },
                }
            )
        products_total = round(sum(i["quantity"] * i["unit_price"] for i in items), 2)
        freight = round(products_total * 0.015, 2)
        icms_rate = 0.18 if supplier[3] in ("SP", "MG", "RJ") else 0.12
        invoice_number = 100_000 + n + int(as_of.strftime("%j")) * 100
        key_base = f"35{as_of:%y%m}{cnpj}55001{invoice_number:09d}1{rng.randrange(10**7, 10**8)}"
        invoices.append(
            {
                "access_key": (key_base + "0" * 44)[:43] + str(sum(map(int, key_base)) % 10),
                "invoice_number": invoice_number,
                "series": 1,
                "issued_at": dt.datetime.combine(as_of, dt.time(6 + n % 12, 15)).isoformat() + "-03:00",
                "supplier": {
                    "cnpj": cnpj,
                    "name": supplier[2],
                    "address": {"uf": supplier[3], "region": supplier[4]},
                },
                "delivery": {
                    "warehouse_id": rng.choice(WAREHOUSES[:4]),
                    "expected_on": (as_of + dt.timedelta(days=rng.randint(1, 5))).isoformat(),
                },
                "items": items,
                "taxes": {
                    "icms": {
                        "base": products_total,
                        "rate": icms_rate,
                        "amount": round(products_total * icms_rate, 2),
                    },
                    "pis": {
                        "base": products_total,
                        "rate": 0.0165,
                        "amount": round(products_total * 0.0165, 2),
                    },
                    "cofins": {
                        "base": products_total,
                        "rate": 0.076,
                        "amount": round(products_total * 0.076, 2),
                    },
                },
                "totals": {
                    "products_total": products_total,
                    "freight": freight,
                    "discount": 0,
                    "invoice_total": round(products_total + freight, 2),
                },
            }
        )
    put("supplier_invoices", f"nfe-{day}.json", json.dumps(invoices, ensure_ascii=False, indent=2).encode())
    return written

"""The demo's sample payload files: consistent with the operational database, loaded by the real path."""

from __future__ import annotations

import datetime as dt

from helpers import query

from loaders.gcs import load_gcs, write_sample_files
from loaders.gcs.bucket import open_bucket
from loaders.operational import generator

AS_OF = dt.date(2026, 6, 30)
SMALL = generator.Scale(customers=80, suppliers=6, products=40, order_lines=600, history_days=30)


def test_sample_files_reference_the_operational_database_and_load(fresh_databases, tmp_path):
    urls = fresh_databases
    generator.generate(urls["operational"], scale=SMALL, seed=5, as_of=AS_OF)
    bucket_dir = tmp_path / "bucket"
    bucket_dir.mkdir()

    written = write_sample_files(str(bucket_dir), urls["operational"], seed=5, as_of=AS_OF)
    assert len(written) == 4 and all(url.startswith("file://") for url in written)
    again = tmp_path / "again"
    again.mkdir()
    write_sample_files(str(again), urls["operational"], seed=5, as_of=AS_OF)
    for url in written:  # deterministic: byte-identical files
        relative = url.split("/bucket/", 1)[1]
        assert (bucket_dir / relative).read_bytes() == (again / relative).read_bytes()

    result = load_gcs(str(bucket_dir), urls["warehouse"], work_dir=tmp_path / "work")
    assert result.count("completed") == 4 and result.count("failed") == 0
    assert result.records_rejected == 1  # the one deliberately bad record
    wh = urls["warehouse"]
    assert query(wh, "select reason from bronze_gcs.rejects") == [
        ("JSON Schema: 'fax' is not one of ['whatsapp', 'email', 'phone', 'web'] at channel",)
    ]
    assert query(wh, "select count(*) from bronze_gcs.customer_interactions") == [(199,)]

    cnpjs = {r[0].strip() for r in query(urls["operational"], "select cnpj from customers")}
    ids = {r[0] for r in query(urls["operational"], "select id from customers")}
    interactions = query(wh, "select customer_cnpj, customer_id from bronze_gcs.customer_interactions")
    unknown = [
        (c, i)
        for c, i in interactions
        if (c is not None and c not in cnpjs) or (i is not None and i not in ids)
    ]
    assert len(unknown) == 6  # interactions of customers the ERP does not know (3 per export)

    skus = {r[0] for r in query(urls["operational"], "select sku from products")}
    inventory = query(urls["operational"], "select count(*) from inventory")[0][0]
    snapshot = query(wh, "select sku, warehouse_id from bronze_gcs.inventory_snapshots")
    assert len(snapshot) == inventory and {s for s, _ in snapshot} <= skus
    assert {w for _, w in snapshot} <= {"CD-SP", "CD-MG", "CD-PE", "CD-RS"}
    items = query(wh, "select jsonb_array_elements(items)->>'sku' from bronze_gcs.supplier_invoices")
    assert items and {s for (s,) in items} <= skus
    assert query(wh, "select count(*) from bronze_gcs.supplier_invoices") == [(12,)]

    # dropping the same day's samples again is recognised as a duplicate upload: nothing changes
    write_sample_files(str(bucket_dir), urls["operational"], seed=5, as_of=AS_OF)
    rerun = load_gcs(str(bucket_dir), urls["warehouse"], work_dir=tmp_path / "work")
    assert {f.status for f in rerun.files} == {"skipped"}
    assert query(wh, "select count(*) from bronze_gcs.customer_interactions") == [(199,)]
    assert not list(open_bucket(str(bucket_dir)).list("datalake/payload_data/pending/"))

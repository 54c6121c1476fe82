"""The GCS payload loader against a real GCS API emulator (fake-gcs-server) and a real PostgreSQL.

Every error case asserts the four things that matter: bronze rows, rejects, the bucket layout and the
processing log. Crashes are real: the loader runs in a subprocess that SIGKILLs itself at a chosen point
(the patch lives in this test's runner, not in product code), then a normal run repairs everything.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PROJECT_DIR, interaction, query

from loaders.gcs import pipeline as gcs_pipeline
from loaders.gcs.bucket import BucketUnreachableError, open_bucket
from loaders.gcs.pipeline import LAYOUT_ROOT, layout_key, load_gcs, requeue_failed
from loaders.processing_log import ProcessingLog

pytest_plugins = ["gcs_emulator"]

CI = "customer_interactions"
INV = "inventory_snapshots"
NFE = "supplier_invoices"


def ndjson(records: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


class Harness:
    """One bucket + one warehouse database, and the questions the tests ask about them."""

    def __init__(self, bucket_url: str, warehouse_url: str, work_dir: Path) -> None:
        self.bucket_url = bucket_url
        self.bucket = open_bucket(bucket_url)
        self.warehouse_url = warehouse_url
        self.work_dir = work_dir

    def put(self, payload_type: str, name: str, content: bytes | str | list | dict) -> str:
        if isinstance(content, (list, dict)):
            content = json.dumps(content, ensure_ascii=False)
        data = content.encode() if isinstance(content, str) else content
        key = layout_key("pending", payload_type, name)
        self.bucket.write(key, data)
        return self.bucket.object_url(key)

    def run(self, **kwargs: Any) -> gcs_pipeline.GcsLoadResult:
        kwargs.setdefault("work_dir", self.work_dir)
        return load_gcs(self.bucket_url, self.warehouse_url, **kwargs)

    def layout(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {"pending": [], "done": [], "failed": []}
        for info in self.bucket.list(f"{LAYOUT_ROOT}/"):
            area, _, rest = info.key[len(LAYOUT_ROOT) + 1 :].partition("/")
            if area in result:
                result[area].append(rest)
        return {k: sorted(v) for k, v in result.items()}

    def leases(self) -> list[str]:
        return [i.key for i in self.bucket.list(f"{LAYOUT_ROOT}/_leases/")]

    def rows(self, sql: str, params: tuple | None = None) -> list[tuple]:
        return query(self.warehouse_url, sql, params)

    def count(self, table: str) -> int:
        exists = self.rows("select to_regclass(%s) is not null", (f"bronze_gcs.{table}",))[0][0]
        return self.rows(f"select count(*) from bronze_gcs.{table}")[0][0] if exists else 0

    def log(self, run_id: str) -> list[dict[str, Any]]:
        with ProcessingLog(self.warehouse_url) as log:
            return log.rows(run_id)

    def file_rows(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {r["file_name"]: r for r in self.log(run_id) if r["file_name"] is not None}

    def run_row(self, run_id: str) -> dict[str, Any]:
        (row,) = [r for r in self.log(run_id) if r["file_name"] is None]
        return row


@pytest.fixture()
def gcs(gcs_bucket_url: str, fresh_databases: dict[str, str], tmp_path: Path) -> Harness:
    return Harness(gcs_bucket_url, fresh_databases["warehouse"], tmp_path / "work")


@pytest.fixture()
def local(fresh_databases: dict[str, str], tmp_path: Path) -> Harness:
    folder = tmp_path / "bucket"
    folder.mkdir()
    return Harness(folder.as_uri(), fresh_databases["warehouse"], tmp_path / "work")


def assert_counts_add_up(h: Harness, run_id: str) -> None:
    for row in h.log(run_id):
        if row["records_processed"] is not None:
            assert row["records_processed"] == row["records_loaded"] + row["records_invalid"], row


# -- formats, lineage, the happy path ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["gcs", "local"])
def test_every_format_lands_with_raw_json_and_lineage(backend, request):
    h: Harness = request.getfixturevalue(backend)
    array = json.dumps([interaction(1), interaction(2, channel="email")], indent=2).encode()
    single = json.dumps(interaction(3, channel="phone")).encode()
    lines = ndjson([interaction(4), interaction(5, type="complaint")])
    h.put(CI, "2026/06/30/array.json", array)
    h.put(CI, "2026/06/30/single.json", single)
    h.put(CI, "lines.ndjson", lines)
    h.put(CI, "lines.ndjson.gz", gzip.compress(ndjson([interaction(6)])))
    h.put(CI, "array.json.gz", gzip.compress(json.dumps([interaction(7)]).encode()))

    result = h.run()

    assert result.count("completed") == 5 and result.records_loaded == 7 and result.records_rejected == 0
    assert h.layout() == {
        "pending": [],
        "done": sorted(
            f"{CI}/{n}"
            for n in (
                "2026/06/30/array.json",
                "2026/06/30/single.json",
                "lines.ndjson",
                "lines.ndjson.gz",
                "array.json.gz",
            )
        ),
        "failed": [],
    }
    assert h.leases() == []
    rows = h.rows(
        "select interaction_id, _raw_json, _source_file, _content_hash, _record_number, _run_id, "
        "started_at, _loaded_at is not null, _dlt_load_id is not null from bronze_gcs.customer_interactions "
        "order by interaction_id"
    )
    assert [r[0] for r in rows] == [f"INT-{n:05d}" for n in range(1, 8)]
    by_id = {r[0]: r for r in rows}
    # raw JSON is the record exactly as in the file (indentation included), not a re-serialisation
    start = array.index(b"{")
    assert by_id["INT-00001"][1].encode() == array[start : array.index(b"}", start) + 1]
    assert by_id["INT-00003"][1].encode() == single
    assert by_id["INT-00005"][1].encode() == lines.splitlines()[1]
    assert by_id["INT-00002"][2] == h.bucket.object_url(layout_key("pending", CI, "2026/06/30/array.json"))
    assert by_id["INT-00002"][3] == hashlib.sha256(array).hexdigest()
    assert (by_id["INT-00001"][4], by_id["INT-00002"][4], by_id["INT-00005"][4]) == (1, 2, 2)
    assert {r[5] for r in rows} == {result.run_id}
    # local time of the platform (America/Sao_Paulo, UTC-3) stored as UTC
    assert by_id["INT-00001"][6] == dt.datetime(2026, 6, 30, 12, 15, tzinfo=dt.UTC)
    assert all(r[7] and r[8] for r in rows)

    files = h.file_rows(result.run_id)
    assert set(files) == {"2026/06/30/array.json", "2026/06/30/single.json", "lines.ndjson", "lines.ndjson.gz",
                          "array.json.gz"}  # fmt: skip
    assert all(f["status"] == "completed" and f["layer"] == "bronze" for f in files.values())
    assert files["lines.ndjson.gz"]["details"]["compressed"] is True
    assert {f["details"]["validation"] for f in files.values()} == {"bulk"}  # checked in bulk (fast_path.py)
    assert files["2026/06/30/array.json"]["records_loaded"] == 2
    run = h.run_row(result.run_id)
    assert (run["status"], run["records_processed"], run["records_loaded"]) == ("completed", 7, 7)
    assert run["duration_ms"] >= 0 and run["hostname"] and run["user_name"] and run["loader_version"]
    assert_counts_add_up(h, result.run_id)


def record_load_jobs(monkeypatch) -> list[str]:
    """The file names of every load job dlt completes from now on (the real load_batch, observed)."""
    jobs: list[str] = []
    original = gcs_pipeline.load_batch

    def spy(pipeline, batch, run_id, loaded_at, *rest):
        load_ids = original(pipeline, batch, run_id, loaded_at, *rest)
        for package in pipeline.last_trace.last_load_info.load_packages:
            jobs.extend(Path(job.file_path).name for job in package.jobs["completed_jobs"])
        return load_ids

    monkeypatch.setattr(gcs_pipeline, "load_batch", spy)
    return jobs


def record_extracted_files(monkeypatch) -> list[str]:
    """The names of the files dlt's extract step writes or imports for each data load from now on."""
    files: list[str] = []
    original = gcs_pipeline.load_batch

    def spy(pipeline, batch, run_id, loaded_at, *rest):
        load_ids = original(pipeline, batch, run_id, loaded_at, *rest)
        for steps in pipeline.last_trace.last_extract_info.metrics.values():
            for step in steps:
                files.extend(Path(m.file_path).name for m in step["job_metrics"].values())
        return load_ids

    monkeypatch.setattr(gcs_pipeline, "load_batch", spy)
    return files


def test_bulk_path_is_arrow_csv_copy(gcs, monkeypatch):
    seen = record_load_jobs(monkeypatch)
    extracted = record_extracted_files(monkeypatch)
    gcs.put(CI, "a.json", [interaction(n) for n in range(50)] + [{"oops": True}])
    gcs.run()
    data_jobs = [n for n in seen if not n.startswith("_dlt") and not n.endswith(".sql")]
    assert {n.split(".")[0] for n in data_jobs} == {CI, "rejects"}
    assert all(".csv" in n for n in data_jobs), data_jobs
    # written as CSV load files at extract: no Parquet file, no normalize pass over the records
    data_files = [n for n in extracted if not n.startswith("_dlt")]
    assert sorted(n.split(".")[0] for n in data_files) == sorted([CI, "rejects"]), extracted
    assert all(n.endswith(".csv") for n in data_files), extracted
    assert not [n for n in seen if "insert_values" in n and not n.startswith("_dlt")]
    # keys bronze does not hold yet were appended: no merge statement ran for the table
    assert not [n for n in seen if n.startswith(CI) and n.endswith(".sql")], seen

    seen.clear()  # a key bronze already holds: merged, the newer record wins, nothing duplicated
    gcs.put(CI, "b.json", [interaction(7, channel="email"), interaction(50)])
    gcs.run()
    assert [n for n in seen if n.startswith(CI) and n.endswith(".sql")], seen
    assert gcs.count(CI) == 51
    assert gcs.rows(f"select channel from bronze_gcs.{CI} where interaction_id = 'INT-00007'") == [("email",)]


def test_grouped_tables_join_batches_up_to_a_row_or_byte_bound():
    """Staged batches are joined, in order and without losing a row, until a group reaches N rows or N bytes."""
    import pyarrow as pa

    sizes = (3, 7, 1, 2)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    batches = [
        pa.table({"n": list(range(start, start + size))}) for start, size in zip(starts, sizes, strict=True)
    ]
    grouped = list(gcs_pipeline.grouped_tables(iter(batches), 4, 1 << 30))
    assert [t.num_rows for t in grouped] == [10, 3]
    assert [v for t in grouped for v in t.column("n").to_pylist()] == list(range(13))
    assert [t.num_rows for t in gcs_pipeline.grouped_tables(iter(batches), 100, 1 << 30)] == [13]
    # the byte bound ends a group before the row bound: every batch here is at least 8 bytes
    assert [t.num_rows for t in gcs_pipeline.grouped_tables(iter(batches), 100, 8)] == [3, 7, 1, 2]
    assert list(gcs_pipeline.grouped_tables(iter([]), 4, 8)) == []


def test_a_big_batch_is_several_copy_jobs_per_table_and_lands_every_record_once(gcs, monkeypatch):
    """Load files of about `LOAD_FILE_MAX_ROWS` rows: a big table is COPYed as several parallel jobs,
    appended and merged alike, and bronze holds every record once; no dlt setting is left for other loaders."""
    jobs = record_load_jobs(monkeypatch)
    monkeypatch.delenv("DATA_WRITER__FILE_MAX_ITEMS", raising=False)
    # the proportions of a 256 MiB batch at 3,000 records: files rotate between staged Arrow batches
    monkeypatch.setattr(gcs_pipeline, "LOAD_FILE_MAX_ROWS", 500)
    monkeypatch.setattr(gcs_pipeline, "BATCH_ROWS", 250)
    gcs.put(CI, "a.ndjson", ndjson([interaction(n) for n in range(1_500)] + [{"oops": True}]))
    gcs.put(CI, "b.ndjson", ndjson([interaction(n) for n in range(1_500, 3_000)]))
    first = gcs.run()
    assert "DATA_WRITER__FILE_MAX_ITEMS" not in os.environ  # other loaders of the process keep dlt's
    copies = [n for n in jobs if n.startswith(f"{CI}.") and n.endswith(".csv")]
    assert len(copies) >= 4, jobs
    assert not [n for n in jobs if n.startswith(CI) and n.endswith(".sql")], jobs  # new keys: appended
    assert gcs.rows(
        f"select count(*), count(distinct interaction_id), count(distinct _dlt_id) from bronze_gcs.{CI}"
    ) == [(3_000, 3_000, 3_000)]
    assert gcs.count("rejects") == 1
    assert first.records_loaded == 3_000

    # a merge of several files: the newer records win, nothing doubles
    jobs.clear()
    gcs.put(CI, "c.ndjson", ndjson([interaction(n, channel="email") for n in range(0, 3_600, 3)]))
    gcs.run()
    assert len([n for n in jobs if n.startswith(f"{CI}.") and n.endswith(".csv")]) >= 2, jobs
    assert [n for n in jobs if n.startswith(CI) and n.endswith(".sql")], jobs  # merged
    assert gcs.rows(
        f"select count(*), count(distinct interaction_id), count(*) filter (where channel = 'email') "
        f"from bronze_gcs.{CI}"
    ) == [(3_200, 3_200, 1_200)]


def test_a_batch_loads_while_the_next_is_staged_and_each_file_lands_once(gcs, monkeypatch):
    """With small batches, the run stages the next file while the previous batch loads (the two steps of
    two batches overlap in time), batches still commit one by one, every file is logged and moved, and a
    file with the same bytes as one still loading is recognised as a duplicate."""
    spans: dict[str, list[tuple[float, float]]] = {"stage": [], "load": []}

    def timed(name: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                spans[name].append((started, time.monotonic()))

        return run

    def slow_load(*args: Any) -> Any:
        time.sleep(0.3)  # still loading when the next file is staged, however fast the machine
        return real_load(*args)

    real_load = gcs_pipeline.load_batch
    monkeypatch.setattr(gcs_pipeline, "stage_file", timed("stage", gcs_pipeline.stage_file))
    monkeypatch.setattr(gcs_pipeline, "load_batch", timed("load", slow_load))
    contents = {f"part-{n}.ndjson": ndjson([interaction(n * 100 + i) for i in range(100)]) for n in range(4)}
    for name, content in contents.items():
        gcs.put(CI, name, content)
        if name == "part-1.ndjson":  # staged right after part-1, while part-1 loads
            gcs.put(CI, "part-1-again.ndjson", content)
    result = gcs.run(max_batch_bytes=1)  # every file is a batch of its own

    statuses = {f.file_name: f.status for f in result.files}
    assert statuses == {**{name: "completed" for name in contents}, "part-1-again.ndjson": "skipped"}
    assert (
        "same bytes as part-1.ndjson, loaded in this run"
        in gcs.file_rows(result.run_id)["part-1-again.ndjson"]["message"]
    )
    assert gcs.rows(f"select count(*), count(distinct interaction_id) from bronze_gcs.{CI}") == [(400, 400)]
    assert gcs.layout() == {
        "pending": [],
        "done": sorted(f"{CI}/{n}" for n in [*contents, "part-1-again.ndjson"]),
        "failed": [],
    }
    assert len(result.load_ids) == 4
    loads = sorted(spans["load"])
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(loads))  # one at a time
    overlapping = [
        stage for stage in spans["stage"] for load in loads if stage[0] < load[1] and load[0] < stage[1]
    ]
    assert overlapping, (spans["stage"], loads)
    assert_counts_add_up(gcs, result.run_id)


def test_a_failed_background_load_stops_the_run_and_leaves_every_unloaded_file_pending(gcs, monkeypatch):
    """The first batch's load fails while the second is staged: the error reaches the caller, the first
    batch's files are logged as a failed load, the staged ones as not loaded; all stay in pending/."""
    for n in range(3):
        gcs.put(CI, f"part-{n}.ndjson", ndjson([interaction(n * 10 + i) for i in range(10)]))

    def broken(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)  # long enough for the next file to be staged meanwhile
        raise RuntimeError("warehouse went away")

    monkeypatch.setattr(gcs_pipeline, "load_batch", broken)
    with pytest.raises(RuntimeError, match="warehouse went away"):
        gcs.run(run_id="broken-background", max_batch_bytes=1)
    files = {r["file_name"]: r for r in gcs.log("broken-background") if r["file_name"] is not None}
    assert "load failed, file left in pending/" in files["part-0.ndjson"]["message"]
    assert {r["status"] for r in files.values()} == {"failed"}
    assert gcs.layout()["pending"] == [f"{CI}/part-{n}.ndjson" for n in range(3)] and gcs.leases() == []
    assert gcs.run_row("broken-background")["status"] == "failed"
    monkeypatch.undo()
    gcs.run()
    assert gcs.count(CI) == 30


def test_new_keys_are_checked_against_bronze_by_its_key_index(gcs, monkeypatch):
    """A batch of keys new to a bronze table that already has rows is appended; the check finds bronze's
    rows through the key index the loader builds (one probe per key), not by scanning bronze for every key
    (the plan PostgreSQL chose for an unanalyzed key table: hours at a few hundred thousand rows). Bronze
    has no UNIQUE index on `_dlt_id` (nothing replays a COPY here: a crashed run's packages are dropped)."""
    jobs = record_load_jobs(monkeypatch)
    gcs.put(CI, "a.ndjson", ndjson([interaction(n) for n in range(2_000)]))
    gcs.run()
    gcs.put(CI, "b.ndjson", ndjson([interaction(n) for n in range(2_000, 4_000)]))
    jobs.clear()
    gcs.run()
    assert not [n for n in jobs if n.startswith(CI) and n.endswith(".sql")], jobs  # new keys: appended
    assert gcs.rows(f"select count(*), count(distinct interaction_id) from bronze_gcs.{CI}") == [
        (4_000, 4_000)
    ]
    indexes = dict(gcs.rows("select indexname, indexdef from pg_indexes where schemaname = 'bronze_gcs'"))
    key_index = f"{CI}__interaction_id__lookup"
    assert indexes[key_index].endswith("USING btree (interaction_id)"), indexes
    assert not [i for i in indexes.values() if "(_dlt_id)" in i], indexes

    # the check's plan at a size where it matters, with bronze's statistics as fresh as a load leaves them
    import psycopg2

    conn = psycopg2.connect(gcs.warehouse_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'bronze_gcs' and table_name = %s "
                "and column_name not in ('interaction_id', '_dlt_id')",
                (CI,),
            )
            others = ", ".join(f'"{name}"' for (name,) in cur.fetchall())
            cur.execute(  # 200k more rows like the first one, under other keys
                f"insert into bronze_gcs.{CI} (interaction_id, _dlt_id, {others}) "
                f"select 'X-' || n, 'x' || n, {others} from (select * from bronze_gcs.{CI} limit 1) as r "
                "cross join generate_series(1, 200000) as n"
            )
            cur.execute("create temp table new_keys (interaction_id text) on commit drop")
            cur.execute("insert into new_keys select 'Y-' || n from generate_series(1, 200000) as n")
            cur.execute("analyze new_keys")
            cur.execute(
                "explain " + gcs_pipeline.any_key_in_bronze_sql(f"bronze_gcs.{CI}", ["interaction_id"])
            )
            plan = "\n".join(row[0] for row in cur.fetchall())
    finally:
        conn.rollback()
        conn.close()
    assert key_index in plan and f"Seq Scan on {CI}" not in plan, plan


def test_three_payload_types_including_deep_nesting(gcs):
    gcs.put(INV, "2026-06-30/wms.json", [
        {"snapshot_date": "2026-06-30", "warehouse_id": wh, "sku": "MED-0001", "product_id": 1,
         "quantity_available": 120, "quantity_reserved": 8}
        for wh in ("CD-SP", "CD-MG", "CD-PE", "CD-RS")
    ])  # fmt: skip
    invoice = {
        "access_key": "3" * 44,
        "invoice_number": 123456,
        "series": 1,
        "issued_at": "2026-06-30T08:00:00-03:00",
        "supplier": {"cnpj": "11444777000161", "name": "Laboratório Ñandú", "address": {"uf": "SP"}},
        "items": [
            {
                "sku": "MED-0001",
                "quantity": 24,
                "unit_price": 10.5,
                "batch": {"lot": "L1", "expires_on": "2028-01-31"},
            },
            {"sku": "MED-0002", "quantity": 12, "unit_price": 3.25},
        ],
        "taxes": {"icms": {"base": 291.0, "rate": 0.18, "amount": 52.38}},
        "totals": {"products_total": 291.0, "invoice_total": 295.37},
    }
    gcs.put(NFE, "nfe.json", [invoice])
    result = gcs.run()
    assert result.count("completed") == 2
    assert gcs.count(INV) == 4
    ((cnpj, name, uf, total, icms, items, taxes),) = gcs.rows(
        "select supplier_cnpj, supplier_name, supplier_uf, total_amount, icms_amount, items, taxes "
        "from bronze_gcs.supplier_invoices"
    )
    assert (cnpj, name, uf, str(total), str(icms)) == (
        "11444777000161",
        "Laboratório Ñandú",
        "SP",
        "295.37",
        "52.38",
    )
    assert items[0]["batch"]["lot"] == "L1" and len(items) == 2  # json column, queryable
    assert taxes["icms"]["rate"] == 0.18


# -- invalid files and records -------------------------------------------------------------------


def test_malformed_json_goes_to_failed_whole_and_can_be_requeued(gcs):
    broken = (
        b'[{"interaction_id": "INT-1"}, ' + json.dumps(interaction(2)).encode() + b', {"interaction_id": '
    )
    gcs.put(CI, "broken.json", broken)
    gcs.put(CI, "good.json", [interaction(3)])
    result = gcs.run()

    assert gcs.layout() == {"pending": [], "done": [f"{CI}/good.json"], "failed": [f"{CI}/broken.json"]}
    assert gcs.rows("select interaction_id from bronze_gcs.customer_interactions") == [("INT-00003",)]
    assert gcs.count("rejects") == 0  # nothing of a malformed file is loaded, not even as rejects
    row = gcs.file_rows(result.run_id)["broken.json"]
    assert row["status"] == "failed" and "not valid JSON" in row["message"]
    assert "unexpected end of file" in row["message"]
    assert (row["records_processed"], row["records_loaded"], row["records_invalid"]) == (0, 0, 0)
    assert gcs.run_row(result.run_id)["status"] == "completed"  # a quarantined file is not a failed run

    # the producer fixes the file; an operator requeues it; the next run loads it
    assert requeue_failed(gcs.bucket_url, payload_type=CI, warehouse_url=gcs.warehouse_url) == [
        f"{CI}/broken.json"
    ]
    assert gcs.layout()["pending"] == [f"{CI}/broken.json"]
    gcs.put(CI, "broken.json", [interaction(1), interaction(2)])
    second = gcs.run()
    assert gcs.file_rows(second.run_id)["broken.json"]["status"] == "completed"
    assert gcs.count(CI) == 3
    assert gcs.layout()["failed"] == []


def test_empty_file_empty_array_and_empty_object(gcs):
    gcs.put(CI, "empty.json", b"")
    gcs.put(CI, "blank.ndjson", b"  \n\n")
    gcs.put(CI, "empty-array.json", b"[]")
    gcs.put(CI, "empty-object.json", b"{}")
    result = gcs.run()

    assert gcs.layout() == {
        "pending": [],
        "done": [f"{CI}/empty-array.json", f"{CI}/empty-object.json"],
        "failed": [f"{CI}/blank.ndjson", f"{CI}/empty.json"],
    }
    files = gcs.file_rows(result.run_id)
    assert files["empty.json"]["status"] == "failed" and "empty" in files["empty.json"]["message"]
    assert files["empty-array.json"]["status"] == "completed"
    assert files["empty-array.json"]["records_processed"] == 0
    assert files["empty-object.json"]["status"] == "completed"
    assert (
        files["empty-object.json"]["records_processed"],
        files["empty-object.json"]["records_invalid"],
    ) == (1, 1)
    assert gcs.count(CI) == 0
    assert gcs.rows("select reason, _raw_json from bronze_gcs.rejects") == [
        ("missing required field 'interaction_id'", "{}")
    ]


def test_bad_records_are_rejected_with_reasons_good_ones_load(gcs):
    records = [
        interaction(1),
        interaction(2, channel=...),  # missing required field
        interaction(3, resolution_time_minutes="12"),  # wrong type: a string for a number
        interaction(4, customer_id="42", customer_cnpj=...),  # wrong type for a bigint
        interaction(5, channel="fax"),  # JSON Schema enum
        interaction(6, customer_cnpj=...),  # neither CNPJ nor id: JSON Schema anyOf
        interaction(7, started_at="ontem"),  # not a timestamp
        "not an object",
        interaction(9, interaction_id=None),  # null primary key
        interaction(10),
    ]
    gcs.put(CI, "mixed.ndjson", ndjson(records))
    result = gcs.run()

    assert gcs.layout()["done"] == [f"{CI}/mixed.ndjson"]
    assert [r[0] for r in gcs.rows("select interaction_id from bronze_gcs.customer_interactions order by 1")] == [
        "INT-00001", "INT-00010",
    ]  # fmt: skip
    rejects = dict(gcs.rows("select _record_number, reason from bronze_gcs.rejects order by 1"))
    assert rejects == {
        2: "missing required field 'channel'",
        3: "field 'resolution_time_minutes': expected a number, got string '12'",
        4: "field 'customer_id': expected an integer, got string '42'",
        5: "JSON Schema: 'fax' is not one of ['whatsapp', 'email', 'phone', 'web'] at channel",
        6: "JSON Schema: needs one of: customer_cnpj | customer_id at (record)",
        7: "field 'started_at': 'ontem' is not an ISO-8601 timestamp",
        8: "a record must be a JSON object, got string",
        9: "required field 'interaction_id' is missing or null",
    }
    raw = gcs.rows("select _raw_json from bronze_gcs.rejects where _record_number = 8")[0][0]
    assert raw == '"not an object"'
    row = gcs.file_rows(result.run_id)["mixed.ndjson"]
    assert (row["records_processed"], row["records_loaded"], row["records_invalid"]) == (10, 2, 8)
    assert row["details"]["reject_reasons"]["missing required field 'channel'"] == 1
    assert_counts_add_up(gcs, result.run_id)


def test_schema_drift_is_recorded_not_fatal_unless_the_contract_says_so(gcs, tmp_path):
    drifted = interaction(1, metadata={"tags": ["vip"], "csat": {"score": 5}}, Sentiment="positive")
    gcs.put(CI, "drift.json", [drifted, interaction(2)])
    invoice = {
        "access_key": "4" * 44, "invoice_number": 1, "issued_at": "2026-06-30T08:00:00Z",
        "supplier": {"cnpj": "11444777000161", "address": {"uf": "SP", "geo": {"lat": -23.5}}},
        "items": [{"sku": "A", "quantity": 1, "unit_price": 1.0, "batch": {"lot": "L", "serial": "S1"}}],
        "totals": {"invoice_total": 1.0},
    }  # fmt: skip
    gcs.put(NFE, "nfe.json", [invoice])
    result = gcs.run()

    assert gcs.count(CI) == 2 and gcs.count(NFE) == 1 and gcs.count("rejects") == 0
    files = gcs.file_rows(result.run_id)
    assert files["drift.json"]["details"]["new_fields"] == {"metadata": 1, "sentiment": 1}
    assert "schema drift" in files["drift.json"]["message"]
    assert files["nfe.json"]["details"]["new_fields"] == {
        "supplier.address.geo": 1,
        "items[].batch.serial": 1,
    }
    raw = gcs.rows(
        "select _raw_json from bronze_gcs.customer_interactions where interaction_id = 'INT-00001'"
    )
    assert json.loads(raw[0][0])["metadata"]["csat"]["score"] == 5  # nothing lost: raw JSON keeps it

    # a payload type whose contract forbids drift: the file is quarantined whole (a new type, no Python)
    config = tmp_path / "types"
    config.mkdir()
    (config / "strict.yml").write_text(
        "name: strict_events\nprimary_key: [id]\nunknown_fields: fail\ncolumns:\n  id: bigint\n  kind: text\n"
    )
    gcs.put("strict_events", "ok.json", [{"id": 1, "kind": "a"}])
    gcs.put("strict_events", "drift.json", [{"id": 2, "kind": "b"}, {"id": 3, "kind": "c", "extra": 1}])
    strict = gcs.run(config_dir=config)
    assert gcs.rows("select id from bronze_gcs.strict_events") == [(1,)]
    assert "strict_events/drift.json" in gcs.layout()["failed"]
    row = gcs.file_rows(strict.run_id)["drift.json"]
    assert row["status"] == "failed" and "undeclared fields extra" in row["message"]


def test_keys_colliding_after_normalisation(gcs, tmp_path):
    config = tmp_path / "types"
    config.mkdir()
    (config / "contacts.yml").write_text(
        "name: contacts\nprimary_key: [contact_id]\ncolumns:\n  contact_id: bigint\n  email: text\n"
        "  customer_name: text\n"
    )
    gcs.put("contacts", "c.json", [
        {"contact_id": 1, "Email": "A@X.COM", "email": "a@x.com"},  # declared field, ambiguous: rejected
        {"contact_id": 2, "Email": "b@x.com", "customerName": "Drogaria Bom Preço"},  # normalised match
        {"contact_id": 3, "email": "c@x.com", "Note": "x", "note": "y"},  # undeclared collision: drift
    ])  # fmt: skip
    result = gcs.run(config_dir=config)
    assert gcs.rows("select contact_id, email, customer_name from bronze_gcs.contacts order by 1") == [
        (2, "b@x.com", "Drogaria Bom Preço"),
        (3, "c@x.com", None),
    ]
    (reason,) = gcs.rows("select reason from bronze_gcs.rejects")[0]
    assert reason == "keys 'Email' and 'email' collide after name normalisation (both mean 'email')"
    details = gcs.file_rows(result.run_id)["c.json"]["details"]
    assert details["new_fields"] == {"note (colliding keys 'Note' and 'note')": 1}


def test_accents_emoji_bom_and_nul(gcs):
    records = [
        interaction(1, agent_id="atendente São José 😀", subject="Remédio não chegou — urgente"),
        interaction(2, agent_id="bad\u0000id"),  # NUL in a typed text column: cannot be stored
        interaction(3, subject="nul\u0000in an undeclared field"),  # only in the raw JSON: fine
    ]
    body = json.dumps(records, ensure_ascii=False).encode()
    gcs.put(CI, "utf8-bom.json", b"\xef\xbb\xbf" + body)
    gcs.put(CI, "raw-nul.ndjson", b'{"interaction_id": "X\x00"}\n')  # an unescaped NUL is not JSON
    result = gcs.run()

    assert gcs.rows("select agent_id from bronze_gcs.customer_interactions order by interaction_id") == [
        ("atendente São José 😀",),
        (None,),
    ]
    raw = gcs.rows(
        "select _raw_json from bronze_gcs.customer_interactions where interaction_id = 'INT-00001'"
    )
    assert "Remédio não chegou — urgente" in raw[0][0] and "😀" in raw[0][0]
    raw3 = gcs.rows(
        "select _raw_json from bronze_gcs.customer_interactions where interaction_id = 'INT-00003'"
    )
    assert "\\u0000" in raw3[0][0]  # verbatim: the escape, as in the file
    (reason,) = gcs.rows("select reason from bronze_gcs.rejects")[0]
    assert reason.startswith("field 'agent_id': contains a NUL character")
    assert gcs.layout()["failed"] == [f"{CI}/raw-nul.ndjson"]
    assert gcs.file_rows(result.run_id)["utf8-bom.json"]["records_invalid"] == 1


def test_hostile_file_names(gcs):
    name = """it's "quoted"; drop table x; -- ã 😀/sub dir/a b.json"""
    url = gcs.put(CI, name, [interaction(1)])
    result = gcs.run()
    assert gcs.layout()["done"] == [f"{CI}/{name}"]
    assert gcs.file_rows(result.run_id)[name]["status"] == "completed"
    assert gcs.rows("select _source_file from bronze_gcs.customer_interactions") == [(url,)]
    assert gcs.rows("select file_name from bronze_gcs.loaded_files") == [(name,)]


# -- exactly once --------------------------------------------------------------------------------


def test_duplicates_reruns_and_corrections(gcs):
    original = ndjson([interaction(1), interaction(2, resolved=False, resolved_at=None), {"bad": 1}])
    gcs.put(CI, "day1.ndjson", original)
    first = gcs.run()
    assert (gcs.count(CI), gcs.count("rejects")) == (2, 1)

    assert gcs.run().files == []  # nothing pending: nothing happens

    gcs.put(CI, "day1.ndjson", original)  # the same file uploaded again
    gcs.put(CI, "copy-of-day1.ndjson", original)  # the same content under another name
    again = gcs.run()
    files = gcs.file_rows(again.run_id)
    assert files["day1.ndjson"]["status"] == "skipped" and "already loaded" in files["day1.ndjson"]["message"]
    assert files["copy-of-day1.ndjson"]["status"] == "skipped"
    assert "same bytes as day1.ndjson" in files["copy-of-day1.ndjson"]["message"]
    assert (gcs.count(CI), gcs.count("rejects")) == (2, 1)
    assert gcs.layout()["done"] == [f"{CI}/copy-of-day1.ndjson", f"{CI}/day1.ndjson"]

    # a corrected file: new content under the same name supersedes the old rows by primary key
    corrected = ndjson([interaction(2, resolved=True, resolution_time_minutes=45.0), interaction(3)])
    gcs.put(CI, "day1.ndjson", corrected)
    fix = gcs.run()
    assert gcs.file_rows(fix.run_id)["day1.ndjson"]["status"] == "completed"
    rows = gcs.rows(
        "select interaction_id, resolved, resolution_time_minutes, _content_hash "
        "from bronze_gcs.customer_interactions order by 1"
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("INT-00001", True, 12.5),
        ("INT-00002", True, 45.0),
        ("INT-00003", True, 12.5),
    ]
    assert rows[1][3] == hashlib.sha256(corrected).hexdigest()
    assert gcs.count("loaded_files") == 2
    assert first.run_id != fix.run_id


def test_same_primary_key_twice_in_one_load_keeps_the_latest(gcs):
    gcs.put(CI, "a.ndjson", ndjson([interaction(1, channel="email"), interaction(1, channel="phone")]))
    gcs.run()
    assert gcs.rows("select channel, _record_number from bronze_gcs.customer_interactions") == [("phone", 2)]


RUNNER = textwrap.dedent(
    """
    import json, os, signal, sys
    import loaders.gcs.pipeline as p

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    crash = os.environ.get("CRASH_AT", "")
    if os.environ.get("LOAD_FILE_MAX_ROWS"):  # small rotated files: several COPY jobs per table
        p.LOAD_FILE_MAX_ROWS = int(os.environ["LOAD_FILE_MAX_ROWS"])
        p.BATCH_ROWS = p.LOAD_FILE_MAX_ROWS // 2  # files rotate between staged Arrow batches
    if crash == "before_move":          # data and registry committed, file still in pending/
        p.move_file = die
    elif crash == "before_registry":    # data committed, registry not
        p.register_files = die
    elif crash == "during_copy":        # inside dlt's load: COPY of the rejects
        from dlt.destinations.impl.postgres import postgres as pg
        copy = pg.PostgresCsvCopyJob.run
        def run(self):
            if self.load_table_name == "rejects":
                die()
            return copy(self)
        pg.PostgresCsvCopyJob.run = run
    elif crash == "after_first_table":  # inside dlt's load: one table written, the rest not
        from dlt.destinations.impl.postgres import postgres as pg
        from dlt.destinations.job_client_impl import SqlLoadJob
        merge, copy = SqlLoadJob.run, pg.PostgresCsvCopyJob.run
        def run_merge(self):  # a merge: the table's rows are in bronze
            merge(self)
            if "customer_interactions" in os.path.basename(self._file_path):
                die()
        def run_copy(self):  # a first load is appended: the COPY itself wrote bronze
            copy(self)
            if self.load_table_name == "customer_interactions":
                die()
        SqlLoadJob.run = run_merge
        pg.PostgresCsvCopyJob.run = run_copy
    result = p.load_gcs(sys.argv[1], sys.argv[2], work_dir=sys.argv[3], lease_seconds=float(sys.argv[4]))
    print(json.dumps({"run_id": result.run_id, "statuses": [f.status for f in result.files]}))
    """
)


def run_loader_process(
    h: Harness, crash: str = "", lease_seconds: float = 600, **env_vars: str
) -> subprocess.Popen[str]:
    env = dict(os.environ, CRASH_AT=crash, RUNTIME__LOG_LEVEL="WARNING", **env_vars)
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, h.bucket_url, h.warehouse_url, str(h.work_dir), str(lease_seconds)],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def crashed_run(h: Harness, crash: str, **env_vars: str) -> None:
    process = run_loader_process(h, crash, lease_seconds=1.0, **env_vars)
    out, err = process.communicate(timeout=120)
    assert process.returncode == -9, f"expected a SIGKILL at {crash}:\n{out}\n{err}"


def expected_state(h: Harness) -> tuple:
    return (
        h.rows("select interaction_id, channel from bronze_gcs.customer_interactions order by 1"),
        h.rows("select _record_number, reason from bronze_gcs.rejects order by 1"),
        h.rows("select file_name from bronze_gcs.loaded_files order by 1"),
    )


@pytest.mark.parametrize("crash", ["before_move", "before_registry", "during_copy", "after_first_table"])
def test_a_crash_anywhere_is_repaired_by_the_next_run_without_duplicates(gcs, crash):
    gcs.put(CI, "a.ndjson", ndjson([interaction(1), interaction(2), {"oops": True}]))
    gcs.put(CI, "b.json", [interaction(3, channel="web")])
    crashed_run(gcs, crash)
    assert gcs.layout()["pending"] == [f"{CI}/a.ndjson", f"{CI}/b.json"]  # nothing moved
    if crash in ("before_move", "before_registry"):
        assert gcs.count(CI) == 3  # the data had committed

    time.sleep(1.1)  # the crashed run's leases (1 s) expire: it can never block the files forever
    result = gcs.run()

    assert gcs.layout() == {"pending": [], "done": [f"{CI}/a.ndjson", f"{CI}/b.json"], "failed": []}
    assert gcs.leases() == []
    rows, rejects, registered = expected_state(gcs)
    assert rows == [("INT-00001", "whatsapp"), ("INT-00002", "whatsapp"), ("INT-00003", "web")]
    assert rejects == [(3, "missing required field 'interaction_id'")]
    assert registered == [("a.ndjson",), ("b.json",)]
    statuses = {f.file_name: f.status for f in result.files}
    if crash == "before_move":  # recognised by content hash: skipped, and moved
        assert statuses == {"a.ndjson": "skipped", "b.json": "skipped"}
    else:
        assert statuses == {"a.ndjson": "completed", "b.json": "completed"}
    # the crashed run is visible in the log: its rows never left `processing`
    stuck = gcs.rows("select count(*) from ops.processing_log where status = 'processing'")[0][0]
    assert stuck >= 1


def test_a_crash_between_two_copy_jobs_of_a_table_is_repaired(gcs):
    """A table loaded as several COPY jobs (rotated files): a crash after the first one committed leaves
    part of the table in bronze; the next run merges (those keys are in bronze) and lands each record once."""
    records = [interaction(n) for n in range(1_200)]
    gcs.put(CI, "a.ndjson", ndjson([*records[:600], {"oops": True}]))
    gcs.put(CI, "b.ndjson", ndjson(records[600:]))
    # one load worker: exactly one job has committed when the crash comes
    crashed_run(gcs, "after_first_table", LOAD_FILE_MAX_ROWS="200", LOAD__WORKERS="1")
    assert gcs.layout()["pending"] == [f"{CI}/a.ndjson", f"{CI}/b.ndjson"]
    assert gcs.count(CI) == 200  # one of the table's six jobs

    time.sleep(1.1)
    result = gcs.run()

    assert {f.status for f in result.files} == {"completed"}
    assert gcs.rows(
        f"select count(*), count(distinct interaction_id), count(distinct _dlt_id) from bronze_gcs.{CI}"
    ) == [(1_200, 1_200, 1_200)]
    assert gcs.count("rejects") == 1
    assert gcs.rows("select file_name from bronze_gcs.loaded_files order by 1") == [
        ("a.ndjson",),
        ("b.ndjson",),
    ]


def test_two_concurrent_runs_never_process_the_same_file(gcs):
    names = [f"batch-{n:02d}.ndjson" for n in range(24)]
    for n, name in enumerate(names):
        gcs.put(CI, name, ndjson([interaction(n * 10 + i) for i in range(10)]))
    first, second = run_loader_process(gcs), run_loader_process(gcs)
    outputs = [p.communicate(timeout=180) for p in (first, second)]
    for process, (out, err) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, out + err
    run_ids = [json.loads(out.strip().splitlines()[-1])["run_id"] for out, _ in outputs]

    completed = [
        row[0]
        for row in gcs.rows(
            "select file_name from ops.processing_log where status = 'completed' and file_name is not null"
        )
    ]
    assert sorted(completed) == names  # every file loaded exactly once, by one of the two runs
    assert gcs.count(CI) == 240
    assert gcs.rows("select count(distinct interaction_id) from bronze_gcs.customer_interactions") == [(240,)]
    assert gcs.layout()["done"] == [f"{CI}/{n}" for n in names]
    assert gcs.leases() == []
    for run_id in run_ids:
        assert gcs.run_row(run_id)["status"] == "completed"


def test_two_concurrent_runs_on_a_local_folder(local):
    names = [f"f{n:02d}.json" for n in range(12)]
    for n, name in enumerate(names):
        local.put(CI, name, [interaction(n)])
    processes = [run_loader_process(local), run_loader_process(local)]
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, out + err
    completed = local.rows(
        "select file_name from ops.processing_log where status = 'completed' and file_name is not null"
    )
    assert sorted(r[0] for r in completed) == names
    assert local.count(CI) == 12 and local.layout()["done"] == [f"{CI}/{n}" for n in names]


def test_live_lease_is_respected_and_expired_lease_is_taken_over(gcs):
    gcs.put(CI, "busy.json", [interaction(1)])
    gcs.put(CI, "stale.json", [interaction(2)])
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
    for name, expires in (("busy.json", future), ("stale.json", past)):
        lease = {"run_id": f"other-{name}", "owner": "someone@elsewhere", "expires_at": expires}
        gcs.bucket.create_exclusive(layout_key("_leases", CI, name + ".lease"), json.dumps(lease).encode())
    result = gcs.run()
    files = gcs.file_rows(result.run_id)
    assert (
        files["busy.json"]["status"] == "skipped"
        and "leased by run other-busy.json" in files["busy.json"]["message"]
    )
    assert files["stale.json"]["status"] == "completed"
    assert gcs.layout()["pending"] == [f"{CI}/busy.json"]


# -- infrastructure failures ---------------------------------------------------------------------


def test_unreachable_bucket_fails_clearly_and_moves_nothing(gcs, monkeypatch, tmp_path):
    gcs.put(CI, "a.json", [interaction(1)])
    emulator = os.environ["STORAGE_EMULATOR_HOST"]
    from loaders.embedded_postgres import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("GCS_RETRY_DEADLINE_SECONDS", "2")
    with pytest.raises(BucketUnreachableError, match=r"cannot reach gs://test-"):
        gcs.run(run_id="unreachable-run")
    run = gcs.run_row("unreachable-run")
    assert run["status"] == "failed" and "cannot reach" in run["message"]

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    with pytest.raises(BucketUnreachableError, match="does not exist"):
        load_gcs("gs://no-such-bucket", gcs.warehouse_url, run_id="missing-bucket")
    with pytest.raises(BucketUnreachableError, match="does not exist"):
        load_gcs(str(tmp_path / "no-such-folder"), gcs.warehouse_url)
    assert gcs.layout() == {"pending": [f"{CI}/a.json"], "done": [], "failed": []}
    assert gcs.count(CI) == 0


def test_warehouse_failure_during_load_leaves_files_pending(gcs, monkeypatch):
    gcs.put(CI, "a.json", [interaction(1)])

    def broken(*args, **kwargs):
        raise RuntimeError("warehouse went away")

    monkeypatch.setattr(gcs_pipeline, "load_batch", broken)
    with pytest.raises(RuntimeError, match="warehouse went away"):
        gcs.run(run_id="broken-load")
    assert gcs.layout()["pending"] == [f"{CI}/a.json"] and gcs.leases() == []
    (row,) = [r for r in gcs.log("broken-load") if r["file_name"] == "a.json"]
    assert row["status"] == "failed" and "left in pending/" in row["message"]
    assert gcs.run_row("broken-load")["status"] == "failed"
    monkeypatch.undo()
    gcs.run()
    assert gcs.count(CI) == 1


def test_unknown_payload_type_folders_are_left_alone_and_reported(gcs):
    gcs.put("not_configured", "x.json", [{"a": 1}])
    gcs.put(CI, "a.json", [interaction(1)])
    result = gcs.run()
    assert gcs.layout()["pending"] == ["not_configured/x.json"]
    assert gcs.run_row(result.run_id)["details"]["unknown_payload_type_folders"] == {"not_configured": 1}

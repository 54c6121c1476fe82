"""The three loaders and the processing log on BigQuery: the BigQuery API emulator (tests/python/bigquery_emulator.py),
the same real sources as the PostgreSQL tests (an embedded PostgreSQL world, fake-gcs-server, the Graph API double).

Every assertion reads BigQuery through fully qualified names (`project.dataset.table`): the emulator may answer
an unqualified name with an empty result. Each test writes to datasets of its own (BRONZE_*_SCHEMA / OPS_SCHEMA),
so tests sharing the session's emulator never see each other's rows. Scales are small: the point is the warehouse
path (load jobs, merges, the processing log, the registry lookups), which the PostgreSQL tests cover in depth.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import make_databases
from helpers import OPERATIONAL_TABLES, PROJECT_DIR, interaction, query

from loaders import cli
from loaders.config import dbt_env, load_settings
from loaders.destinations import BigQueryTarget, ConnectionConfigError, dlt_destination
from loaders.facebook.graph_double import serve
from loaders.facebook.pipeline import GRAIN, load_facebook
from loaders.gcs.bucket import open_bucket
from loaders.gcs.pipeline import LAYOUT_ROOT, layout_key, load_gcs
from loaders.operational import generator
from loaders.operational.pipeline import load_operational
from loaders.processing_log import ProcessingLog, new_run_id, record_dbt_results

pytest_plugins = ["gcs_emulator"]

AS_OF = dt.date(2026, 6, 30)
TINY = generator.Scale(customers=40, suppliers=5, products=25, order_lines=600, history_days=45, warehouses=2)
LINEAGE = ("_loaded_at", "_dlt_load_id", "_dlt_id")


# -- fixtures ----------------------------------------------------------------------------------------------


class Warehouse:
    """One test's BigQuery side: its datasets, the loaders' URL and environment, and fully qualified reads."""

    def __init__(self, emulator: Any, label: str) -> None:
        self.emulator = emulator
        self.prefix = f"t{uuid.uuid4().hex[:8]}_{label}"
        self.target = BigQueryTarget(
            project=emulator.project, auth="oauth-secrets", api_endpoint=emulator.endpoint
        )
        self.url = self.target.url
        self.datasets = {
            "BRONZE_OPERATIONAL_SCHEMA": f"{self.prefix}_bronze_operational",
            "BRONZE_GCS_SCHEMA": f"{self.prefix}_bronze_gcs",
            "BRONZE_FACEBOOK_SCHEMA": f"{self.prefix}_bronze_facebook_ads",
            "OPS_SCHEMA": f"{self.prefix}_ops",
        }

    @property
    def operational(self) -> str:
        return self.datasets["BRONZE_OPERATIONAL_SCHEMA"]

    @property
    def gcs(self) -> str:
        return self.datasets["BRONZE_GCS_SCHEMA"]

    @property
    def facebook(self) -> str:
        return self.datasets["BRONZE_FACEBOOK_SCHEMA"]

    @property
    def ops(self) -> str:
        return self.datasets["OPS_SCHEMA"]

    def env(self) -> dict[str, str]:
        """The variables a person sets to run the pipeline on this BigQuery (with the harness's emulator
        workarounds, see bigquery_emulator.py), and this test's own datasets."""
        return {**self.emulator.dbt_env(self.prefix), **self.datasets}

    def rows(self, dataset: str, table: str, columns: list[str], where: str = "true") -> list[tuple]:
        return self.emulator.query(
            f"select {', '.join(columns)} from {self.emulator.table(dataset, table)} where {where}"
        )

    def columns(self, dataset: str, table: str) -> list[str]:
        return [
            field.name
            for field in self.emulator.client().get_table(self.target.table_id(dataset, table)).schema
        ]

    def count(self, dataset: str, table: str) -> int:
        return self.emulator.query(f"select count(*) from {self.emulator.table(dataset, table)}")[0][0]

    def log(self, run_id: str | None = None) -> list[dict[str, Any]]:
        with ProcessingLog(self.url, schema=self.ops) as log:
            return log.rows(run_id)


@pytest.fixture()
def bq(bigquery_emulator, request, monkeypatch) -> Warehouse:
    warehouse = Warehouse(bigquery_emulator, request.node.name.split("[")[0][5:25])
    for name, value in {**warehouse.env(), "RUNTIME__LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(name, value)
    # an in-process load leaves dlt's endpoint variable behind (loaders/destinations.py); keep it per test
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.endpoint)
    yield warehouse
    bigquery_emulator.drop_datasets(warehouse.prefix)


def loader_env(bq: Warehouse, operational_url: str, state_dir: Path) -> dict[str, str]:
    """The CLI's environment: WAREHOUSE=bigquery and the BigQuery settings, no WAREHOUSE_URL."""
    env = {k: v for k, v in os.environ.items() if k != "WAREHOUSE_URL"}
    env.update(bq.env())
    env.update(
        {
            "OPERATIONAL_URL": operational_url,
            "WAREHOUSE_STATE_DIR": str(state_dir),
            "RUNTIME__LOG_LEVEL": "WARNING",
            "FACEBOOK_ADS_SOURCE": "double",
        }
    )
    return env


def _plain(value: Any) -> Any:
    """One representation for both warehouses: aware datetimes in UTC, decimals by value."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def _rows(rows: list[tuple]) -> list[tuple]:
    return sorted((tuple(_plain(v) for v in row) for row in rows), key=repr)


def source_columns(operational_url: str, table: str) -> list[str]:
    return [
        r[0]
        for r in query(
            operational_url,
            "select column_name from information_schema.columns where table_schema = 'public' "
            "and table_name = %s order by ordinal_position",
            (table,),
        )
    ]


def assert_bronze_equals_source(bq: Warehouse, operational_url: str) -> None:
    """Every operational table: bronze rows (minus the ids listed as deleted) == the source rows, column by column."""
    for table in OPERATIONAL_TABLES:
        columns = source_columns(operational_url, table)
        source = _rows(query(operational_url, f"select {', '.join(columns)} from {table}"))
        deleted = f"select id from {bq.emulator.table(bq.operational, 'source_deletions')} where table_name = '{table}'"
        bronze = _rows(bq.rows(bq.operational, table, columns, where=f"id not in ({deleted})"))
        assert len(bronze) == len(source), f"{table}: {len(bronze)} bronze rows, {len(source)} at the source"
        assert bronze == source, f"bronze {table} differs from the source"


def operational_snapshot(bq: Warehouse) -> dict[str, list[tuple]]:
    """Every bronze row without the per-load lineage columns: equal snapshots <=> the same rows."""
    snapshot = {}
    for table in (*OPERATIONAL_TABLES, "source_deletions"):
        columns = [c for c in bq.columns(bq.operational, table) if c not in (*LINEAGE, "detected_at")]
        snapshot[table] = _rows(bq.rows(bq.operational, table, columns))
    return snapshot


# -- the switch ------------------------------------------------------------------------------------------------


def _clear_warehouse_env(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("BIGQUERY_") or name in ("WAREHOUSE", "WAREHOUSE_URL", "DBT_TARGET"):
            monkeypatch.delenv(name)


def test_the_warehouse_switch_builds_the_bigquery_settings_dbt_reads(monkeypatch, tmp_path):
    _clear_warehouse_env(monkeypatch)
    monkeypatch.setenv("WAREHOUSE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("OPERATIONAL_URL", "postgresql://u:p@127.0.0.1:1/operational")
    assert not load_settings().is_bigquery  # the default stays PostgreSQL

    monkeypatch.setenv("WAREHOUSE", "bigquery")
    with pytest.raises(ConnectionConfigError, match="set BIGQUERY_PROJECT"):
        load_settings()
    keyfile = tmp_path / "key.json"
    monkeypatch.setenv("BIGQUERY_PROJECT", "acme-data")
    monkeypatch.setenv("BIGQUERY_LOCATION", "southamerica-east1")
    monkeypatch.setenv("BIGQUERY_KEYFILE", str(keyfile))
    monkeypatch.setenv("BIGQUERY_STAGING_BUCKET", "gs://acme-staging/loads/")
    settings = load_settings()
    target = BigQueryTarget.from_url(settings.warehouse_url)
    assert (target.project, target.location, target.auth, target.keyfile, target.staging_bucket) == (
        "acme-data", "southamerica-east1", "service-account", str(keyfile), "gs://acme-staging/loads",
    )  # fmt: skip
    # dbt gets what the profile's BigQuery targets read (never the token: dbt reads it from the environment)
    assert dbt_env(settings.warehouse_url) == {
        "WAREHOUSE": "bigquery",
        "BIGQUERY_PROJECT": "acme-data",
        "BIGQUERY_LOCATION": "southamerica-east1",
        "BIGQUERY_AUTH_METHOD": "service-account",
        "BIGQUERY_KEYFILE": str(keyfile),
    }

    # a key file that is not there: a clear error naming it, before any load starts
    with pytest.raises(ConnectionConfigError, match="cannot read the BigQuery key file"):
        target.credentials()
    for bad, message in (
        ({"WAREHOUSE": "snowflake"}, "WAREHOUSE must be postgres or bigquery"),
        ({"WAREHOUSE_URL": "postgresql://u:secret-pw@h:1/w"}, "WAREHOUSE_URL is not a bigquery URL"),
        ({"BIGQUERY_STAGING_BUCKET": "s3://elsewhere"}, "must be a gs://bucket"),
        ({"BIGQUERY_AUTH_METHOD": "password"}, "BIGQUERY_AUTH_METHOD must be one of"),
    ):
        with monkeypatch.context() as patched:
            for name, value in bad.items():
                patched.setenv(name, value)
            with pytest.raises(ConnectionConfigError, match=message) as raised:
                load_settings()
            assert "secret-pw" not in str(raised.value)


def test_dbt_runs_on_the_bigquery_prod_target_unless_one_is_chosen(bq, monkeypatch, tmp_path):
    monkeypatch.delenv("DBT_TARGET")
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("WAREHOUSE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("OPERATIONAL_URL", "postgresql://u:p@127.0.0.1:1/operational")
    settings = load_settings()
    env = cli.dbt_environment(settings)
    assert (env["DBT_TARGET"], env["WAREHOUSE"], env["BIGQUERY_API_ENDPOINT"]) == (
        "bigquery_prod", "bigquery", bq.emulator.endpoint,
    )  # fmt: skip
    monkeypatch.setenv("DBT_TARGET", "bigquery_dev")
    assert cli.dbt_environment(settings)["DBT_TARGET"] == "bigquery_dev"
    cli.check_connection(settings.warehouse_url, "warehouse")  # reachable: no error


def test_a_service_account_key_file_gives_credentials_for_bigquery_and_the_staging_bucket(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    keyfile = tmp_path / "loader-key.json"
    keyfile.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "acme-data",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "loader@acme-data.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    target = BigQueryTarget(
        project="acme-data", auth="service-account", keyfile=str(keyfile), staging_bucket="gs://acme-staging"
    )
    assert target.credentials().service_account_email == "loader@acme-data.iam.gserviceaccount.com"
    destination = dlt_destination(target.url)
    assert (destination.kind, destination.loader_file_format) == ("bigquery", "parquet")
    assert destination.staging is not None  # dlt's filesystem destination on the bucket, with the same key
    assert destination.column_hints({"a": {"data_type": "json"}}) == {"a": {"data_type": "text"}}
    postgres = dlt_destination("postgresql://u:p@127.0.0.1:1/w")
    assert (postgres.kind, postgres.loader_file_format, postgres.staging) == ("postgres", "csv", None)
    assert postgres.column_hints({"a": {"data_type": "json"}}) == {"a": {"data_type": "json"}}


# -- operational ---------------------------------------------------------------------------------------------


KILL_RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    from dlt.destinations.impl.bigquery import bigquery as bq

    # SIGKILL this process when the load step starts loading `orders`: some tables are in, others are not
    run = bq._BigQueryLoadJobBase.run
    def killing_run(self):
        if self.load_table_name == "orders":
            os.kill(os.getpid(), signal.SIGKILL)
        return run(self)
    bq._BigQueryLoadJobBase.run = killing_run

    from loaders.cli import main
    sys.exit(main(["load", "operational"]))
    """
)


def test_operational_loader_on_bigquery_survives_a_kill_matches_the_source_and_catches_deletes(
    bq, fresh_databases, tmp_path, monkeypatch, capsys
):
    operational = fresh_databases["operational"]
    generator.generate(operational, scale=TINY, seed=3, as_of=AS_OF)
    env = loader_env(bq, operational, tmp_path)

    # the first run is SIGKILLed inside dlt's load step: some tables loaded, others not
    crashed = subprocess.run(
        [sys.executable, "-c", KILL_RUNNER], cwd=PROJECT_DIR, env=env, capture_output=True, text=True
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout[-2000:] + crashed.stderr[-2000:]
    assert [r["status"] for r in bq.log()] == ["processing"], "the killed run stays visible as processing"

    # the switch: the same command with WAREHOUSE=bigquery (in this process: the subprocess above already
    # proved the command line); it finishes the killed run's package first, then loads
    for name in ("OPERATIONAL_URL", "WAREHOUSE_STATE_DIR"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    assert cli.main(["load", "operational"]) == 0
    assert "BigQuery load jobs" in capsys.readouterr().out
    assert_bronze_equals_source(bq, operational)
    first = operational_snapshot(bq)
    # bulk data arrives as Parquet files through load jobs: never insert statements, never streaming inserts
    job_files = [p.name for p in (tmp_path / "dlt").rglob("completed_jobs/*") if p.is_file()]
    data_jobs = [n for n in job_files if not n.startswith("_dlt") and not n.endswith(".sql")]
    assert {n.split(".")[0] for n in data_jobs} == {*OPERATIONAL_TABLES, "source_deletions"}
    assert all(n.endswith(".parquet") for n in data_jobs), data_jobs

    # another run re-reads the lag window: rows equal to bronze are not loaded again (they keep their
    # _loaded_at, so dbt sees no fresher source), the same rows, no duplicate row versions
    loaded_at = {
        table: _rows(bq.rows(bq.operational, table, ["id", "_loaded_at"])) for table in OPERATIONAL_TABLES
    }
    rerun = load_operational(operational, bq.url, bronze_schema=bq.operational, pipelines_dir=str(tmp_path / "dlt"), progress=None)  # fmt: skip
    counts = rerun.pipeline.last_trace.last_normalize_info.row_counts
    assert {table: counts.get(table, 0) for table in OPERATIONAL_TABLES} == dict.fromkeys(
        OPERATIONAL_TABLES, 0
    )
    assert {
        table: _rows(bq.rows(bq.operational, table, ["id", "_loaded_at"])) for table in OPERATIONAL_TABLES
    } == loaded_at
    assert operational_snapshot(bq) == first
    for table in OPERATIONAL_TABLES:
        dupes = bq.emulator.query(
            f"select count(*) - count(distinct id) from {bq.emulator.table(bq.operational, table)}"
        )
        assert dupes == [(0,)], f"{table} has duplicate row versions"

    # two simulated days: hard-deleted orders, late updates with an old updated_at
    days = generator.advance_day(operational, days=2)
    deleted = {order_id for day in days for order_id in day["deleted_order_ids"]}
    assert deleted, "the generator should hard-delete orders"
    load_operational(operational, bq.url, bronze_schema=bq.operational, pipelines_dir=str(tmp_path / "dlt"), progress=None)  # fmt: skip
    flagged = bq.rows(bq.operational, "source_deletions", ["table_name", "id"])
    source_ids = {r[0] for r in query(operational, "select id from orders")}
    bronze_ids = {r[0] for r in bq.rows(bq.operational, "orders", ["id"])}
    assert {i for t, i in flagged if t == "orders"} == bronze_ids - source_ids
    assert deleted <= bronze_ids - source_ids
    assert_bronze_equals_source(bq, operational)

    # one processing-log row per run, the killed one still processing; counts add up to what was merged
    runs = [r for r in bq.log() if r["component"] == "operational"]
    assert [r["status"] for r in runs] == ["processing", "completed", "completed", "completed"]
    for run in runs[1:]:
        assert run["records_processed"] == sum(run["details"]["row_counts"].values())
        assert run["records_invalid"] == 0 and run["finished_at"] >= run["started_at"]
    # the run after the kill loaded the killed run's package, then re-read every row unchanged
    assert runs[3]["records_processed"] > 0
    assert runs[2]["records_processed"] == 0 < sum(runs[2]["details"]["unchanged_rows_skipped"].values())


# -- processing log --------------------------------------------------------------------------------------------


def test_processing_log_on_bigquery_writes_updates_reads_and_redacts(bq, tmp_path):
    run_id = new_run_id()
    secret_url = "postgresql://loader:hunter2-secret@db.internal:5432/warehouse"
    with ProcessingLog(bq.url, schema=bq.ops, component="gcs") as log:
        log.ensure_table()
        log.ensure_table()  # idempotent
        run = log.start(run_id, layer="bronze")
        entry = log.start(run_id, layer="bronze", payload_type="customer_interactions", file_name="a.json")
        crashed = log.start(run_id, layer="bronze", payload_type="customer_interactions", file_name="b.json")
        log.finish(
            entry,
            "completed",
            records_processed=10,
            records_loaded=8,
            records_invalid=2,
            message=f"copied from {secret_url}",
            details={"content_hash": "abc", "password": "hunter2-secret", "nested": {"url": secret_url}},
        )
        log.finish(run, "completed", message="1 file")
    rows = {r["file_name"]: r for r in bq.log(run_id)}
    assert set(rows) == {None, "a.json", "b.json"}
    done = rows["a.json"]
    assert (done["status"], done["records_processed"], done["records_loaded"], done["records_invalid"]) == (
        "completed", 10, 8, 2,
    )  # fmt: skip
    assert done["details"]["content_hash"] == "abc" and done["details"]["password"] == "****"
    assert done["finished_at"] >= done["started_at"] and done["duration_ms"] >= 0
    assert rows["b.json"]["status"] == "processing" and rows["b.json"]["finished_at"] is None
    assert crashed.log_id == bq.rows(bq.ops, "processing_log", ["log_id"], where="file_name = 'b.json'")[0][0]
    # no secret anywhere in the table, and details is a real JSON column
    everything = bq.emulator.query(
        f"select to_json_string(t) from {bq.emulator.table(bq.ops, 'processing_log')} t"
    )
    assert "hunter2-secret" not in json.dumps(everything)
    table = bq.emulator.client().get_table(bq.target.table_id(bq.ops, "processing_log"))
    assert {f.name: f.field_type for f in table.schema}["details"] == "JSON"
    assert table.time_partitioning.field == "started_at"

    # dbt's results: one row per node, written in one batch
    run_results = tmp_path / "run_results.json"
    run_results.write_text(
        json.dumps(
            {
                "metadata": {"dbt_version": "1.11.0", "invocation_id": "inv"},
                "results": [
                    {
                        "unique_id": f"model.pharma_warehouse.stg_x_{n}",
                        "status": "success",
                        "execution_time": 0.5,
                    }
                    for n in range(30)
                ]
                + [{"unique_id": "model.pharma_warehouse.fact_y", "status": "error", "message": "boom"}],
            }
        )
    )
    dbt_run = new_run_id()
    assert record_dbt_results(bq.url, run_results, dbt_run, schema=bq.ops) == 31
    dbt_rows = bq.log(dbt_run)
    assert len(dbt_rows) == 31 and {r["component"] for r in dbt_rows} == {"dbt"}
    assert Counter((r["layer"], r["status"]) for r in dbt_rows) == {
        ("silver", "completed"): 30,
        ("gold", "failed"): 1,
    }
    assert [r["file_name"] for r in dbt_rows if r["status"] == "failed"] == ["fact_y"]


# -- GCS payloads ------------------------------------------------------------------------------------------------


def test_gcs_loader_on_bigquery_lands_records_rejects_registry_and_log_exactly_once(
    bq, gcs_bucket_url, tmp_path
):
    bucket = open_bucket(gcs_bucket_url)

    def put(name: str, content: Any) -> None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        bucket.write(layout_key("pending", "customer_interactions", name), data)

    good = [interaction(n, channel="email" if n % 2 else "whatsapp") for n in range(1, 6)]
    put("2026/06/30/a.json", good[:3])
    put("b.ndjson", "".join(json.dumps(r) + "\n" for r in good[3:]).encode())
    put("with_bad.json", [interaction(9), {"interaction_id": "INT-BAD"}])  # one record misses required fields
    put("broken.json", b'[{"interaction_id": "INT-X",')  # not JSON at all: quarantined whole

    first = load_gcs(gcs_bucket_url, bq.url, bronze_schema=bq.gcs, ops_schema=bq.ops, work_dir=tmp_path / "w")
    assert (first.count("completed"), first.count("failed"), first.count("skipped")) == (3, 1, 0)

    expected = {r["interaction_id"]: r for r in [*good, interaction(9)]}
    landed = bq.rows(
        bq.gcs, "customer_interactions", ["interaction_id", "channel", "_raw_json", "_source_file"]
    )
    assert sorted(r[0] for r in landed) == sorted(expected)
    for interaction_id, channel, raw_json, source_file in landed:
        assert channel == expected[interaction_id]["channel"]
        assert json.loads(raw_json) == expected[interaction_id]  # the record verbatim
        assert source_file.startswith(gcs_bucket_url)
    rejects = bq.rows(bq.gcs, "rejects", ["payload_type", "reason", "_raw_json"])
    assert len(rejects) == 1 and json.loads(rejects[0][2]) == {"interaction_id": "INT-BAD"}
    registry = bq.rows(bq.gcs, "loaded_files", ["file_name", "records_loaded", "records_rejected"])
    assert sorted(registry) == [("2026/06/30/a.json", 3, 0), ("b.ndjson", 2, 0), ("with_bad.json", 1, 1)]
    layout = sorted(i.key.removeprefix(f"{LAYOUT_ROOT}/") for i in bucket.list(f"{LAYOUT_ROOT}/"))
    assert [k for k in layout if k.startswith("pending/")] == []
    assert "failed/customer_interactions/broken.json" in layout

    # the same content again under another name: recognised through the registry in BigQuery, not loaded
    put("copy_of_a.json", good[:3])
    second = load_gcs(
        gcs_bucket_url, bq.url, bronze_schema=bq.gcs, ops_schema=bq.ops, work_dir=tmp_path / "w"
    )
    assert [(f.file_name, f.status) for f in second.files] == [("copy_of_a.json", "skipped")]
    assert "duplicate content" in second.files[0].message
    assert bq.count(bq.gcs, "customer_interactions") == len(expected)
    assert bq.count(bq.gcs, "loaded_files") == 3

    # the processing log: a row per file and per run, processed = loaded + invalid
    log = {(r["run_id"], r["file_name"]): r for r in bq.log()}
    assert log[(first.run_id, "with_bad.json")]["records_invalid"] == 1
    assert log[(first.run_id, "broken.json")]["status"] == "failed"
    assert log[(first.run_id, None)]["status"] == "completed"
    assert log[(second.run_id, "copy_of_a.json")]["status"] == "skipped"
    for row in log.values():
        if row["records_processed"] is not None:
            assert row["records_processed"] == row["records_loaded"] + row["records_invalid"]


# -- Facebook Ads ----------------------------------------------------------------------------------------------


FB_AS_OF = dt.date(2024, 3, 15)
FB_START = FB_AS_OF - dt.timedelta(days=20)


def _actions(value: Any) -> list[tuple[str, str]]:
    items = json.loads(value) if isinstance(value, str) else (value or [])
    return sorted((a["action_type"], str(a["value"])) for a in items)


def test_facebook_loader_on_bigquery_matches_the_api_and_reruns_change_nothing(bq, embedded_pg, tmp_path):
    world = make_databases(embedded_pg, "bq_fb_world")["operational"]
    generator.generate(world, scale=TINY, seed=7, as_of=FB_AS_OF)
    with serve(world, today=FB_AS_OF) as double:
        # the second run re-reads the last 7 days (restated conversions) and merges them
        kwargs = {**double.loader_kwargs(), "start_date": FB_START, "refetch_days": 7, "progress": None}
        kwargs["pipelines_dir"] = str(tmp_path / "dlt")
        first = load_facebook(bq.url, bronze_schema=bq.facebook, **kwargs)
        metrics = ["spend", "impressions", "reach", "clicks", "actions", "action_values"]
        landed = bq.rows(bq.facebook, "ad_insights", [*GRAIN, *metrics])
        expected = {}
        for account in double.account_ids:
            for r in double.insights(account, FB_START, FB_AS_OF):
                key = tuple(str(r[k]) for k in GRAIN)
                expected[key] = (Decimal(r["spend"]), int(r["impressions"]), int(r["reach"]), int(r["clicks"]),
                                 _actions(r.get("actions")), _actions(r.get("action_values")))  # fmt: skip
        assert expected, "the double should report insights in the window"
        got = {
            tuple(str(v) for v in row[: len(GRAIN)]): (*row[len(GRAIN) : len(GRAIN) + 4], _actions(row[-2]), _actions(row[-1]))
            for row in landed
        }  # fmt: skip
        assert got == expected
        campaigns = bq.rows(bq.facebook, "campaigns", ["id", "effective_status"])
        assert sorted(c["id"] for c in double.campaigns()) == sorted(r[0] for r in campaigns)
        before = {t: _rows(bq.rows(bq.facebook, t, [c for c in bq.columns(bq.facebook, t) if c not in LINEAGE]))
                  for t in ("ad_accounts", "campaigns", "ad_sets", "ads", "ad_insights")}  # fmt: skip
        stamps = {t: _rows(bq.rows(bq.facebook, t, ["_loaded_at", "_dlt_id"])) for t in before}

        second = load_facebook(bq.url, bronze_schema=bq.facebook, **kwargs)
        assert sum(per["ad_insights"] for per in second.stats.rows.values()) > 0, "nothing was re-fetched"
        after = {t: _rows(bq.rows(bq.facebook, t, [c for c in bq.columns(bq.facebook, t) if c not in LINEAGE]))
                 for t in before}  # fmt: skip
        assert after == before
        # nothing changed at the API: every re-read row equals bronze, none is loaded or re-stamped
        assert second.stats.skipped == {
            t: sum(per.get(t, 0) for per in second.stats.rows.values()) for t in before
        }
        assert {t: _rows(bq.rows(bq.facebook, t, ["_loaded_at", "_dlt_id"])) for t in before} == stamps
    runs = [r for r in bq.log() if r["component"] == "facebook_ads"]
    assert [(r["run_id"], r["status"]) for r in runs] == [
        (first.run_id, "completed"),
        (second.run_id, "completed"),
    ]
    assert runs[0]["records_loaded"] == sum(n for per in first.stats.rows.values() for n in per.values())
    assert double.access_token not in json.dumps([str(r) for r in bq.log()])


# -- staging through GCS ---------------------------------------------------------------------------------------


@pytest.fixture()
def staging_bucket(bigquery_emulator, tmp_path, monkeypatch) -> str:
    """A bucket the BigQuery emulator can load from: fake-gcs-server storing its objects as files under the
    folder where the BigQuery emulator resolves gs:// load URIs."""
    from gcs_emulator import GcsEmulator  # here: the module is also this file's pytest plugin

    emulator = GcsEmulator(tmp_path, filesystem_root=bigquery_emulator.gcs_local_root)
    emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    try:
        yield emulator.create_bucket()
    finally:
        emulator.stop()


def test_staging_bucket_loads_go_through_gcs_and_bigquery_load_jobs_from_gs_uris(
    bq, fresh_databases, staging_bucket, tmp_path
):
    operational = fresh_databases["operational"]
    generator.generate(operational, scale=TINY, seed=5, as_of=AS_OF)
    staged = BigQueryTarget(
        project=bq.target.project,
        auth="oauth-secrets",
        api_endpoint=bq.target.api_endpoint,
        staging_bucket=f"{staging_bucket}/dlt",
    )
    load_operational(operational, staged.url, bronze_schema=bq.operational, pipelines_dir=str(tmp_path / "dlt"), progress=None)  # fmt: skip
    assert_bronze_equals_source(bq, operational)

    # every bronze table was loaded by a load job reading Parquet files that dlt wrote to the bucket
    client = bq.emulator.client()
    # (merged tables are loaded into dlt's staging dataset, <dataset>_staging, then merged)
    loads = [
        job
        for job in client.list_jobs()
        if job.job_type == "load" and job.destination.dataset_id.startswith(bq.operational)
    ]
    by_table = {job.destination.table_id: job.source_uris for job in loads}
    assert {*OPERATIONAL_TABLES, "source_deletions"} <= set(by_table)
    for table, uris in by_table.items():
        assert uris and all(u.startswith(f"{staging_bucket}/dlt/{bq.operational}/") for u in uris), (
            table,
            uris,
        )
        assert all(u.endswith(".parquet") for u in uris), (table, uris)

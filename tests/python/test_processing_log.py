"""The processing log module against a real PostgreSQL: table shape, API, redaction, dbt results."""

from __future__ import annotations

import json

import pytest
from helpers import query

from loaders.processing_log import (
    COLUMN_NAMES,
    ProcessingLog,
    ProcessingLogError,
    new_run_id,
    record_dbt_results,
    redact,
)


def test_table_is_created_in_its_own_schema_with_the_documented_columns(fresh_databases, monkeypatch):
    url = fresh_databases["warehouse"]
    monkeypatch.setenv("OPS_SCHEMA", "ops_audit")
    with ProcessingLog(url, component="test") as log:
        log.ensure_table()
        log.ensure_table()  # idempotent
    columns = query(
        url,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'ops_audit' and table_name = 'processing_log' order by ordinal_position",
    )
    assert tuple(c for c, _ in columns) == COLUMN_NAMES
    types = dict(columns)
    assert types["details"] == "jsonb" and types["started_at"] == "timestamp with time zone"
    assert types["duration_ms"] == "bigint"


def test_start_finish_write_and_read_back(fresh_databases):
    url = fresh_databases["warehouse"]
    run_id = new_run_id()
    with ProcessingLog(url, component="gcs") as log:
        run = log.start(run_id, layer="bronze")
        entry = log.start(run_id, layer="bronze", payload_type="customer_interactions", file_name="a.json")
        log.finish(entry, "completed", records_processed=10, records_loaded=8, records_invalid=2,
                   details={"content_hash": "abc"})  # fmt: skip
        log.write(run_id, layer="silver", status="skipped", message="nothing to do")
        log.finish(run, "completed", message="1 file")
        rows = log.rows(run_id)
    assert [(r["layer"], r["status"], r["file_name"]) for r in rows] == [
        ("bronze", "completed", None),
        ("bronze", "completed", "a.json"),
        ("silver", "skipped", None),
    ]
    file_row = rows[1]
    assert (file_row["records_processed"], file_row["records_loaded"], file_row["records_invalid"]) == (
        10,
        8,
        2,
    )
    assert file_row["details"] == {"content_hash": "abc"}
    assert file_row["finished_at"] >= file_row["started_at"] and file_row["duration_ms"] >= 0
    assert file_row["component"] == "gcs" and "pharma-warehouse" in file_row["loader_version"]
    assert file_row["user_name"] and file_row["hostname"]


def test_a_started_row_that_never_finishes_stays_visible_as_processing(fresh_databases):
    url = fresh_databases["warehouse"]
    run_id = new_run_id()
    with ProcessingLog(url) as log:
        log.start(run_id, layer="bronze", file_name="crashed.json")
        (row,) = log.rows(run_id)
    assert row["status"] == "processing" and row["finished_at"] is None


def test_step_context_manager_marks_failures(fresh_databases):
    url = fresh_databases["warehouse"]
    run_id = new_run_id()
    with ProcessingLog(url) as log:
        with log.step(run_id, layer="gold", file_name="ok"):
            pass
        with pytest.raises(ValueError), log.step(run_id, layer="gold", file_name="boom"):
            raise ValueError("exploded")
        rows = {r["file_name"]: r for r in log.rows(run_id)}
    assert rows["ok"]["status"] == "completed"
    assert rows["boom"]["status"] == "failed" and rows["boom"]["message"] == "ValueError: exploded"


def test_bad_arguments_are_refused(fresh_databases):
    url = fresh_databases["warehouse"]
    with ProcessingLog(url) as log:
        entry = log.start(new_run_id(), layer="bronze")
        with pytest.raises(ProcessingLogError, match="do not add up"):
            log.finish(entry, "completed", records_processed=3, records_loaded=1, records_invalid=1)
        with pytest.raises(ProcessingLogError, match="layer"):
            log.start("x", layer="platinum")
        with pytest.raises(ProcessingLogError, match="status"):
            log.finish(entry, "done")
    with pytest.raises(ProcessingLogError, match="schema name"):
        ProcessingLog(url, schema="ops; drop table x")
    with pytest.raises(ProcessingLogError, match="unsupported"):
        ProcessingLog("mysql://u:p@h/db")


def test_no_secrets_reach_the_log(fresh_databases):
    url = fresh_databases["warehouse"]
    run_id = new_run_id()
    with ProcessingLog(url) as log:
        log.write(
            run_id,
            layer="bronze",
            status="failed",
            message="cannot connect to postgresql://loader:s3cr3t@db:5432/erp",
            details={
                "url": "postgresql://loader:s3cr3t@db/erp",
                "password": "s3cr3t",
                "nested": {"api_key": "k"},
            },
        )
    text = json.dumps(query(url, "select message, details::text from ops.processing_log"), default=str)
    assert "s3cr3t" not in text and '"k"' not in text
    assert "postgresql://loader:****@db:5432/erp" in text
    assert redact({"token": "", "rows": [1, "a"]}) == {"token": "", "rows": [1, "a"]}


def _result(unique_id: str, status: str, **extra):
    return {
        "unique_id": unique_id,
        "status": status,
        "execution_time": 1.25,
        "message": extra.pop("message", status.upper()),
        "failures": extra.pop("failures", None),
        "adapter_response": {"rows_affected": extra.pop("rows", -1), "code": "SELECT"},
        "timing": [
            {
                "name": "compile",
                "started_at": "2026-06-30T10:00:00.000000Z",
                "completed_at": "2026-06-30T10:00:00.5Z",
            },
            {
                "name": "execute",
                "started_at": "2026-06-30T10:00:00.5Z",
                "completed_at": "2026-06-30T10:00:01.25Z",
            },
        ],
        "compiled_code": "select 'postgresql://u:secret@h/db'",
        "relation_name": '"warehouse"."gold"."x"',
    }


def test_record_dbt_results_one_row_per_node(fresh_databases, tmp_path):
    url = fresh_databases["warehouse"]
    results = {
        "metadata": {"dbt_version": "1.11.0", "invocation_id": "inv-1"},
        "results": [
            _result("model.pharma_warehouse.stg_operational__orders", "success", rows=-1),
            _result("model.pharma_warehouse.int_order_lines_joined", "success"),
            _result("model.pharma_warehouse.fact_orders", "success", rows=60012),
            _result("test.pharma_warehouse.unique_fact_orders_order_item_id.abc", "fail", failures=3),
            _result("model.pharma_warehouse.customer_360", "skipped", message=None),
            _result("model.pharma_warehouse.dim_customers", "error", message="Database Error: boom"),
            _result("seed.pharma_warehouse.brazilian_states", "success"),
        ],
    }
    manifest = {
        "nodes": {
            "model.pharma_warehouse.stg_operational__orders": {
                "resource_type": "model", "fqn": ["pharma_warehouse", "staging", "operational", "stg_operational__orders"],
            },
            "model.pharma_warehouse.int_order_lines_joined": {
                "resource_type": "model", "fqn": ["pharma_warehouse", "intermediate", "int_order_lines_joined"],
            },
            "model.pharma_warehouse.fact_orders": {
                "resource_type": "model", "fqn": ["pharma_warehouse", "marts", "core", "fact_orders"],
            },
            "test.pharma_warehouse.unique_fact_orders_order_item_id.abc": {
                "resource_type": "test", "fqn": ["pharma_warehouse", "marts", "core", "unique_x"],
                "depends_on": {"nodes": ["model.pharma_warehouse.fact_orders"]},
            },
        }
    }  # fmt: skip
    path = tmp_path / "target" / "run_results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(results))
    (path.parent / "manifest.json").write_text(json.dumps(manifest))

    assert record_dbt_results(url, path, "run-42") == 7
    with ProcessingLog(url) as log:
        rows = {r["details"]["unique_id"].split(".")[2]: r for r in log.rows("run-42")}
    summary = {name: (r["layer"], r["status"]) for name, r in rows.items()}
    assert summary == {
        "stg_operational__orders": ("silver", "completed"),
        "int_order_lines_joined": ("silver", "completed"),
        "fact_orders": ("gold", "completed"),
        "unique_fact_orders_order_item_id": ("gold", "failed"),
        "customer_360": ("gold", "skipped"),  # no manifest entry: layer from the name
        "dim_customers": ("gold", "failed"),
        "brazilian_states": ("silver", "completed"),
    }
    fact = rows["fact_orders"]
    assert fact["duration_ms"] == 1250 and fact["details"]["rows_affected"] == 60012
    assert fact["component"] == "dbt" and fact["loader_version"] == "dbt 1.11.0"
    assert fact["started_at"].isoformat() == "2026-06-30T10:00:00+00:00"
    assert rows["unique_fact_orders_order_item_id"]["details"]["failures"] == 3
    assert rows["dim_customers"]["message"] == "Database Error: boom"
    assert "secret" not in json.dumps([r["details"] for r in rows.values()])

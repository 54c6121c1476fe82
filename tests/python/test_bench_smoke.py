"""Smoke run of the benchmark harness (bench/run.py): tiny scale, one run, so `make bench` keeps working.

It is not a benchmark: the numbers at this scale are dominated by fixed costs. It checks that every
stage runs end to end on a real embedded PostgreSQL and that the summary file has the headline ratios
and the absolute figures behind them, with values that can only come from real measurements.
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import PROJECT_DIR


def test_bench_smoke_run_writes_the_summary(tmp_path):
    output = tmp_path / "latest.json"
    options = "--orders 10k --gcs-mb 2 --runs 1 --stages gcs,operational,dbt --dbt-command run --levels 1"
    selection = "+fact_orders stg_operational__source_deletions"  # the post-hook reads the deletions
    # its own temporary work folder (not tmp_path: pytest re-closes pytest-of-<user> to 0700 whenever another
    # session starts, and the server runs as an unprivileged user when the tests run as root)
    paths = ["--output", str(output)]
    process = subprocess.run(
        [
            sys.executable,
            str(PROJECT_DIR / "bench" / "run.py"),
            *options.split(),
            "--dbt-select",
            selection,
            *paths,
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    summary = json.loads(output.read_text())

    for key in ("gcs_to_bronze_vs_raw", "operational_to_bronze_vs_raw", "dbt_incremental_1pct_vs_full"):
        assert isinstance(summary[key], float) and summary[key] > 0, (key, summary[key])
    # the ratios are the ones of the absolute figures in the same file
    gcs = summary["gcs"]
    assert summary["gcs_to_bronze_vs_raw"] == gcs["loader"]["mib_per_second"] / gcs["raw"]["mib_per_second"]
    for side in ("loader", "raw"):
        assert gcs[side]["rows_per_second"] > 0 and gcs[side]["mib_per_second"] > 0
        assert gcs[side]["peak_rss_mib"] > 10
    # both paths moved the same records: every generated record reached bronze, none rejected
    assert gcs["loader"]["rows"] == gcs["raw"]["rows"] > 1_000
    # the ceiling row: the raw path also writing each record's JSON, as bronze keeps it
    assert gcs["raw_with_record_json"]["rows"] == gcs["raw"]["rows"]
    ceiling = summary["gcs_raw_with_record_json_vs_raw"]
    assert ceiling == gcs["raw_with_record_json"]["mib_per_second"] / gcs["raw"]["mib_per_second"] > 0
    # the contract's ceiling: the raw path writing bronze's columns (JSON + lineage); its table must hold as
    # many bytes as bronze's (within a quarter), or it is not the same work
    bronze_columns = gcs["raw_with_bronze_columns"]
    assert bronze_columns["rows"] == gcs["raw"]["rows"]
    assert abs(bronze_columns["table_mib"] - gcs["loader"]["table_mib"]) < gcs["loader"]["table_mib"] / 4
    assert gcs["raw_with_record_json"]["table_mib"] < bronze_columns["table_mib"]
    assert gcs["raw"]["table_mib"] < gcs["raw_with_record_json"]["table_mib"]
    # the raw paths COPY over two connections, their CSV split at row boundaries into parts both take from
    assert summary["scale"]["gcs_raw_copies"] == 2
    assert bronze_columns["runs"][0]["copies"] == 2 and bronze_columns["runs"][0]["csv_parts"] >= 2
    assert summary["gcs_to_bronze_vs_raw_with_bronze_columns"] == (
        gcs["loader"]["mib_per_second"] / bronze_columns["mib_per_second"]
    )
    assert gcs["loader"]["runs"][0]["rejected"] == 0
    operational = summary["operational"]
    assert operational["raw"]["rows"] >= 10_000  # the order lines alone
    assert operational["loader"]["rows"] == operational["raw"]["rows"]
    assert operational["loader"]["mib_per_second"] > 0 and operational["input_bytes"] > 0

    dbt = summary["dbt"]
    assert dbt["full_refresh"]["model_seconds"] > 0
    assert dbt["full_refresh"]["seconds"] >= dbt["full_refresh"]["model_seconds"] / 4  # 4 threads at most
    assert "fact_orders" in dbt["full_refresh"]["slowest_models"]
    changes = dbt["incremental"]["1pct"]["runs"][0]["changes"]
    assert changes["orders_new"] > 0 and changes["order_lines_new"] > 0
    assert dbt["fact_orders_incremental_equals_full_refresh"] is True

    assert summary["scale"]["order_lines"] == 10_000
    assert summary["machine"]["cpu_count"] >= 1 and summary["machine"]["memory_bytes"] > 0
    assert summary["machine"]["versions"]["postgresql"]
    assert "gcs json -> bronze" in process.stdout  # the table was printed

"""Slim CI: a change to one model builds and tests exactly that model and everything downstream of it.

Production is the shared warehouse built with the prod target; its manifest.json plays the artifact a
deploy job keeps. A copy of the same checkout with one model changed runs the documented slim-CI command
(`python -m loaders.slim_ci --state <prod artifacts>`, what .github/workflows/slim-ci.yml runs), and
run_results.json must list exactly the changed model, its descendants and their tests; unchanged parents
are read from production, not rebuilt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from gold_warehouse import GoldWarehouse, copy_project, gold_warehouse
from helpers import PROJECT_DIR, columns, query

PROJECT = "pharma_warehouse"
MODIFIED = f"model.{PROJECT}.int_customer_interactions_aggregated"
# what dbt build lists in run_results.json (exposures too, since dbt 1.10); project hooks run on every build
EXECUTED_TYPES = ("model", "seed", "snapshot", "test", "unit_test", "exposure")

# one worker builds the shared warehouse for all three modules under `pytest -n N --dist loadgroup`
pytestmark = pytest.mark.xdist_group("gold_warehouse")


@pytest.fixture(scope="module")
def warehouse(embedded_pg, tmp_path_factory) -> GoldWarehouse:
    return gold_warehouse(embedded_pg, tmp_path_factory)


def descendants(manifest: dict, unique_id: str) -> set[str]:
    seen: set[str] = set()
    pending = [unique_id]
    while pending:
        for child in manifest["child_map"].get(pending.pop(), []):
            if child not in seen:
                seen.add(child)
                pending.append(child)
    return seen


def expected_nodes(manifest: dict, unique_id: str) -> set[str]:
    """What `state:modified+` must run: the node, its descendants, and the unit tests of those models."""
    selected = {unique_id} | descendants(manifest, unique_id)
    unit_tests = {
        uid
        for uid, test in manifest.get("unit_tests", {}).items()
        if set(test["depends_on"]["nodes"]) & selected
    }
    return {uid for uid in selected | unit_tests if uid.split(".")[0] in EXECUTED_TYPES}


def test_slim_ci_builds_only_the_modified_model_and_its_children(warehouse, tmp_path):
    prod_manifest = warehouse.manifest()
    prod_artifacts = tmp_path / "prod-artifacts"  # what the CI job downloads from the deploy job
    prod_artifacts.mkdir()
    shutil.copyfile(warehouse.target_dir / "manifest.json", prod_artifacts / "manifest.json")

    checkout = copy_project(tmp_path / "checkout", source=warehouse.project_dir)
    model_file = checkout / prod_manifest["nodes"][MODIFIED]["original_file_path"]
    sql = model_file.read_text()
    change = (
        "        last_interaction_at\n",
        "        last_interaction_at,\n        complaint_count > 0 as has_complaints\n",
    )
    assert sql.count(change[0]) == 1, "the model changed: pick another line to modify"
    model_file.write_text(sql.replace(*change))

    env = {
        k: v
        for k, v in warehouse.env.items()
        if k not in ("DBT_TARGET_PATH", "DBT_LOG_PATH", "DBT_PROFILES_DIR")
    }
    env.update(WAREHOUSE_STATE_DIR=str(tmp_path / "ci-state"), DBT_TARGET="ci")
    result = subprocess.run(
        [sys.executable, "-m", "loaders.slim_ci", "--state", str(prod_artifacts), "--schema-prefix", "pr_1"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]

    run_results = json.loads((tmp_path / "ci-state" / "target" / "run_results.json").read_text())
    ran = {
        r["unique_id"]: r["status"]
        for r in run_results["results"]
        if not r["unique_id"].startswith("operation.")
    }
    expected = expected_nodes(prod_manifest, MODIFIED)
    assert f"model.{PROJECT}.customer_360" in expected, "customer_360 should depend on the modified model"
    assert set(ran) == expected, (
        f"ran but not expected: {sorted(set(ran) - expected)}; expected but not run: {sorted(expected - set(ran))}"
    )
    failed = {uid: status for uid, status in ran.items() if status not in ("success", "pass", "no-op")}
    assert not failed, failed

    # customer_360 was rebuilt from the changed model in the CI schema and its unchanged parents in production
    compiled = {r["unique_id"]: r["compiled_code"] for r in run_results["results"] if r.get("compiled_code")}
    customer_360_sql = compiled[f"model.{PROJECT}.customer_360"]
    assert '"pr_1_silver"."int_customer_interactions_aggregated"' in customer_360_sql
    assert '"silver"."int_customers_rfm_scored"' in customer_360_sql
    url = warehouse.urls["warehouse"]
    assert "has_complaints" in columns(url, "pr_1_silver", "int_customer_interactions_aggregated")
    assert "has_complaints" not in columns(url, "silver", "int_customer_interactions_aggregated")
    # the unmodified parents were read from production, not rebuilt in the CI schemas
    assert not columns(url, "pr_1_silver", "int_customers_rfm_scored")
    assert not columns(url, "pr_1_gold", "dim_campaigns")
    ((ci_rows,), (prod_rows,)) = (
        query(url, "select count(*) from pr_1_gold.customer_360")[0],
        query(url, "select count(*) from gold.customer_360")[0],
    )
    assert ci_rows == prod_rows > 0


def test_the_example_workflow_runs_the_tested_command_against_a_postgres_service():
    import yaml

    workflow = yaml.safe_load((PROJECT_DIR / ".github" / "workflows" / "slim-ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert (
        job["env"]["WAREHOUSE_URL"].startswith("postgresql://")
        and "@localhost:5432/" in job["env"]["WAREHOUSE_URL"]
    )
    commands = [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]
    slim_ci = [c for c in commands if "-m loaders.slim_ci" in c]
    assert len(slim_ci) == 1 and "--state ../base/target" in slim_ci[0], slim_ci
    assert any(c.endswith("warehouse transform") for c in commands), (
        "production's manifest must be built first"
    )

"""dbt on BigQuery without bronze: the dialect macros' bigquery__ variants run on the emulator, the profile's
BigQuery targets resolve, and (only when credentials are in the environment) a smoke run on real BigQuery.

The whole pipeline on the emulator (loaders, dbt build, daily runs) is tests/python/test_bigquery_pipeline.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import PROJECT_DIR

DBT = PROJECT_DIR / ".venv" / "bin" / "dbt"


def dbt(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(DBT), *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dbt {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-5000:]}")
    return result


def dbt_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """profiles.example.yml as the profile, artifacts and logs in tmp_path."""
    profiles = tmp_path / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_DIR / "profiles.example.yml", profiles / "profiles.yml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGQUERY_", "DBT_"))}
    env.update(
        {
            "DBT_PROFILES_DIR": str(profiles),
            "DBT_TARGET_PATH": str(tmp_path / "target"),
            "DBT_LOG_PATH": str(tmp_path / "logs"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    env.update(extra)
    return env


def show(env: dict[str, str], sql: str) -> list[dict[str, Any]]:
    """Rows of `dbt show --inline` (compiled with the project's macros, run on the target)."""
    result = dbt(env, "show", "--inline", sql, "--output", "json", "--limit", "100", "--log-format", "text")
    payload = result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1]
    return json.loads(payload)["show"]


def test_json_macros_bigquery_variants(bigquery_emulator, tmp_path):
    """json_extract_scalar, json_array_length and unnest_json_key_values on STRING JSON (as dlt lands it).

    json_array_length of a non-array is null on BigQuery; the emulator raises instead, so that case is left
    to real BigQuery (the PostgreSQL variant is covered by the pipeline tests)."""
    env = dbt_env(tmp_path, bigquery_emulator.dbt_env("jsonmacros"))
    doc = '{"totals": {"freight": "12.50", "items": 3}, "tags": ["a", "b"], "name": "x"}'
    rows = show(
        env,
        f"""
        with docs as (select '{doc}' as payload, '[{{"a": 1}}, {{"a": 2}}]' as pair)
        select
            {{{{ json_extract_scalar('payload', ['totals', 'freight']) }}}} as freight,
            {{{{ json_extract_scalar('payload', ['totals', 'items']) }}}} as items,
            {{{{ json_extract_scalar('payload', ['missing', 'key']) }}}} as missing,
            {{{{ json_extract_scalar('payload', ['totals']) }}}} as an_object,
            {{{{ json_array_length('pair') }}}} as two_elements
        from docs
        """,
    )
    assert rows == [
        {
            "freight": "12.50",
            "items": "3",
            "missing": None,
            "an_object": None,
            "two_elements": 2,
        }
    ]
    actions = '[{"action_type": "purchase", "value": "2"}, {"action_type": "link_click", "value": "17"}]'
    unnested = show(
        env,
        f"""
        with insights as (
            select 1 as ad_id, '{actions}' as actions
            union all select 2, '[]'
            union all select 3, cast(null as string)
        )
        {{{{ unnest_json_key_values('insights', 'actions', ['ad_id'], 'action_type', 'value') }}}}
        """,
    )
    assert sorted((r["ad_id"], r["element_key"], r["element_value"]) for r in unnested) == [
        (1, "link_click", "17"),
        (1, "purchase", "2"),
    ]


def test_profile_selects_bigquery_targets(tmp_path):
    """WAREHOUSE=bigquery alone picks bigquery_dev; DBT_TARGET picks prod; datasets follow the layer rules."""
    base = {
        "BIGQUERY_PROJECT": "some-project",
        "BIGQUERY_AUTH_METHOD": "oauth-secrets",
        "BIGQUERY_TOKEN": "t",
    }
    for extra, target, silver in (
        ({"WAREHOUSE": "bigquery", "DBT_SCHEMA_PREFIX": "dev_x"}, "bigquery_dev", "dev_x_silver"),
        ({"WAREHOUSE": "bigquery", "DBT_TARGET": "bigquery_prod"}, "bigquery_prod", "silver"),
    ):
        env = dbt_env(tmp_path / target, {**base, **extra})
        result = dbt(
            env,
            "ls",
            "--select",
            "stg_operational__orders",
            "--resource-type",
            "model",
            "--output",
            "json",
            "--output-keys",
            "schema",
        )
        listed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert listed == [{"schema": silver}], target
        manifest = json.loads((tmp_path / target / "target" / "manifest.json").read_text())
        assert manifest["metadata"]["adapter_type"] == "bigquery"


REAL_BIGQUERY = bool(os.environ.get("BIGQUERY_PROJECT")) and bool(
    os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or os.environ.get("BIGQUERY_KEYFILE")
)


@pytest.mark.skipif(
    not REAL_BIGQUERY,
    reason="real BigQuery smoke test: set BIGQUERY_PROJECT and GOOGLE_APPLICATION_CREDENTIALS (or "
    "BIGQUERY_KEYFILE) to run it (docs/bigquery.md)",
)
def test_smoke_on_real_bigquery(tmp_path):
    """Seeds, the calendar and the dialect macros on a real project, in datasets of its own, then dropped."""
    from google.cloud import bigquery

    prefix = f"smoke_{uuid.uuid4().hex[:8]}"
    extra = {"WAREHOUSE": "bigquery", "DBT_TARGET": "bigquery_ci", "DBT_SCHEMA_PREFIX": prefix}
    if os.environ.get("BIGQUERY_KEYFILE"):
        extra["BIGQUERY_AUTH_METHOD"] = "service-account"
    for key in ("BIGQUERY_PROJECT", "BIGQUERY_LOCATION", "BIGQUERY_KEYFILE"):
        if os.environ.get(key):
            extra[key] = os.environ[key]
    env = dbt_env(tmp_path, extra)
    client = bigquery.Client(project=os.environ["BIGQUERY_PROJECT"])
    try:
        dbt(env, "build", "--select", "brazilian_states", "brazilian_national_holidays", "dim_time")
        rows = show(
            env,
            """with docs as (select '{"a": {"b": "1"}}' as payload)
            select {{ json_extract_scalar('payload', ['a', 'b']) }} as v from docs""",
        )
        assert rows == [{"v": "1"}]
        ((days,),) = list(
            client.query(
                f"select count(*) from `{os.environ['BIGQUERY_PROJECT']}.{prefix}_gold.dim_time`"
            ).result()
        )
        assert days > 3000
    finally:
        for dataset in list(client.list_datasets()):
            if dataset.dataset_id.startswith(prefix):
                client.delete_dataset(dataset.dataset_id, delete_contents=True, not_found_ok=True)

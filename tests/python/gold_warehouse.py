"""One small warehouse, built once per test session, for the tests of what serves gold.

The docs-site, semantic-layer and slim-CI tests all need the same thing: the project built end to end on
a real PostgreSQL with the production target, and its artifacts. Building it takes most of their time, so
it is built once and shared. It is built from a frozen copy of the project (the `prod` checkout), so the
slim-CI test can diff a modified copy against exactly what was built, and MetricFlow (which reads
`<project>/target/`) finds this build's artifacts.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PROJECT_DIR, cli_env

from loaders.embedded_postgres import EmbeddedPostgres
from loaders.operational import generator

AS_OF = dt.date(2026, 6, 30)
SCALE = generator.Scale(
    customers=80, suppliers=8, products=40, order_lines=4_000, history_days=120, warehouses=2
)
# what a checkout holds; never the venvs, the demo's state, artifacts or logs
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".bootstrap",
    ".warehouse",
    "target",
    "logs",
    "dbt_packages",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "images",
)


DBT_ENVIRONMENT = (
    "import json; from loaders.cli import dbt_environment; from loaders.config import load_settings; "
    "print(json.dumps(dbt_environment(load_settings())))"
)


def dbt_environment_of(project_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment the CLI gives dbt for the CLI environment `env` (profile variables, target paths)."""
    result = subprocess.run(
        [sys.executable, "-c", DBT_ENVIRONMENT],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@dataclass(frozen=True)
class GoldWarehouse:
    project_dir: Path  # the copy of the project the warehouse was built from
    urls: dict[str, str]
    env: dict[str, str]  # the environment the CLI gives dbt: prod target, artifacts in project_dir/target
    as_of: dt.date

    @property
    def target_dir(self) -> Path:
        return self.project_dir / "target"

    def manifest(self) -> dict:
        return json.loads((self.target_dir / "manifest.json").read_text())


_built: GoldWarehouse | None = None


def copy_project(destination: Path, source: Path = PROJECT_DIR) -> Path:
    shutil.copytree(source, destination, ignore=NOT_COPIED)
    return destination


def run_cli_in(project_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`warehouse ARGS` as run from a checkout at project_dir (its own loaders and dbt project)."""
    result = subprocess.run(
        [sys.executable, "-m", "loaders", *args],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"warehouse {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
        )
    return result


def gold_warehouse(embedded_pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> GoldWarehouse:
    """The shared warehouse: generate, load all three sources, dbt build (prod target), docs; once per session."""
    global _built
    if _built is None:
        _built = _build(embedded_pg, tmp_path_factory)
    return _built


def _build(embedded_pg: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> GoldWarehouse:
    from conftest import make_databases

    root = tmp_path_factory.mktemp("gold_warehouse")
    project_dir = copy_project(root / "project")
    urls = make_databases(embedded_pg, "gold_serving")
    generator.generate(urls["operational"], scale=SCALE, seed=11, as_of=AS_OF)
    env = cli_env(
        urls,
        root / "state",
        DBT_TARGET="prod",
        DBT_TARGET_PATH=str(project_dir / "target"),
        DBT_LOG_PATH=str(root / "logs"),
    )
    env.pop("DBT_PROFILES_DIR", None)  # the CLI writes the project's profile into the state folder
    run_cli_in(project_dir, env, "gcs", "samples", "--as-of", AS_OF.isoformat())
    run_cli_in(project_dir, env, "load")
    # the data tests run in the pipeline tests; here they would only triple the build time. Same dbt
    # arguments for both commands, so `docs generate` reuses the build's parse (partial parsing).
    run_cli_in(
        project_dir,
        env,
        "transform",
        "--",
        "--exclude-resource-type",
        "test",
        "--exclude-resource-type",
        "unit_test",
    )
    run_cli_in(project_dir, env, "docs")
    # the tests' own dbt and mf commands get exactly the environment the CLI gives dbt, so dbt's partial
    # parsing (keyed on the env_var() values a project reads) reuses the build's parse
    env = dbt_environment_of(project_dir, env)
    return GoldWarehouse(project_dir=project_dir, urls=urls, env=env, as_of=AS_OF)

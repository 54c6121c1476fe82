"""Style gates run in the suite: ruff for Python, sqlfluff (dbt templater) for SQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import PROJECT_DIR

from loaders.config import dbt_env

BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=PROJECT_DIR, capture_output=True, text=True, env=env, check=False)


def test_ruff_lint_is_clean():
    result = _run([str(BIN / "ruff"), "check", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = _run([str(BIN / "ruff"), "format", "--check", "."])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sqlfluff_lint_is_clean(embedded_pg, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copyfile(PROJECT_DIR / "profiles.example.yml", profiles / "profiles.yml")
    env = dict(os.environ)
    env.update(dbt_env(embedded_pg.url("warehouse")))
    env.update({"DBT_PROFILES_DIR": str(profiles), "DBT_TARGET": "ci", "DBT_SCHEMA_PREFIX": "lint"})
    paths = [
        p
        for p in ("models", "macros", "snapshots", "analyses", "tests/singular")
        if (PROJECT_DIR / p).exists()
    ]
    result = _run([str(BIN / "sqlfluff"), "lint", *paths, "--disable-progress-bar"], env=env)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]

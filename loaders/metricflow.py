"""The dbt semantic layer's metrics from the command line: MetricFlow (`mf`) on the project's warehouse.

    python -m loaders.metricflow query --metrics revenue,orders --group-by metric_time__month,customer__region
    python -m loaders.metricflow list metrics

runs MetricFlow's CLI from its own venv (.bootstrap/metricflow, installed by .ci/install-metricflow, so it
cannot move the project's lock) in the project root, with the dbt profile and the variables the `warehouse`
CLI gives dbt. mf reads target/semantic_manifest.json, which every dbt command of the project writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from loaders.config import PROJECT_DIR, ConnectionConfigError, Settings, load_settings
from loaders.embedded_postgres import EmbeddedPostgresError

VENV_ENV = "METRICFLOW_VENV"


def mf_executable() -> Path:
    venv = Path(os.environ.get(VENV_ENV, PROJECT_DIR / ".bootstrap" / "metricflow"))
    mf = venv / "bin" / "mf"
    if not mf.exists():
        raise ConnectionConfigError(
            f"MetricFlow is not installed ({mf} is missing): run .ci/install-metricflow (or make test-deps)"
        )
    return mf


def run_mf(settings: Settings, mf_args: Sequence[str]) -> int:
    """Run `mf ARGS` on the warehouse of `settings`; returns mf's exit code."""
    from loaders.cli import dbt_environment

    env = dbt_environment(settings)
    target = Path(env.get("DBT_TARGET_PATH", PROJECT_DIR / "target"))
    if not target.is_absolute():
        target = PROJECT_DIR / target
    if target.resolve() != (PROJECT_DIR / "target").resolve():
        # mf always reads <project root>/target/semantic_manifest.json
        raise ConnectionConfigError(
            f"dbt writes its artifacts to {target}, but MetricFlow only reads {PROJECT_DIR / 'target'}: "
            "unset DBT_TARGET_PATH (and WAREHOUSE_STATE_DIR) or set DBT_TARGET_PATH to the project's target/"
        )
    if not (target / "semantic_manifest.json").exists():
        raise ConnectionConfigError(
            f"no {target / 'semantic_manifest.json'} yet: run `warehouse transform` or `warehouse docs` first"
        )
    return subprocess.run([str(mf_executable()), *mf_args], cwd=PROJECT_DIR, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        return run_mf(load_settings(), args)
    except (ConnectionConfigError, EmbeddedPostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

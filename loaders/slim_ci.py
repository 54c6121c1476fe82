"""Slim CI: build and test only what a change touches, on top of production.

    python -m loaders.slim_ci --state PROD_ARTIFACTS_DIR [--schema-prefix pr_42] [-- extra dbt args]

runs `dbt build --select state:modified+ --defer --favor-state --state PROD_ARTIFACTS_DIR` with the `ci`
target: the models, seeds and snapshots whose code or configuration differ from production's manifest
(PROD_ARTIFACTS_DIR/manifest.json), and everything downstream of them, are built and tested in the CI
schemas (<prefix>_silver, <prefix>_gold, ...); every unmodified parent is read from production instead of
being rebuilt (--defer; --favor-state even when an older CI run left a copy in the CI schemas). The CI
database must therefore be the production warehouse, or a copy holding its relations.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from loaders.config import ConnectionConfigError, Settings, check_connection, load_settings
from loaders.embedded_postgres import EmbeddedPostgresError

SELECTOR = "state:modified+"


def slim_ci_dbt_args(state_dir: Path, dbt_args: Sequence[str] = ()) -> list[str]:
    """The dbt command line of a slim-CI run (without the `dbt` executable)."""
    return ["build", "--select", SELECTOR, "--defer", "--favor-state", "--state", str(state_dir), *dbt_args]


def check_state_dir(state_dir: Path) -> None:
    """Fail early and clearly: without production's manifest, state:modified would select everything."""
    manifest = state_dir / "manifest.json"
    if not manifest.is_file():
        raise ConnectionConfigError(
            f"no production manifest at {manifest}: pass --state the folder holding the manifest.json of the "
            "last production run (its target/ folder, or the artifact your deploy job uploads)"
        )


def run_slim_ci(settings: Settings, state_dir: Path, dbt_args: Sequence[str] = ()) -> None:
    from loaders.cli import run_dbt, step

    state_dir = state_dir.resolve()
    check_state_dir(state_dir)
    if settings.dbt_target_dir.resolve() == state_dir:
        raise ConnectionConfigError(
            f"--state {state_dir} is where this run writes its own artifacts; copy production's manifest elsewhere"
        )
    check_connection(settings.warehouse_url, "warehouse")
    with step(f"dbt build --select {SELECTOR} (deferring to the production manifest in {state_dir})"):
        run_dbt(settings, slim_ci_dbt_args(state_dir, dbt_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loaders.slim_ci", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", required=True, type=Path, help="folder of production's manifest.json")
    parser.add_argument(
        "--schema-prefix",
        help="prefix of the CI schemas (default: DBT_SCHEMA_PREFIX, else ci): one per pull request keeps runs apart",
    )
    parser.add_argument("dbt_args", nargs=argparse.REMAINDER, help="after --: more dbt build arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the ci target unless the caller chose another; never prod, whose schemas production owns
    os.environ.setdefault("DBT_TARGET", "ci")
    if os.environ["DBT_TARGET"] == "prod":
        print(
            "error: slim CI never builds with the prod target; use ci (the default) or dev", file=sys.stderr
        )
        return 2
    if args.schema_prefix:
        os.environ["DBT_SCHEMA_PREFIX"] = args.schema_prefix
    from loaders.cli import StepFailed

    try:
        run_slim_ci(load_settings(), args.state, [a for a in args.dbt_args if a != "--"])
    except (ConnectionConfigError, EmbeddedPostgresError, StepFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

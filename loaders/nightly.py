"""The nightly job's dbt step: rebuild only what changed since the previous successful night.

A plain `dbt build` re-creates every view and table each night, whatever changed; most of its model time is
dbt's fixed work per model, not the database's. The nightly job instead compares this night with the
artifacts of the previous successful one (kept in `<state_dir>/dbt-nightly-state/<target>/`):

- `dbt source freshness` first records each source's newest `_loaded_at` (target/sources.json);
- then `dbt build --select <NIGHTLY_SELECTION> --state <previous night>` builds
  - `state:modified+`: models, seeds, snapshots whose code or config changed, and everything downstream;
  - the tables, incremental models and snapshots downstream of a source that is fresher than last night
    (`source_status:fresher+`), and the data tests downstream of it, so the staging tests still gate the new
    data. Views downstream of a fresher source are not re-created: a view shows its source's new rows as is;
  - the tables downstream of a model tagged `daily` (its result depends on the date, e.g. recency scores
    at `as_of_date`), every night even without new data;
  - whatever errored, failed or was skipped in the previous saved run (`result:<status>+`).
- without usable previous artifacts (first night, another target or project, another dbt version), or with
  `--full`, it runs a plain `dbt build` of everything.

Only a successful build advances the saved state: after a failure the next night still compares with the
last good night, so the sources that were fresher then are fresher again, and everything is retried.
`warehouse transform` stays a plain `dbt build` of the whole project (ad-hoc runs, backfills).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaders.config import Settings, mask_url

STATE_FOLDER = "dbt-nightly-state"
ARTIFACTS = ("manifest.json", "run_results.json", "sources.json")
NIGHTLY_META = "nightly.json"  # which target / warehouse / project the saved artifacts belong to
FRESHER = "source_status:fresher+"
# union (space) of intersections (comma), see the module docstring
NIGHTLY_SELECTION: tuple[str, ...] = (
    "state:modified+",
    f"{FRESHER},config.materialized:table",
    f"{FRESHER},config.materialized:incremental",
    f"{FRESHER},resource_type:snapshot",
    f"{FRESHER},resource_type:test",
    "tag:daily+,config.materialized:table",
    "tag:daily+,config.materialized:incremental",
    "result:error+",
    "result:fail+",
    "result:skipped+",
)


@dataclass(frozen=True)
class NightlyPlan:
    """What the night builds: the dbt arguments after `dbt` and, for people, why."""

    dbt_args: list[str]
    incremental: bool  # False: everything is built (first night, --full, unusable state)
    reason: str

    @property
    def selection(self) -> str:
        """The --select expression used, or "(all)": logged and written by the benchmark."""
        if "--select" not in self.dbt_args:
            return "(all)"
        start = self.dbt_args.index("--select") + 1
        end = next((i for i in range(start, len(self.dbt_args)) if self.dbt_args[i].startswith("--")), None)
        return " ".join(self.dbt_args[start:end])


def dbt_target(settings: Settings) -> str:
    """The dbt target this run builds (what the CLI gives dbt): each target keeps its own nightly state."""
    from loaders.cli import dbt_environment

    return dbt_environment(settings)["DBT_TARGET"]


def nightly_state_dir(settings: Settings, target: str | None = None) -> Path:
    return settings.state_dir / STATE_FOLDER / (target or dbt_target(settings))


def saved_state(settings: Settings) -> tuple[Path, dict[str, str]]:
    """This run's target's state folder and the identity its saved artifacts must carry."""
    target = dbt_target(settings)
    return nightly_state_dir(settings, target), state_identity(settings, target)


def state_identity(settings: Settings, target: str) -> dict[str, str]:
    """What must match for the previous artifacts to describe this warehouse (no password in it)."""
    return {"target": target, "warehouse": mask_url(settings.warehouse_url)}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def state_problem(previous: Path, current_target_dir: Path, identity: dict[str, str]) -> str | None:
    """Why the saved artifacts cannot be compared with this night (None: they can).

    state:modified against another project's or dbt version's manifest, or source_status against another
    warehouse's freshness, would silently select the wrong nodes; a full build is always right.
    """
    missing = [name for name in (*ARTIFACTS, NIGHTLY_META) if not (previous / name).is_file()]
    if missing:
        return f"no previous nightly state in {previous}" + (
            "" if len(missing) == len(ARTIFACTS) + 1 else f" (missing {', '.join(missing)})"
        )
    saved_identity = _read_json(previous / NIGHTLY_META) or {}
    if {k: saved_identity.get(k) for k in identity} != identity:
        return (
            f"the previous nightly state is for target {saved_identity.get('target')} on "
            f"{saved_identity.get('warehouse')}, this run {identity['target']} on {identity['warehouse']}"
        )
    old = (_read_json(previous / "manifest.json") or {}).get("metadata", {})
    new = (_read_json(current_target_dir / "manifest.json") or {}).get("metadata", {})
    for key in ("project_name", "adapter_type", "dbt_version", "dbt_schema_version"):
        if old.get(key) != new.get(key):
            return f"the previous nightly state has {key} {old.get(key)!r}, this run {new.get(key)!r}"
    if not (current_target_dir / "sources.json").is_file():
        return "dbt source freshness wrote no sources.json this run"
    return None


def _within(selection: Sequence[str], within: str) -> list[str]:
    """Each member of the nightly union intersected with each member of a narrower selection (benchmarks)."""
    parts = within.split()
    return [f"{member},{part}" for member in selection for part in parts] if parts else list(selection)


def plan_nightly(
    previous: Path,
    current_target_dir: Path,
    identity: dict[str, str],
    *,
    full: bool = False,
    command: str = "build",
    within: str = "",
    saved_at: str | None = None,
) -> NightlyPlan:
    """The dbt command line of tonight's run, given the previous night's state folder.

    The benchmark calls this too, so it measures exactly what `warehouse run` runs. `within` narrows the
    nightly selection (the benchmark's smoke run builds +fact_orders only); `command` is build or run.
    """
    narrow = ["--select", within] if within else []
    if full:
        return NightlyPlan([command, *narrow], False, "--full: everything is built")
    problem = state_problem(previous, current_target_dir, identity)
    if problem:
        return NightlyPlan([command, *narrow], False, f"{problem}: everything is built")
    when = saved_at or time.strftime(
        "%Y-%m-%d %H:%M:%S %Z", time.localtime((previous / "manifest.json").stat().st_mtime)
    )
    return NightlyPlan(
        [command, "--select", *_within(NIGHTLY_SELECTION, within), "--state", str(previous)],
        True,
        f"changes since the nightly state of {when}",
    )


def save_state(current_target_dir: Path, previous: Path, identity: dict[str, str]) -> None:
    """Keep this run's artifacts as the next night's state, all or nothing.

    Written to a temporary sibling folder, then swapped in by renames, so a crash leaves either the old
    state or the new one (or, between the two renames, none: the next night then builds everything).
    """
    previous.parent.mkdir(parents=True, exist_ok=True)
    staging = previous.with_name(f".{previous.name}.new-{os.getpid()}")
    retired = previous.with_name(f".{previous.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in ARTIFACTS:
        shutil.copyfile(current_target_dir / name, staging / name)
    (staging / NIGHTLY_META).write_text(
        json.dumps({**identity, "saved_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, indent=2) + "\n",
        encoding="utf-8",
    )
    if previous.exists():
        previous.rename(retired)
    staging.rename(previous)
    shutil.rmtree(retired, ignore_errors=True)


def refresh_source_freshness(settings: Settings) -> None:
    """`dbt source freshness`: this night's newest `_loaded_at` per source, in target/sources.json.

    A stale source (error_after exceeded) makes dbt exit non-zero but still writes its max_loaded_at; a
    missing table is a runtime error that source_status:fresher ignores. Neither must stop the build, so
    the exit code is reported, not raised; a missing sources.json makes the night a full build.
    """
    from loaders.cli import StepFailed, run_dbt, say

    (settings.dbt_target_dir / "sources.json").unlink(missing_ok=True)  # never compare with a stale one
    try:
        run_dbt(settings, ["source", "freshness"])
    except StepFailed:
        say("    some sources are stale or missing (see above); the nightly build goes on")


def run_nightly(settings: Settings, *, full: bool = False) -> NightlyPlan:
    """`warehouse run`'s dbt step: freshness, the nightly build, and on success the new saved state."""
    from loaders.cli import _log_dbt_results, check_connection, run_dbt, say, step

    check_connection(settings.warehouse_url, "warehouse")
    previous, identity = saved_state(settings)
    with step("dbt source freshness (what is new since the previous night)"):
        refresh_source_freshness(settings)
    saved_at = (_read_json(previous / NIGHTLY_META) or {}).get("saved_at")
    plan = plan_nightly(previous, settings.dbt_target_dir, identity, full=full, saved_at=saved_at)
    say(f"    nightly selection: {plan.selection}\n    why: {plan.reason}")
    with step(f"dbt {' '.join(plan.dbt_args[:1])} ({'changes only' if plan.incremental else 'everything'})"):
        try:
            run_dbt(settings, plan.dbt_args)
        finally:
            _log_dbt_results(settings)
    if (settings.dbt_target_dir / "sources.json").is_file():
        save_state(settings.dbt_target_dir, previous, identity)
        say(f"    nightly state saved in {previous}")
    else:
        say(
            "    no sources.json this run: the nightly state is not advanced "
            "(the next night builds everything)"
        )
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loaders.nightly [--full]`: the daily job's dbt step alone, after loads run separately."""
    import argparse
    import sys

    from loaders.cli import StepFailed
    from loaders.config import ConnectionConfigError, load_settings
    from loaders.embedded_postgres import EmbeddedPostgresError

    parser = argparse.ArgumentParser(prog="python -m loaders.nightly", description=main.__doc__)
    parser.add_argument("--full", action="store_true", help="build everything (and save the state)")
    args = parser.parse_args(argv)
    try:
        run_nightly(load_settings(), full=args.full)
    except (ConnectionConfigError, EmbeddedPostgresError, StepFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

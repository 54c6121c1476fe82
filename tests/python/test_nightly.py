"""The nightly job (`warehouse run`, loaders/nightly.py) rebuilds only what changed since the last good night.

One small generated world and one warehouse; one test runs the nights of one story, in order: the first
night builds everything, then nights with new operational data, without data, with bad data (and the night
after, with the data fixed), with a changed model; then what --full and a foreign state plan. What each
night must build is derived from the manifest's graph, not listed by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from gold_warehouse import copy_project
from helpers import PROJECT_DIR, cli_env, columns, fingerprint, query, run_cli

from loaders.nightly import ARTIFACTS, NIGHTLY_META, STATE_FOLDER, plan_nightly
from loaders.operational import generator

AS_OF = dt.date(2026, 6, 30)
SCALE = generator.Scale(
    customers=60, suppliers=6, products=30, order_lines=2_000, history_days=90, warehouses=2
)
PROJECT = "pharma_warehouse"
BUILT = ("success", "pass", "fail", "error", "skipped", "warn")


@dataclass
class Night:
    returncode: int
    output: str
    results: dict[str, str]  # unique_id -> status of every node the build ran (hooks excluded)


@dataclass
class World:
    urls: dict[str, str]
    env: dict[str, str]
    state_dir: Path

    @property
    def saved_state(self) -> Path:
        return self.state_dir / STATE_FOLDER / "prod"

    def manifest(self) -> dict:
        return json.loads((self.state_dir / "target" / "manifest.json").read_text())

    def _night(self, command: list[str], cwd: Path = PROJECT_DIR) -> Night:
        process = subprocess.run(
            [sys.executable, *command], cwd=cwd, env=self.env, capture_output=True, text=True, check=False
        )
        run_results = json.loads((self.state_dir / "target" / "run_results.json").read_text())
        results = {
            r["unique_id"]: r["status"]
            for r in run_results["results"]
            if not r["unique_id"].startswith("operation.")
        }
        return Night(process.returncode, process.stdout + process.stderr, results)

    def warehouse_run(self, *args: str) -> Night:
        return self._night(["-m", "loaders", "run", *args])

    def nightly(self, cwd: Path = PROJECT_DIR) -> Night:
        """The dbt step of the daily job alone (after `warehouse load <one source>`)."""
        return self._night(["-m", "loaders.nightly"], cwd)


@pytest.fixture(scope="module")
def world(embedded_pg, tmp_path_factory) -> World:
    from conftest import make_databases

    root = tmp_path_factory.mktemp("nightly")
    urls = make_databases(embedded_pg, "nightly")
    generator.generate(urls["operational"], scale=SCALE, seed=5, as_of=AS_OF)
    env = cli_env(urls, root / "state", DBT_TARGET="prod")
    env.pop("DBT_PROFILES_DIR", None)
    env.pop("DBT_TARGET_PATH", None)
    run_cli(env, "gcs", "samples", "--as-of", AS_OF.isoformat())
    return World(urls, env, root / "state")


def descendants(manifest: dict, roots: set[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        for child in manifest["child_map"].get(pending.pop(), []):
            if child not in seen:
                seen.add(child)
                pending.append(child)
    return seen


def materialized(manifest: dict, kinds: tuple[str, ...]) -> set[str]:
    return {uid for uid, n in manifest["nodes"].items() if n["config"].get("materialized") in kinds}


def sources_of(manifest: dict, source_name: str) -> set[str]:
    return {uid for uid, s in manifest["sources"].items() if s["source_name"] == source_name}


def models_built(night: Night) -> set[str]:
    return {uid for uid, status in night.results.items() if uid.startswith("model.") and status in BUILT}


def fact_orders_fingerprint(world: World) -> tuple[int, str]:
    url = world.urls["warehouse"]
    cols = [c for c in columns(url, "gold", "fact_orders") if "loaded_at" not in c and not c.startswith("_")]
    return fingerprint(url, "gold", "fact_orders", cols)


def change_orders(world: World, count: int) -> None:
    """`count` orders changed (notes, updated_at) and one new order with its lines, stamped now."""
    url = world.urls["operational"]
    query(
        url,
        "update orders set notes = 'nightly test', updated_at = now() where id in "
        f"(select id from orders order by id desc limit {count})",
    )
    query(
        url,
        "with new_order as (insert into orders select (select max(id) + 1 from orders), customer_id, "
        "order_date, status, subtotal, discount, tax, shipping_cost, total, payment_method, payment_status, "
        "shipping_address, notes, now(), now() from orders where id = (select min(id) from orders) "
        "returning id) "
        "insert into order_items select "
        "(select max(id) from order_items) + row_number() over (order by i.id), "
        "(select id from new_order), i.product_id, i.quantity, i.unit_price, i.discount, i.tax, i.total, "
        "now(), now() from order_items i where i.order_id = (select min(id) from orders)",
    )


def first_night_builds_everything_and_saves_the_state(world: World) -> None:
    night = world.warehouse_run()
    assert night.returncode == 0, night.output[-6000:]
    assert "no previous nightly state" in night.output
    assert "nightly selection: (all)" in night.output
    manifest = world.manifest()
    models = {uid for uid in manifest["nodes"] if uid.startswith("model.")}
    assert models_built(night) == models
    assert all((world.saved_state / name).is_file() for name in (*ARTIFACTS, NIGHTLY_META))
    saved = json.loads((world.saved_state / "sources.json").read_text())
    recorded = {r["unique_id"] for r in saved["results"] if "max_loaded_at" in r}
    # every bronze table that holds rows is in the freshness results the next night compares with
    assert {
        f"source.{PROJECT}.operational.{t}" for t in ("orders", "order_items", "products", "suppliers")
    } <= recorded
    assert f"source.{PROJECT}.facebook_ads.campaigns" in recorded


def a_night_with_new_orders_rebuilds_their_tables_only(world: World) -> None:
    change_orders(world, 10)
    run_cli(world.env, "load", "operational")
    night = world.nightly()
    assert night.returncode == 0, night.output[-6000:]
    assert "changes since the nightly state of" in night.output
    manifest = world.manifest()
    downstream = descendants(manifest, {f"source.{PROJECT}.operational.orders"})
    tables = materialized(manifest, ("table", "incremental"))
    built = models_built(night)
    assert downstream & tables <= built, sorted(downstream & tables - built)
    assert f"model.{PROJECT}.fact_orders" in built
    assert not built & materialized(manifest, ("view",)), "views are not re-created for new data"
    # the loader re-read a lag window of every operational table, but only orders changed (and nothing was
    # deleted): the tables below the quiet tables alone keep last night's build (their rows kept their
    # _loaded_at)
    quiet = (
        descendants(manifest, sources_of(manifest, "operational"))
        - descendants(
            manifest,
            {f"source.{PROJECT}.operational.{t}" for t in ("orders", "order_items")}
            | sources_of(manifest, "ops")
            | {uid for uid, n in manifest["nodes"].items() if "daily" in n["config"].get("tags", [])},
        )
    ) & tables
    assert f"model.{PROJECT}.dim_products" in quiet
    assert not built & quiet, sorted(built & quiet)
    # the Facebook-only marts: nothing they read was loaded tonight
    not_facebook = set().union(
        *(descendants(manifest, sources_of(manifest, s)) for s in ("operational", "gcs", "ops"))
    )
    facebook_only = descendants(manifest, sources_of(manifest, "facebook_ads")) & tables - not_facebook
    assert f"model.{PROJECT}.dim_campaigns" in facebook_only
    assert not built & facebook_only, sorted(built & facebook_only)
    # the staging tests ran on the new data
    assert f"model.{PROJECT}.stg_operational__orders" not in built
    staging_tests = {
        uid
        for uid, status in night.results.items()
        if uid.startswith("test.") and "stg_operational__orders" in uid and status == "pass"
    }
    assert staging_tests

    incremental = fact_orders_fingerprint(world)
    run_cli(world.env, "transform", "--", "--full-refresh", "--select", "fact_orders")
    assert fact_orders_fingerprint(world) == incremental
    assert incremental[0] > 0


def a_night_without_new_data_builds_only_the_date_dependent_and_log_tables(world: World) -> None:
    night = world.nightly()
    assert night.returncode == 0, night.output[-6000:]
    manifest = world.manifest()
    daily = {uid for uid, n in manifest["nodes"].items() if "daily" in n["config"].get("tags", [])}
    tables = materialized(manifest, ("table", "incremental"))
    # the processing log (ops) gets the previous night's dbt results, so the data-health mart follows it
    allowed = (
        daily | descendants(manifest, daily) | descendants(manifest, sources_of(manifest, "ops"))
    ) & tables
    built = models_built(night)
    assert f"model.{PROJECT}.customer_360" in built
    assert built <= allowed, sorted(built - allowed)
    assert f"model.{PROJECT}.fact_orders" not in built


def bad_data_skips_the_tables_keeps_the_state_and_the_next_night_retries(world: World) -> None:
    saved_before = (world.saved_state / NIGHTLY_META).read_text()
    op = world.urls["operational"]
    # a source system that stopped validating: the bad status reaches bronze through the real loader
    query(op, "alter table orders drop constraint if exists orders_status_check")
    query(
        op,
        "update orders set status = 'lost_in_space', updated_at = now() "
        "where id = (select max(id) from orders)",
    )
    run_cli(world.env, "load", "operational")
    night = world.nightly()
    assert night.returncode != 0
    failed = {uid for uid, s in night.results.items() if s == "fail"}
    assert any("accepted_values_stg_operational__orders_order_status" in uid for uid in failed), failed
    # the failing test sits on a view the night did not select, yet the tables below it wait and skip
    assert night.results.get(f"model.{PROJECT}.fact_orders") == "skipped"
    assert night.results.get(f"model.{PROJECT}.customer_360") == "skipped"
    assert (world.saved_state / NIGHTLY_META).read_text() == saved_before, "a failed night kept its state"

    query(op, "update orders set status = 'pending', updated_at = now() where status = 'lost_in_space'")
    run_cli(world.env, "load", "operational")
    retry = world.nightly()
    assert retry.returncode == 0, retry.output[-6000:]
    assert retry.results.get(f"model.{PROJECT}.fact_orders") == "success"
    assert (world.saved_state / NIGHTLY_META).read_text() != saved_before


def a_changed_model_is_rebuilt_with_its_children(world: World, tmp_path: Path) -> None:
    checkout = copy_project(tmp_path / "checkout")
    model = f"model.{PROJECT}.int_customer_interactions_aggregated"
    model_file = checkout / world.manifest()["nodes"][model]["original_file_path"]
    sql = model_file.read_text()
    change = (
        "        last_interaction_at\n",
        "        last_interaction_at,\n        true as nightly_changed\n",
    )
    assert sql.count(change[0]) == 1, "the model changed: pick another line to modify"
    model_file.write_text(sql.replace(*change))
    night = world.nightly(cwd=checkout)
    assert night.returncode == 0, night.output[-6000:]
    manifest = world.manifest()
    expected = ({model} | descendants(manifest, {model})) & {
        uid for uid in manifest["nodes"] if uid.startswith("model.")
    }
    built = models_built(night)
    assert f"model.{PROJECT}.customer_360" in expected
    assert expected <= built, sorted(expected - built)
    assert f"model.{PROJECT}.fact_orders" not in built
    assert "nightly_changed" in columns(
        world.urls["warehouse"], "silver", "int_customer_interactions_aggregated"
    )


def full_and_unusable_state_build_everything(world: World) -> None:
    """`warehouse run --full`, and a state saved for another target or warehouse, plan the plain build.

    Planned from the real saved state, not run: the plain build is the one the first night ran above.
    """
    from loaders.cli import build_parser

    assert build_parser().parse_args(["run", "--full"]).full is True
    target_dir = world.state_dir / "target"
    identity = json.loads((world.saved_state / NIGHTLY_META).read_text())
    identity = {key: identity[key] for key in ("target", "warehouse")}
    nightly = plan_nightly(world.saved_state, target_dir, identity)
    assert nightly.incremental and "--state" in nightly.dbt_args
    for plan in (
        plan_nightly(world.saved_state, target_dir, identity, full=True),
        plan_nightly(world.saved_state, target_dir, {**identity, "target": "dev"}),
        plan_nightly(world.saved_state, target_dir, {**identity, "warehouse": "postgresql://elsewhere/db"}),
        plan_nightly(world.state_dir / "no-such-state", target_dir, identity),
    ):
        assert not plan.incremental and plan.dbt_args == ["build"] and plan.selection == "(all)", plan


# the nights take ~5 min on an idle machine, 12-15 min while other jobs share the 2 cores
@pytest.mark.timeout(1800)
def test_the_nights_of_a_warehouse(world, tmp_path):
    """One story, in order: each night starts from the state the previous one left (one test, so no
    scheduler can split the nights across workers)."""
    first_night_builds_everything_and_saves_the_state(world)
    a_night_with_new_orders_rebuilds_their_tables_only(world)
    a_night_without_new_data_builds_only_the_date_dependent_and_log_tables(world)
    bad_data_skips_the_tables_keeps_the_state_and_the_next_night_retries(world)
    a_changed_model_is_rebuilt_with_its_children(world, tmp_path)
    full_and_unusable_state_build_everything(world)

"""`warehouse`: one entry point for every part of the pipeline.

warehouse up | down | url          the embedded PostgreSQL (or nothing, when URLs are configured)
warehouse generate | advance        the sample operational database
warehouse load [operational]        dlt: sources -> bronze
warehouse transform [-- dbt args]   dbt build: seeds, models, snapshots and tests in DAG order
warehouse docs [--serve]            dbt docs (static single file + the usual site)
warehouse run [--full]              the daily job: load, then dbt build of what changed since the last
                                    successful night (loaders/nightly.py); --full builds everything
warehouse erase-customer --customer-id N   LGPD: erase one customer's personal data everywhere
warehouse demo                      everything, end to end, then prints where to connect
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from loaders.config import (
    PROJECT_DIR,
    ConnectionConfigError,
    Settings,
    check_connection,
    dbt_env,
    load_settings,
    mask_url,
)
from loaders.embedded_postgres import EmbeddedPostgresError

if TYPE_CHECKING:
    from loaders.erasure import Schemas

GOLD_TABLES = (
    "fact_orders",
    "dim_customers",
    "dim_products",
    "dim_suppliers",
    "dim_time",
    "customer_360",
    "fact_customer_interactions",
    "fact_inventory_snapshots",
    "fact_inventory_positions",
    "fact_ad_performance",
    "dim_campaigns",
    "campaign_performance",
    "data_health_daily",
)


class StepFailed(RuntimeError):
    """A pipeline step failed; its own output already told the user why."""


def say(message: str) -> None:
    print(message, flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    say(f"\n==> {title}")
    started = time.monotonic()
    yield
    say(f"    done in {time.monotonic() - started:.1f}s")


# -- commands ------------------------------------------------------------------------------------


def cmd_up(settings: Settings) -> None:
    if settings.embedded is None:
        say("WAREHOUSE_URL and OPERATIONAL_URL are set: using those servers, not the embedded one.")
    else:
        with step(f"Starting the embedded PostgreSQL in {settings.embedded.data_dir}"):
            settings.embedded.start()
    check_connection(settings.operational_url, "operational")
    check_connection(settings.warehouse_url, "warehouse")


def cmd_down(settings: Settings) -> None:
    if settings.embedded is None:
        say("No embedded server in use (WAREHOUSE_URL and OPERATIONAL_URL are set).")
        return
    settings.embedded.stop()
    say("Embedded PostgreSQL stopped.")


def cmd_generate(settings: Settings, args: argparse.Namespace) -> None:
    from loaders.operational import generator

    scale = generator.Scale(
        customers=args.customers,
        suppliers=args.suppliers,
        products=args.products,
        order_lines=args.order_lines,
        history_days=args.history_days,
        warehouses=args.warehouses,
    )
    as_of = dt.date.fromisoformat(args.as_of) if args.as_of else None
    with step(f"Generating the operational database ({scale.order_lines:,} order lines, seed {args.seed})"):
        generator.generate(
            settings.operational_url, scale=scale, seed=args.seed, as_of=as_of, progress=_progress
        )


def cmd_advance(settings: Settings, days: int) -> None:
    from loaders.operational import generator

    with step(f"Advancing the operational world by {days} day(s)"):
        for summary in generator.advance_day(settings.operational_url, days=days, progress=_progress):
            say(f"    {summary}")


SOURCES = ("operational", "gcs", "facebook")
FACEBOOK_TOKEN_ENV = "SOURCES__FACEBOOK_ADS__ACCESS_TOKEN"


def cmd_load(
    settings: Settings, sources: Sequence[str], full_refresh: bool = False, reconcile_deletes: bool = True
) -> None:
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise SystemExit(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    check_connection(settings.warehouse_url, "warehouse")
    if "operational" in sources:
        _load_operational(settings, full_refresh, reconcile_deletes)
    if "gcs" in sources:
        _load_gcs(settings)
    if "facebook" in sources:
        _load_facebook(settings, full_refresh)
    _reapply_erasures(settings)


def _reapply_erasures(settings: Settings) -> None:
    """A source that has not erased a customer yet sends the rows again: scrub them before dbt sees them."""
    if not settings.warehouse_url.startswith(("postgresql://", "postgres://")):
        return
    from loaders.erasure import apply_erasures
    from loaders.pii_key import load_key

    scrubbed = apply_erasures(
        settings.warehouse_url, load_key(settings.state_dir), _erasure_schemas(settings)
    )
    if scrubbed:
        say(f"\n==> Erasure register re-applied: {scrubbed} re-imported bronze row(s) scrubbed")


def _erasure_schemas(settings: Settings) -> Schemas:
    from loaders.erasure import Schemas

    return Schemas(
        bronze_operational=settings.bronze_operational_schema,
        bronze_gcs=os.environ.get("BRONZE_GCS_SCHEMA", "bronze_gcs"),
        ops=os.environ.get("OPS_SCHEMA", "ops"),
    )


def cmd_erase_customer(settings: Settings, customer_id: int, reference: str | None) -> None:
    """LGPD right to erasure: one customer's personal data, everywhere in the warehouse (docs/lgpd.md)."""
    from loaders.erasure import erase_customer
    from loaders.pii_key import load_key

    check_connection(settings.warehouse_url, "warehouse")
    if not settings.warehouse_url.startswith(("postgresql://", "postgres://")):
        raise StepFailed("erase-customer supports a PostgreSQL warehouse only (see docs/lgpd.md)")
    with step(f"Erasing customer {customer_id}'s personal data (bronze, silver, gold, snapshots, audit)"):
        result = erase_customer(
            settings.warehouse_url,
            customer_id,
            load_key(settings.state_dir),
            _erasure_schemas(settings),
            reference=reference,
            dlt_pipelines_dir=settings.dlt_pipelines_dir,
        )
        say(f"    {result.summary()}")
        say("    the operational source system must erase the customer at its side too (docs/lgpd.md)")


def _load_operational(settings: Settings, full_refresh: bool, reconcile_deletes: bool) -> None:
    from loaders.operational.pipeline import load_operational

    check_connection(settings.operational_url, "operational")
    with step(f"Loading operational -> {settings.bronze_operational_schema} (dlt, {_bulk_path(settings)})"):
        info = load_operational(
            settings.operational_url,
            settings.warehouse_url,
            bronze_schema=settings.bronze_operational_schema,
            pipelines_dir=str(settings.dlt_pipelines_dir),
            full_refresh=full_refresh,
            reconcile_deletes=reconcile_deletes,
        )
        say(f"    load packages: {', '.join(info.loads_ids) or 'none'}")


def _load_gcs(settings: Settings) -> None:
    from loaders.gcs import bucket_url_from_env, load_gcs

    bucket_url = bucket_url_from_env(settings.state_dir)
    with step(f"Loading payload files {bucket_url} -> bronze_gcs (dlt, {_bulk_path(settings)})"):
        result = load_gcs(
            bucket_url,
            settings.warehouse_url,
            work_dir=settings.state_dir / "gcs",
            progress=lambda message: say(f"    {message}"),
        )
        say(f"    {result.summary()}")


def _bulk_path(settings: Settings) -> str:
    """How bronze is landed, for the step titles."""
    return "Arrow -> Parquet, BigQuery load jobs" if settings.is_bigquery else "Arrow + COPY"


def _facebook_mode(settings: Settings) -> str:
    """api (a token is configured), double (the demo world's local Graph API double) or off.

    FACEBOOK_ADS_SOURCE overrides the default: the real API when a token is set, else the double on the
    embedded demo world, else off (external databases without a token must not get simulated ads).
    """
    mode = os.environ.get("FACEBOOK_ADS_SOURCE", "").strip().lower()
    if mode:
        if mode not in ("api", "double", "off"):
            raise ConnectionConfigError(f"FACEBOOK_ADS_SOURCE must be api, double or off, not {mode!r}")
        return mode
    if os.environ.get(FACEBOOK_TOKEN_ENV):
        return "api"
    return "off" if settings.configured_operational_url else "double"


def _load_facebook(settings: Settings, full_refresh: bool) -> None:
    from loaders.facebook.pipeline import bronze_schema_from_env, load_facebook

    common = {
        "pipelines_dir": str(settings.dlt_pipelines_dir),
        "bronze_schema": bronze_schema_from_env(),
        "full_refresh": full_refresh,
    }
    mode = _facebook_mode(settings)
    if mode == "off":
        say(
            f"\n==> Facebook Ads skipped: set {FACEBOOK_TOKEN_ENV} (and ..._ACCOUNT_IDS) to load a real ad account"
        )
        return
    if mode == "api":
        with step("Loading Facebook Ads (Graph API) -> bronze_facebook_ads"):
            result = load_facebook(settings.warehouse_url, **common)
            say(f"    rows extracted per account: {result.stats.rows}")
        return
    from loaders.facebook.graph_double import serve

    with (
        step("Loading Facebook Ads from the local Graph API double (demo world) -> bronze_facebook_ads"),
        serve(settings.operational_url) as double,
    ):
        result = load_facebook(settings.warehouse_url, **common, **double.loader_kwargs())
        say(f"    rows extracted per account: {result.stats.rows}")


def cmd_gcs_samples(settings: Settings, seed: int, as_of: dt.date | None) -> None:
    from loaders.gcs import bucket_url_from_env, write_sample_files

    bucket_url = bucket_url_from_env(settings.state_dir)
    with step(f"Dropping sample payload files into {bucket_url}"):
        written = write_sample_files(bucket_url, settings.operational_url, seed=seed, as_of=as_of)
        say(f"    {len(written)} files in pending/")


def cmd_gcs_requeue(settings: Settings, payload_type: str | None, file_name: str | None) -> None:
    from loaders.gcs import bucket_url_from_env, requeue_failed

    moved = requeue_failed(
        bucket_url_from_env(settings.state_dir),
        payload_type=payload_type,
        file_name=file_name,
        warehouse_url=settings.warehouse_url,
    )
    say(f"moved back to pending/: {len(moved)} file(s)")
    for name in moved:
        say(f"    {name}")


def cmd_transform(settings: Settings, dbt_args: Sequence[str]) -> None:
    check_connection(settings.warehouse_url, "warehouse")
    with step("dbt build (seeds, models, snapshots, tests in DAG order)"):
        try:
            run_dbt(settings, ["build", *dbt_args])
        finally:
            _log_dbt_results(settings)


def cmd_nightly_transform(settings: Settings, full: bool) -> None:
    """The daily job's dbt step: only what changed since the previous successful night (loaders/nightly.py).

    `warehouse transform` stays a plain build of everything, for ad-hoc runs and backfills.
    """
    from loaders.nightly import run_nightly

    run_nightly(settings, full=full)


def _log_dbt_results(settings: Settings) -> None:
    """Every node of the build goes to the processing log, so one table tells what a file fed and how it went."""
    from loaders.processing_log import new_run_id, record_dbt_results

    run_results = settings.dbt_target_dir / "run_results.json"
    if run_results.exists():
        written = record_dbt_results(settings.warehouse_url, run_results, new_run_id())
        say(f"    processing log: {written} dbt results recorded")


def cmd_freshness(settings: Settings) -> None:
    check_connection(settings.warehouse_url, "warehouse")
    with step("dbt source freshness (on each bronze table's _loaded_at)"):
        run_dbt(settings, ["source", "freshness"])


def cmd_docs(settings: Settings, serve: bool, port: int) -> None:
    with step("dbt docs generate (site in target/, single file target/static_index.html)"):
        run_dbt(settings, ["docs", "generate", "--static"])
    if serve:
        say(f"Serving the docs site on http://127.0.0.1:{port} (Ctrl-C to stop)")
        run_dbt(settings, ["docs", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-browser"])


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    started = time.monotonic()
    cmd_up(settings)
    if args.fresh or not _operational_has_data(settings):
        cmd_generate(settings, args)
    else:
        say("\nThe operational database already holds data: reusing it (use --fresh to regenerate).")
    as_of = dt.date.fromisoformat(args.as_of) if args.as_of else None
    cmd_gcs_samples(settings, args.seed, as_of)
    cmd_load(settings, SOURCES)
    cmd_transform(settings, [])
    cmd_docs(settings, serve=False, port=args.port)
    _print_summary(settings, time.monotonic() - started)


# -- helpers -------------------------------------------------------------------------------------


def dbt_environment(settings: Settings) -> dict[str, str]:
    """Environment for dbt: the profile's variables, and a profiles dir unless the user brings one."""
    env = dict(os.environ)
    env.update({k: v for k, v in dbt_env(settings.warehouse_url).items() if k not in os.environ})
    # dbt reads DBT_TARGET itself: the warehouse's prod target unless the user chose one
    env.setdefault("DBT_TARGET", "bigquery_prod" if settings.is_bigquery else "prod")
    env.setdefault("BRONZE_OPERATIONAL_SCHEMA", settings.bronze_operational_schema)
    env.setdefault("BRONZE_GCS_SCHEMA", "bronze_gcs")
    env.setdefault("BRONZE_FACEBOOK_SCHEMA", "bronze_facebook_ads")
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    if not settings.is_default_state:
        # a separate state folder (tests, parallel runs) gets its own dbt artifacts and logs too
        env.setdefault("DBT_TARGET_PATH", str(settings.dbt_target_dir))
        env.setdefault("DBT_LOG_PATH", str(settings.state_dir / "logs"))
    if "DBT_PROFILES_DIR" not in os.environ:
        profiles_dir = settings.state_dir / "dbt"
        profiles_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_DIR / "profiles.example.yml", profiles_dir / "profiles.yml")
        env["DBT_PROFILES_DIR"] = str(profiles_dir)
    # the pseudonymisation key reaches dbt's sessions without entering SQL, vars or logs (docs/lgpd.md)
    from loaders.pii_key import dbt_key_env

    env.update(dbt_key_env(settings.state_dir, env))
    return env


def run_dbt(settings: Settings, args: Sequence[str]) -> None:
    dbt = Path(sys.executable).with_name("dbt")
    command = [str(dbt) if dbt.exists() else "dbt", *args]
    result = subprocess.run(command, cwd=PROJECT_DIR, env=dbt_environment(settings), check=False)
    if result.returncode != 0:
        raise StepFailed(f"`dbt {' '.join(args)}` failed (exit {result.returncode}); see its output above")


def _progress(message: str, count: int) -> None:
    say(f"    {message}: {count:,}")


def _operational_has_data(settings: Settings) -> bool:
    import psycopg2

    from loaders.postgres import relation_exists

    conn = psycopg2.connect(settings.operational_url)
    try:
        with conn.cursor() as cur:
            return relation_exists(cur, "public.generator_state")
    finally:
        conn.close()


def _gold_counts(settings: Settings) -> dict[str, int]:
    import psycopg2

    prod_target = "bigquery_prod" if settings.is_bigquery else "prod"
    schema = "gold" if os.environ.get("DBT_TARGET", prod_target) == prod_target else None
    counts: dict[str, int] = {}
    if schema is None:
        return counts
    if settings.is_bigquery:
        return _bigquery_counts(settings, schema)
    conn = psycopg2.connect(settings.warehouse_url)
    try:
        with conn.cursor() as cur:
            for table in GOLD_TABLES:
                cur.execute(f"select count(*) from {schema}.{table}")
                counts[table] = cur.fetchone()[0]
    finally:
        conn.close()
    return counts


def _bigquery_counts(settings: Settings, dataset: str) -> dict[str, int]:
    from loaders.destinations import BigQueryTarget

    target = BigQueryTarget.from_url(settings.warehouse_url)
    client = target.client()
    counts = {}
    try:
        for table in GOLD_TABLES:
            (row,) = client.query(f"select count(*) from {target.quoted(dataset, table)}").result()
            counts[table] = row[0]
    finally:
        client.close()
    return counts


def _print_summary(settings: Settings, seconds: float) -> None:
    say(f"\n=== The warehouse is ready ({seconds:.0f}s) ===")
    for table, count in _gold_counts(settings).items():
        say(f"    gold.{table:<27} {count:>10,} rows")
    if settings.is_bigquery:
        say(f"\nBigQuery: {settings.warehouse_url} (datasets gold, silver, snapshots, bronze_*, ops)")
        say(f"Docs site: {settings.dbt_target_dir / 'static_index.html'} (open in a browser)")
        return
    say(f"\nConnect (psql, BI tools): {mask_url(settings.warehouse_url)}")
    say('    full URL with password:  .venv/bin/warehouse url      e.g.  psql "$(.venv/bin/warehouse url)"')
    say("    schemas: gold (marts for BI), silver (staging), snapshots (SCD2 history), bronze_operational")
    say(f"Docs site: {settings.dbt_target_dir / 'static_index.html'} (open in a browser)")
    say("    or serve it: make docs-serve")
    if settings.embedded is not None:
        say("The embedded server keeps running for BI tools; stop it with: make stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warehouse", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the embedded PostgreSQL (no-op with external URLs)")
    sub.add_parser("down", help="stop the embedded PostgreSQL")
    url = sub.add_parser("url", help="print a database URL, password included (for psql / BI tools)")
    url.add_argument("database", nargs="?", default="warehouse", choices=("warehouse", "operational"))

    def add_generation_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--customers", type=int, default=400)
        p.add_argument("--suppliers", type=int, default=30)
        p.add_argument("--products", type=int, default=250)
        p.add_argument("--order-lines", type=int, default=60_000)
        p.add_argument("--history-days", type=int, default=365)
        p.add_argument("--warehouses", type=int, default=4, help="distribution centres holding inventory")
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--as-of", help="simulated today, YYYY-MM-DD (default: today, UTC)")

    add_generation_options(sub.add_parser("generate", help="(re)generate the sample operational database"))
    advance = sub.add_parser("advance", help="advance the simulated operational world by N days")
    advance.add_argument("--days", type=int, default=1)
    load = sub.add_parser("load", help="load sources into bronze with dlt")
    load.add_argument(
        "sources", nargs="*", default=list(SOURCES), help=f"default: all ({', '.join(SOURCES)})"
    )
    load.add_argument(
        "--full-refresh", action="store_true", help="drop the source's bronze tables and reload"
    )
    load.add_argument(
        "--skip-delete-reconciliation",
        action="store_true",
        help="do not compare primary keys for hard deletes this run (cheaper on very large tables)",
    )
    transform = sub.add_parser("transform", help="dbt build; extra arguments go to dbt")
    transform.add_argument("dbt_args", nargs=argparse.REMAINDER)
    sub.add_parser("freshness", help="dbt source freshness: is bronze up to date?")
    gcs = sub.add_parser("gcs", help="payload bucket chores").add_subparsers(
        dest="gcs_command", required=True
    )
    requeue = gcs.add_parser("requeue", help="move quarantined files from failed/ back to pending/")
    requeue.add_argument("--type", dest="payload_type", help="only this payload type")
    requeue.add_argument("--file", dest="file_name", help="only this file (path relative to its type folder)")
    samples = gcs.add_parser("samples", help="drop the demo's sample payload files into pending/")
    samples.add_argument("--seed", type=int, default=42)
    samples.add_argument(
        "--as-of", help="simulated today, YYYY-MM-DD (default: the operational world's date)"
    )
    docs = sub.add_parser("docs", help="generate (and optionally serve) the dbt docs site")
    docs.add_argument("--serve", action="store_true")
    docs.add_argument("--port", type=int, default=8080)
    run = sub.add_parser(
        "run", help="the daily job: load every source, then dbt build what changed since the last night"
    )
    run.add_argument(
        "--full", action="store_true", help="build the whole project (as `transform`), not only what changed"
    )
    sub.add_parser("ci", help="slim CI: build and test only changed models and their children (--help)")
    sub.add_parser("metrics", help="query the dbt semantic layer with MetricFlow (--help)")
    erase = sub.add_parser(
        "erase-customer", help="LGPD: erase one customer's personal data from the warehouse (docs/lgpd.md)"
    )
    erase.add_argument("--customer-id", type=int, required=True, help="operational customers.id")
    erase.add_argument("--reference", help="the request's ticket / protocol number, kept in the register")
    demo = sub.add_parser("demo", help="end to end on the embedded warehouse; prints where to connect")
    add_generation_options(demo)
    demo.add_argument("--fresh", action="store_true", help="regenerate the operational database")
    demo.add_argument("--port", type=int, default=8080)
    return parser


def _loader_errors() -> tuple[type[Exception], ...]:
    """Errors the loaders raise with a message meant for a person (no traceback needed)."""
    from loaders.erasure import ErasureError
    from loaders.facebook.client import FacebookAdsError
    from loaders.gcs.bucket import BucketError
    from loaders.gcs.payload_types import PayloadTypeError
    from loaders.pii_key import PiiKeyError
    from loaders.processing_log import ProcessingLogError

    return (BucketError, PayloadTypeError, ProcessingLogError, FacebookAdsError, ErasureError, PiiKeyError)


# Commands that own their whole argument list (passed through untouched): `warehouse ci --state DIR ...`
# runs slim CI (loaders/slim_ci.py), `warehouse metrics query ...` runs MetricFlow (loaders/metricflow.py).
PASS_THROUGH_COMMANDS = {"ci": "loaders.slim_ci", "metrics": "loaders.metricflow"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH_COMMANDS:
        module = importlib.import_module(PASS_THROUGH_COMMANDS[argv[0]])
        return int(module.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConnectionConfigError as exc:  # WAREHOUSE / BIGQUERY_* misconfigured: say what to set
        print(f"error: {exc}", file=sys.stderr)
        return 2
    commands: dict[str, Callable[[], None]] = {
        "up": lambda: cmd_up(settings),
        "down": lambda: cmd_down(settings),
        "url": lambda: print(
            settings.warehouse_url if args.database == "warehouse" else settings.operational_url
        ),
        "generate": lambda: cmd_generate(settings, args),
        "advance": lambda: cmd_advance(settings, args.days),
        "load": lambda: cmd_load(
            settings, args.sources, args.full_refresh, not args.skip_delete_reconciliation
        ),
        "transform": lambda: cmd_transform(settings, [a for a in args.dbt_args if a != "--"]),
        "freshness": lambda: cmd_freshness(settings),
        "gcs": lambda: (
            cmd_gcs_requeue(settings, args.payload_type, args.file_name)
            if args.gcs_command == "requeue"
            else cmd_gcs_samples(
                settings, args.seed, dt.date.fromisoformat(args.as_of) if args.as_of else None
            )
        ),
        "docs": lambda: cmd_docs(settings, args.serve, args.port),
        "run": lambda: (cmd_load(settings, SOURCES), cmd_nightly_transform(settings, args.full)),
        "erase-customer": lambda: cmd_erase_customer(settings, args.customer_id, args.reference),
        "demo": lambda: cmd_demo(settings, args),
    }
    try:
        commands[args.command]()
    except (ConnectionConfigError, EmbeddedPostgresError, StepFailed, *_loader_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m loaders.facebook`: run the loader, or serve the Graph API test double, from a shell.

    python -m loaders.facebook load --warehouse-url URL --account act_123 [--base-url URL] [...]
    python -m loaders.facebook serve --operational-url URL [--port 8765]

The access token is read from SOURCES__FACEBOOK_ADS__ACCESS_TOKEN (never from the command line, where
`ps` would show it). `serve` runs the test double until Ctrl-C and prints its base URL and account ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from loaders.facebook.client import FacebookAdsError

TOKEN_ENV = "SOURCES__FACEBOOK_ADS__ACCESS_TOKEN"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.facebook", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="load ad accounts, campaigns, ad sets, ads and insights into bronze")
    load.add_argument("--warehouse-url", default=os.environ.get("WAREHOUSE_URL"))
    load.add_argument("--base-url", help="Graph API base URL (default https://graph.facebook.com)")
    load.add_argument("--account", action="append", dest="accounts", help="act_<id>; repeat for several")
    load.add_argument("--pipelines-dir")
    load.add_argument("--bronze-schema")
    load.add_argument("--api-version")
    load.add_argument("--start-date", help="first day of the first back-fill, YYYY-MM-DD")
    load.add_argument("--today", help="the API's today (the demo's simulated world date), YYYY-MM-DD")
    load.add_argument("--refetch-days", type=int)
    load.add_argument("--breakdowns", help="comma-separated, e.g. publisher_platform")
    load.add_argument("--days-per-request", type=int)
    load.add_argument("--async-min-days", type=int)
    load.add_argument("--client-settings", help="JSON object of ClientSettings fields")
    load.add_argument("--full-refresh", action="store_true")
    load.add_argument("--no-processing-log", action="store_true")
    serve = sub.add_parser("serve", help="run the Graph API test double until Ctrl-C")
    serve.add_argument("--operational-url", default=os.environ.get("OPERATIONAL_URL"), required=False)
    serve.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "load":
            return _load(args)
        return _serve(args)
    except FacebookAdsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _load(args: argparse.Namespace) -> int:
    from loaders.facebook.pipeline import load_facebook

    if not args.warehouse_url:
        raise SystemExit("--warehouse-url (or WAREHOUSE_URL) is required")
    result = load_facebook(
        args.warehouse_url,
        base_url=args.base_url,
        account_ids=args.accounts,
        pipelines_dir=args.pipelines_dir,
        bronze_schema=args.bronze_schema,
        api_version=args.api_version,
        start_date=args.start_date,
        today=args.today,
        refetch_days=args.refetch_days,
        breakdowns=args.breakdowns.split(",") if args.breakdowns else None,
        days_per_request=args.days_per_request,
        async_min_days=args.async_min_days,
        client_settings=json.loads(args.client_settings) if args.client_settings else None,
        full_refresh=args.full_refresh,
        processing_log=not args.no_processing_log,
    )
    print(
        json.dumps({"run_id": result.run_id, "rows": result.stats.rows, "splits": len(result.stats.splits)})
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from loaders.facebook.graph_double import DEFAULT_TOKEN, serve

    if not args.operational_url:
        raise SystemExit("--operational-url (or OPERATIONAL_URL) is required")
    token = os.environ.get(TOKEN_ENV) or DEFAULT_TOKEN
    with serve(args.operational_url, port=args.port, access_token=token) as double:
        print(json.dumps({"base_url": double.base_url, "account_ids": double.account_ids}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

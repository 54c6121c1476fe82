"""TEST DOUBLE of the Facebook Graph / Marketing API, for the test suite and the demo. Not production code.

A local HTTP server (stdlib ThreadingHTTPServer) that answers the calls the loader makes the way the real
API documents them, with data derived from the same sample world as the operational database:

- **The world.** The generator (loaders/operational/generator.py) gives every pharmacy that signed up while
  the ads ran a `utm_source` and, for Facebook, the `utm_campaign` id of the campaign that acquired it. The
  double reads `generator_state` (seed, as_of, history window, world_date) and those customers, rebuilds the
  same ad accounts and campaigns from the seed (`generator.facebook_campaigns`), derives ad sets, ads and
  creatives from the seed, and reports daily ad-level insights in which every Facebook-acquired pharmacy is
  a purchase conversion (worth its first order's total) on its signup day, on one ad of its campaign,
  plus noise. "Today" is the world's `world_date` (or `today=` / `double.today`).
- **Restatements.** Some conversions are attributed late (1 to 27 days after the ad's day, within the
  28-day window) and only appear once "today" has reached them: moving the world forward (advance_day, or
  `double.today`) changes the actions of recent days exactly like the real API restates them, while
  spend, impressions and clicks never change.
- **The protocol.** /<version>/act_<id> (account fields), /act_<id>/campaigns | adsets | ads (cursor paging;
  ARCHIVED and DELETED objects only when `effective_status` asks for them, like the real edges),
  GET /act_<id>/insights (synchronous) and POST /act_<id>/insights -> report_run_id, GET /<report_run_id>
  (async_status / async_percent_completion), GET /<report_run_id>/insights. Paging with
  `paging.cursors.after` and `paging.next` links that carry `access_token=` like the real ones. Errors in
  the JSON envelope {"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}, usage headers
  (x-app-usage, x-ad-account-usage, x-business-use-case-usage with estimated_time_to_regain_access),
  the 37-month limit (code 3018), breakdowns publisher_platform / age / gender / device_platform.
- **Faults** (`double.faults`, changed by tests at any time): throttle storms (codes 4, 17, 32, 613,
  80000-80014, with the estimate in one header or none), token expiry (190 / 463) after N requests, report
  runs that fail or stall, invalid cursors (2642) mid-range, "too much data" (100 / 1487534, or the
  message-only variant with code 1) above N days, transient errors (code 2, HTTP 500), and holding a
  request until released (to SIGKILL a loader at a known point).

Not emulated: writes, attribution settings (`action_attribution_windows`, `use_account_attribution_setting`
are accepted and ignored), `filtering`, `date_preset` other than the default, field expansion beyond
`creative{id}`, batch requests, ETags, hourly breakdowns, time zones other than the accounts' UTC-3.

Usage:

    with serve(operational_url) as double:            # port 0: any free port
        load_facebook(warehouse_url, base_url=double.base_url, access_token=double.access_token,
                      account_ids=double.account_ids, today=double.today, ...)
        double.faults.throttle_requests = 3            # next three calls are throttled
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import random
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg2

from loaders.operational import generator
from loaders.operational.generator import AdCampaign

DEFAULT_TOKEN = "graph-double-token"
ACCOUNT_TZ = dt.timezone(dt.timedelta(hours=-3))  # America/Sao_Paulo (no daylight saving since 2019)
DEFAULT_PAGE_SIZE = 25
INSIGHTS_RETENTION_MONTHS = 37
BREAKDOWNS: dict[str, tuple[tuple[str, float], ...]] = {
    "publisher_platform": (("facebook", 0.55), ("instagram", 0.38), ("audience_network", 0.04), ("messenger", 0.03)),
    "age": (("18-24", 0.08), ("25-34", 0.27), ("35-44", 0.3), ("45-54", 0.2), ("55-64", 0.1), ("65+", 0.05)),
    "gender": (("female", 0.52), ("male", 0.45), ("unknown", 0.03)),
    "device_platform": (("mobile_app", 0.7), ("mobile_web", 0.2), ("desktop", 0.1)),
}  # fmt: skip
THROTTLE_MESSAGES = {
    4: "Application request limit reached",
    17: "User request limit reached",
    32: "Page request limit reached",
    613: "Calls to this api have exceeded the rate limit.",
}
CENT = Decimal("0.01")


# -- faults ----------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Injected failures; counters go down as they fire. Change them from the test at any time."""

    throttle_requests: int = 0  # the next N requests are throttled
    throttle_after_requests: int = 0  # ... once this many requests have been answered (a storm mid-way)
    throttle_minutes: float = 1.0  # estimated_time_to_regain_access they announce
    throttle_code: int = 80000  # 4, 17, 32, 613 or 80000-80014
    throttle_header: str = "buc"  # where the estimate is: buc | account (reset_time_duration) | none
    expire_token_after: int | None = None  # requests answered normally before the token "expires"
    fail_jobs: int = 0  # the next N report runs end with "Job Failed"
    fail_jobs_longer_than_days: int | None = None  # report runs over more days fail
    stall_jobs: int = 0  # the next N report runs never progress past 37%
    invalid_cursors: int = 0  # the next N requests that carry `after` get code 2642
    too_much_data_days: int | None = None  # insights requests over more days: "too much data"
    too_much_data_style: str = "subcode"  # subcode (100 / 1487534) | message (code 1, message only)
    transient_errors: int = 0  # the next N requests get code 2 with HTTP 500
    hold_after_requests: int | None = None  # the request after N blocks until `release()`
    expired: bool = False


# -- the sample ad world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: str  # digits
    name: str


@dataclass(frozen=True)
class AdSet:
    id: str
    campaign: AdCampaign
    name: str
    daily_budget: int  # cents
    optimization_goal: str
    regions: tuple[str, ...]


@dataclass(frozen=True)
class Ad:
    id: str
    adset: AdSet
    name: str
    creative_id: str
    daily_impressions: float
    ctr: float
    cpm: float


@dataclass
class AdWorld:
    """Accounts, campaigns, ad sets, ads and acquisition conversions of one operational world."""

    seed: int
    world_date: dt.date
    accounts: dict[str, Account]
    campaigns: list[AdCampaign]
    adsets: list[AdSet]
    ads: list[Ad]
    conversions: dict[tuple[str, int], list[Decimal]] = field(default_factory=dict)  # (ad id, day) -> values

    @classmethod
    def from_operational(cls, url: str, accounts: int | None = None) -> AdWorld:
        """The ad world of the operational world at `url`; `accounts` (benchmarks) adds ad accounts beyond
        the world's own, with campaigns, ad sets, ads and delivery but no acquisitions."""
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute("select seed, as_of, world_date, scale from generator_state where id = 1")
                row = cur.fetchone()
                if row is None:
                    raise RuntimeError("generator_state is empty: generate the operational world first")
                seed, as_of, world_date, scale = row
                scale = scale if isinstance(scale, dict) else json.loads(scale)
                cur.execute(
                    """
                    select c.id, c.utm_campaign, c.created_at,
                           (select o.total from orders o where o.customer_id = c.id
                            order by o.created_at, o.id limit 1)
                    from customers c where c.utm_source = 'facebook' order by c.id
                    """
                )
                acquired = cur.fetchall()
        finally:
            conn.close()
        as_of_day = generator.day_number(as_of)
        start_day = as_of_day - int(scale.get("history_days", 365))
        world = cls.build(int(seed), start_day, as_of_day, world_date, accounts)
        by_campaign: dict[str, list[Ad]] = {}
        for ad in world.ads:
            by_campaign.setdefault(ad.adset.campaign.id, []).append(ad)
        for customer_id, campaign_id, created_at, first_total in acquired:
            ads = by_campaign.get(campaign_id)
            if not ads:
                continue
            pick = generator.sub_rng(int(seed), f"facebook:attribution:{customer_id}")
            ad = ads[pick.randrange(len(ads))]
            day = generator.day_number(created_at.astimezone(ACCOUNT_TZ).date())
            value = Decimal(first_total) if first_total is not None else Decimal(pick.randint(400, 4000))
            world.conversions.setdefault((ad.id, day), []).append(value.quantize(CENT))
        return world

    @classmethod
    def build(
        cls, seed: int, start_day: int, as_of_day: int, world_date: dt.date, accounts: int | None = None
    ) -> AdWorld:
        campaigns = generator.facebook_campaigns(seed, start_day, as_of_day, accounts)
        ad_accounts = {
            account_id: Account(account_id, name)
            for account_id, name in zip(
                generator.facebook_account_ids(seed, accounts),
                generator.facebook_account_names(accounts),
                strict=True,
            )
        }
        adsets, ads = [], []
        for campaign in campaigns:
            rng = generator.sub_rng(seed, f"facebook:adsets:{campaign.id}")
            for a in range(rng.randint(1, 3)):
                regions = tuple(sorted(rng.sample(generator.UFS, rng.randint(2, 6))))
                adset = AdSet(
                    id=f"120{rng.randrange(10**14, 10**15)}",
                    campaign=campaign,
                    name=f"{campaign.name.split(' | ')[1]} | Conjunto {a + 1} | {'/'.join(regions)}",
                    daily_budget=rng.randrange(5_000, 40_000, 500),
                    optimization_goal=rng.choice(("LEAD_GENERATION", "OFFSITE_CONVERSIONS", "LINK_CLICKS")),
                    regions=regions,
                )
                adsets.append(adset)
                for k in range(rng.randint(1, 3)):
                    ads.append(
                        Ad(
                            id=f"120{rng.randrange(10**14, 10**15)}",
                            adset=adset,
                            name=f"Anúncio {k + 1} | {rng.choice(('Carrossel', 'Vídeo', 'Imagem única'))}",
                            creative_id=f"120{rng.randrange(10**14, 10**15)}",
                            daily_impressions=adset.daily_budget / 100 * rng.uniform(30, 90),
                            ctr=rng.uniform(0.006, 0.025),
                            cpm=rng.uniform(12.0, 35.0),
                        )
                    )
        return cls(seed, world_date, ad_accounts, campaigns, adsets, ads)

    # objects as the API shows them on `today` ----------------------------------------------------

    def visible(self, campaign: AdCampaign, today: int) -> bool:
        return campaign.start_day - 2 <= today

    def campaign_status(self, campaign: AdCampaign, today: int) -> tuple[str, str]:
        """(configured status, effective status) of a campaign on `today`."""
        if campaign.end_day >= today:
            return "ACTIVE", "ACTIVE"
        return campaign.fate, campaign.fate

    def child_status(self, campaign: AdCampaign, today: int) -> tuple[str, str]:
        status, effective = self.campaign_status(campaign, today)
        if effective == "PAUSED":
            return "ACTIVE", "CAMPAIGN_PAUSED"
        return status, effective

    def campaign_json(self, c: AdCampaign, today: int) -> dict[str, Any]:
        status, effective = self.campaign_status(c, today)
        ended = c.end_day < today
        return {
            "id": c.id,
            "account_id": c.account_id,
            "name": c.name,
            "objective": c.objective,
            "status": status,
            "configured_status": status,
            "effective_status": effective,
            "buying_type": "AUCTION",
            "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
            "daily_budget": str(sum(s.daily_budget for s in self.adsets if s.campaign.id == c.id)),
            "start_time": _graph_time(c.start_day, 9),
            **({"stop_time": _graph_time(c.end_day, 23)} if c.end_day != generator.ALWAYS_ON else {}),
            "created_time": _graph_time(c.start_day - 2, 15),
            "updated_time": _graph_time(c.end_day + 1 if ended else c.start_day - 2, 16),
        }

    def adset_json(self, s: AdSet, today: int) -> dict[str, Any]:
        status, effective = self.child_status(s.campaign, today)
        c = s.campaign
        return {
            "id": s.id,
            "account_id": c.account_id,
            "campaign_id": c.id,
            "name": s.name,
            "status": status,
            "configured_status": status,
            "effective_status": effective,
            "optimization_goal": s.optimization_goal,
            "billing_event": "IMPRESSIONS",
            "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
            "daily_budget": str(s.daily_budget),
            "start_time": _graph_time(c.start_day, 9),
            **({"end_time": _graph_time(c.end_day, 23)} if c.end_day != generator.ALWAYS_ON else {}),
            "targeting": {
                "geo_locations": {"regions": [{"key": f"BR-{uf}", "name": uf} for uf in s.regions]},
                "age_min": 25,
                "age_max": 65,
                "flexible_spec": [{"interests": [{"id": "6003139266461", "name": "Farmácia"}]}],
            },
            "created_time": _graph_time(c.start_day - 2, 15),
            "updated_time": _graph_time(c.end_day + 1 if c.end_day < today else c.start_day - 2, 16),
        }

    def ad_json(self, a: Ad, today: int) -> dict[str, Any]:
        status, effective = self.child_status(a.adset.campaign, today)
        c = a.adset.campaign
        return {
            "id": a.id,
            "account_id": c.account_id,
            "campaign_id": c.id,
            "adset_id": a.adset.id,
            "name": a.name,
            "status": status,
            "configured_status": status,
            "effective_status": effective,
            "creative": {"id": a.creative_id},
            "created_time": _graph_time(c.start_day - 2, 15),
            "updated_time": _graph_time(c.end_day + 1 if c.end_day < today else c.start_day - 2, 16),
        }

    # insights ----------------------------------------------------------------------------------

    def insights(
        self, account_id: str, since: dt.date, until: dt.date, today: dt.date, breakdowns: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Daily ad-level rows of one account as the API reports them on `today` (sorted by the grain)."""
        today_day = generator.day_number(today)
        first, last = generator.day_number(since), min(generator.day_number(until), today_day)
        account = self.accounts[account_id]
        rows = []
        for day in range(first, last + 1):
            for ad in self.ads:
                c = ad.adset.campaign
                if c.account_id != account_id or not c.start_day <= day <= c.end_day:
                    continue
                for row in self._ad_day(ad, day, today_day, breakdowns):
                    row.update(
                        {
                            "account_id": account_id,
                            "account_name": account.name,
                            "account_currency": "BRL",
                            "campaign_id": c.id,
                            "campaign_name": c.name,
                            "adset_id": ad.adset.id,
                            "adset_name": ad.adset.name,
                            "ad_id": ad.id,
                            "ad_name": ad.name,
                            "date_start": generator.day_text(day),
                            "date_stop": generator.day_text(day),
                        }
                    )
                    rows.append(row)
        rows.sort(
            key=lambda r: (
                r["date_start"],
                r["campaign_id"],
                r["adset_id"],
                r["ad_id"],
                *(r[b] for b in breakdowns),
            )
        )
        return rows

    def _ad_day(self, ad: Ad, day: int, today: int, breakdowns: Sequence[str]) -> list[dict[str, Any]]:
        # every draw happens whatever `today` is, so only the late conversions depend on it
        rng = random.Random(f"{self.seed}:facebook:insights:{ad.id}:{day}")
        impressions = int(ad.daily_impressions * generator.day_weight(day) * rng.uniform(0.75, 1.25)) + 1
        reach = max(1, int(impressions / rng.uniform(1.05, 1.8)))
        clicks = int(impressions * ad.ctr * rng.uniform(0.8, 1.2))
        spend_cents = round(impressions * ad.cpm * rng.uniform(0.85, 1.15) / 10)
        link_clicks = int(clicks * rng.uniform(0.6, 0.9))
        page_views = int(link_clicks * rng.uniform(0.5, 0.85))
        extra_leads = int(link_clicks * rng.uniform(0.01, 0.04))
        values = list(self.conversions.get((ad.id, day), []))
        if rng.random() < 0.08:  # an existing pharmacy buying through the ad
            values.append(Decimal(rng.randint(30_000, 300_000)) / 100)
        for _ in range(rng.choices((0, 1, 2), weights=(0.55, 0.33, 0.12))[0]):
            lag, value = rng.randint(1, 27), Decimal(rng.randint(30_000, 300_000)) / 100
            if day + lag <= today:  # attributed late: visible once the API's today reaches it
                values.append(value)
        combos = list(itertools.product(*(BREAKDOWNS[b] for b in breakdowns))) if breakdowns else [()]
        shares = [_product(share for _, share in combo) for combo in combos]
        split = {
            name: _split(total, shares)
            for name, total in (
                ("impressions", impressions),
                ("reach", reach),
                ("clicks", clicks),
                ("spend", spend_cents),
                ("link_click", link_clicks),
                ("landing_page_view", page_views),
                ("lead", extra_leads),
            )
        }
        bucket_values: list[list[Decimal]] = [[] for _ in combos]
        for value in values:
            bucket_values[_pick(rng.random(), shares)].append(value)
        rows = []
        for i, combo in enumerate(combos):
            if split["impressions"][i] == 0:
                continue
            purchases = len(bucket_values[i])
            actions = [
                ("link_click", split["link_click"][i]),
                ("landing_page_view", split["landing_page_view"][i]),
                ("lead", split["lead"][i] + purchases),
                ("offsite_conversion.fb_pixel_purchase", purchases),
                ("purchase", purchases),
            ]
            worth = str(sum(bucket_values[i], Decimal(0)).quantize(CENT))
            row: dict[str, Any] = {
                "impressions": str(split["impressions"][i]),
                "reach": str(max(1, split["reach"][i])),
                "frequency": f"{split['impressions'][i] / max(1, split['reach'][i]):.6f}",
                "clicks": str(split["clicks"][i]),
                "spend": str((Decimal(split["spend"][i]) / 100).quantize(CENT, ROUND_HALF_UP)),
                "actions": [{"action_type": t, "value": str(v)} for t, v in actions if v > 0],
            }
            if purchases:
                row["action_values"] = [
                    {"action_type": "offsite_conversion.fb_pixel_purchase", "value": worth},
                    {"action_type": "purchase", "value": worth},
                ]
            for name, (value, _) in zip(breakdowns, combo, strict=True):
                row[name] = value
            rows.append(row)
        return rows


def _product(values: Iterator[float]) -> float:
    result = 1.0
    for v in values:
        result *= v
    return result


def _split(total: int, shares: Sequence[float]) -> list[int]:
    """Integer parts of `total` proportional to `shares` (largest remainder), summing to `total`."""
    raw = [total * s / sum(shares) for s in shares]
    parts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _pick(value: float, shares: Sequence[float]) -> int:
    total = sum(shares)
    for i, share in enumerate(shares):
        value -= share / total
        if value < 0:
            return i
    return len(shares) - 1


def _graph_time(day: int, hour: int) -> str:
    """A Graph API timestamp in the accounts' time zone, e.g. 2024-01-30T09:00:00-0300."""
    return f"{generator.day_text(day)}T{hour:02d}:00:00-0300"


def earliest_allowed(today: dt.date) -> dt.date:
    index = today.year * 12 + today.month - 1 - INSIGHTS_RETENTION_MONTHS
    year, month = divmod(index, 12)
    for day in range(today.day, 0, -1):
        try:
            return dt.date(year, month + 1, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


# -- the HTTP side ---------------------------------------------------------------------------------


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        kind: str = "OAuthException",
        headers: Mapping[str, str] | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.subcode = status, code, message, subcode
        self.kind, self.headers, self.transient = kind, dict(headers or {}), transient

    def body(self, trace: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.kind, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient:
            error["is_transient"] = True
        error["fbtrace_id"] = trace
        return {"error": error}


@dataclass
class ReportRun:
    id: str
    account_id: str
    since: dt.date
    until: dt.date
    breakdowns: tuple[str, ...]
    fields: tuple[str, ...] | None
    fate: str  # ok | fail | stall | too_much_data
    polls: int = 0
    rows: list[dict[str, Any]] | None = None


@dataclass
class RequestRecord:
    method: str
    path: str
    params: dict[str, str]  # without the access token
    status: int = 200
    error_code: int | None = None


class GraphDouble:
    """The server and its state. Use `serve()`; read `requests`, change `faults`, set `today`."""

    def __init__(
        self,
        operational_url: str,
        *,
        access_token: str = DEFAULT_TOKEN,
        today: dt.date | None = None,
        max_page_size: int = 50,
        accounts: int | None = None,
    ) -> None:
        self.operational_url = operational_url
        self.access_token = access_token
        self.world = AdWorld.from_operational(operational_url, accounts)
        self._today = today
        self.max_page_size = max_page_size
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        self.jobs: dict[str, ReportRun] = {}
        self.lock = threading.RLock()
        self.held = threading.Event()
        self._release = threading.Event()
        self._job_ids = itertools.count(6_100_000_000_001)
        self._traces = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._cache: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    # public ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def account_ids(self) -> list[str]:
        return [f"act_{a}" for a in self.world.accounts]

    @property
    def today(self) -> dt.date:
        """The API's today: the override if set, else the operational world's world_date (read live)."""
        if self._today is not None:
            return self._today
        with self.lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self.operational_url)
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("select world_date from generator_state where id = 1")
                (date,) = cur.fetchone()
        return date

    @today.setter
    def today(self, value: dt.date | None) -> None:
        self._today = value

    def loader_kwargs(self) -> dict[str, Any]:
        """Arguments for `load_facebook` that point it at this double: its URL, token and accounts, the
        world's today, a back-fill from the first day the ads ran, and short waits (time_scale 0.002)."""
        first_day = min(c.start_day for c in self.world.campaigns)
        return {
            "base_url": self.base_url,
            "access_token": self.access_token,
            "account_ids": self.account_ids,
            "today": self.today,
            "start_date": generator.EPOCH + dt.timedelta(days=first_day),
            "client_settings": {"time_scale": 0.002},
        }

    def release(self) -> None:
        """Let a request held by `faults.hold_after_requests` go on (and stop holding)."""
        with self.lock:
            self.faults.hold_after_requests = None
        self._release.set()

    def insights(
        self, account_id: str, since: dt.date, until: dt.date, breakdowns: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The rows the API would answer now (ground truth for tests)."""
        return self.world.insights(account_id.removeprefix("act_"), since, until, self.today, breakdowns)

    def campaigns(self) -> list[dict[str, Any]]:
        today = generator.day_number(self.today)
        return [
            self.world.campaign_json(c, today) for c in self.world.campaigns if self.world.visible(c, today)
        ]

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed ACKs

            def do_GET(self) -> None:
                double._handle(self, "GET")

            def do_POST(self) -> None:
                double._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:  # quiet: URLs may carry the token
                return

        self._server = _Server((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="graph-double", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # request handling --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            params.update(parse_qsl(handler.rfile.read(length).decode(), keep_blank_values=True))
        token = params.pop("access_token", None)
        auth = handler.headers.get("Authorization") or ""
        if not token and auth.split(" ", 1)[0] in ("Bearer", "OAuth"):
            token = auth.split(" ", 1)[1].strip()
        params.pop("appsecret_proof", None)
        record = RequestRecord(method, parts.path, params)
        with self.lock:
            self.requests.append(record)
            number = len(self.requests)
            hold = self.faults.hold_after_requests is not None and number > self.faults.hold_after_requests
        if hold:
            self.held.set()
            self._release.wait(timeout=120)
        status, headers, body = 200, {}, {}
        try:
            body, headers = self._route(method, parts.path, params, token)
        except GraphError as exc:
            status, headers = exc.status, exc.headers
            body = exc.body(f"A{next(self._traces):010d}")
            record.error_code = exc.code
        record.status = status
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _route(
        self, method: str, path: str, params: dict[str, str], token: str | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        match = re.fullmatch(r"/(v\d+\.\d+)/(.+?)/?", path)
        if not match:
            raise GraphError(400, 2500, "Unknown path components: " + path, kind="OAuthException")
        parts = match.group(2).split("/")
        account = parts[0][4:] if parts[0].startswith("act_") else None
        self._check_auth(token)
        headers = self._usage_headers(account, throttled=False)
        with self.lock:
            faults = self.faults
            if faults.transient_errors > 0:
                faults.transient_errors -= 1
                raise GraphError(
                    500,
                    2,
                    "An unexpected error has occurred. Please retry your request later.",
                    transient=True,
                )
            if faults.throttle_requests > 0 and len(self.requests) > faults.throttle_after_requests:
                faults.throttle_requests -= 1
                raise self._throttle_error(account)
            if "after" in params and faults.invalid_cursors > 0:
                faults.invalid_cursors -= 1
                raise GraphError(400, 2642, "(#2642) Invalid cursors values")
        today = self.today
        if account is not None:
            if account not in self.world.accounts:
                raise GraphError(
                    400,
                    100,
                    f"Unsupported get request. Object with ID 'act_{account}' does not exist, cannot be loaded "
                    "due to missing permissions, or does not support this operation.",
                    subcode=33,
                    kind="GraphMethodException",
                )
            edge = parts[1] if len(parts) > 1 else None
            if edge is None and method == "GET":
                return self._account(account, params), headers
            if edge in ("campaigns", "adsets", "ads") and method == "GET":
                return self._page(self._entities(account, edge, params, today), path, params, token), headers
            if edge == "insights" and method == "GET":
                since, until, breakdowns, fields = self._insights_request(params, today)
                self._check_size(since, until, params)
                rows = self._insights(account, since, until, today, breakdowns, fields)
                return self._page(rows, path, params, token), headers
            if edge == "insights" and method == "POST":
                return self._create_job(account, params, today), headers
        elif parts[0] in self.jobs and method == "GET":
            job = self.jobs[parts[0]]
            if len(parts) == 1:
                return self._poll(job, today), headers
            if parts[1] == "insights":
                if job.rows is None:
                    raise GraphError(400, 100, f"(#100) Report {job.id} is not ready", kind="OAuthException")
                return self._page(job.rows, path, params, token), headers
        elif parts[0] == "me" and parts[1:] == ["adaccounts"]:
            rows = [
                self._account(a, {"fields": params.get("fields", "id,account_id,name")})
                for a in self.world.accounts
            ]
            return self._page(rows, path, params, token), headers
        raise GraphError(
            400,
            100,
            f"Unsupported {method.lower()} request. Object with ID '{parts[0]}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
            subcode=33,
            kind="GraphMethodException",
        )

    def _check_auth(self, token: str | None) -> None:
        if not token:
            raise GraphError(400, 104, "An access token is required to request this resource.")
        if token != self.access_token:
            raise GraphError(400, 190, "Invalid OAuth access token - Cannot parse access token")
        with self.lock:
            faults = self.faults
            if faults.expire_token_after is not None:
                if faults.expire_token_after <= 0:
                    faults.expired = True
                faults.expire_token_after -= 1
            if faults.expired:
                raise GraphError(
                    400,
                    190,
                    "Error validating access token: Session has expired on Monday, 01-Jan-24 12:00:00 PST. "
                    "The current time is Tuesday, 02-Jan-24 08:00:00 PST.",
                    subcode=463,
                )

    def _usage_headers(self, account: str | None, *, throttled: bool) -> dict[str, str]:
        with self.lock:
            calls = len(self.requests)
            faults = self.faults
        pct = 100 if throttled else min(95, calls % 40 + 1)
        minutes = faults.throttle_minutes if throttled else 0
        headers = {
            "x-app-usage": json.dumps(
                {"call_count": pct // 2, "total_cputime": pct // 3, "total_time": pct // 3}
            )
        }
        if account is not None:
            account_usage: dict[str, Any] = {"acc_id_util_pct": pct, "ads_api_access_tier": "standard_access"}
            account_usage["reset_time_duration"] = (
                int(minutes * 60) if faults.throttle_header == "account" else 0
            )
            headers["x-ad-account-usage"] = json.dumps(account_usage)
            estimate = minutes if faults.throttle_header == "buc" else 0
            headers["x-business-use-case-usage"] = json.dumps(
                {
                    account: [
                        {
                            "type": "ads_insights",
                            "call_count": pct,
                            "total_cputime": pct // 2,
                            "total_time": pct // 2,
                            "estimated_time_to_regain_access": estimate,
                            "ads_api_access_tier": "standard_access",
                        }
                    ]
                }
            )
        return headers

    def _throttle_error(self, account: str | None) -> GraphError:
        code = self.faults.throttle_code
        if code in THROTTLE_MESSAGES:
            message = THROTTLE_MESSAGES[code]
        else:
            message = (
                "There have been too many calls from this ad-account. Wait a bit and try again. For more info, "
                "please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
            )
        subcode = 1487742 if code == 613 else 2446079
        return GraphError(
            400,
            code,
            f"(#{code}) {message}",
            subcode=subcode,
            headers=self._usage_headers(account or next(iter(self.world.accounts)), throttled=True),
            transient=True,
        )

    def _account(self, account: str, params: Mapping[str, str]) -> dict[str, Any]:
        acc = self.world.accounts[account]
        first = min(c.start_day for c in self.world.campaigns if c.account_id == account)
        full = {
            "id": f"act_{account}",
            "account_id": account,
            "name": acc.name,
            "account_status": 1,
            "currency": "BRL",
            "timezone_name": "America/Sao_Paulo",
            "timezone_offset_hours_utc": -3,
            "created_time": _graph_time(first - 30, 11),
        }
        return _fields(full, params.get("fields"), always=("id",))

    def _entities(self, account: str, edge: str, params: Mapping[str, str], today: dt.date) -> list[dict]:
        day = generator.day_number(today)
        wanted = set(json.loads(params["effective_status"])) if params.get("effective_status") else None
        world = self.world
        if edge == "campaigns":
            objects = [
                world.campaign_json(c, day)
                for c in world.campaigns
                if c.account_id == account and world.visible(c, day)
            ]
        elif edge == "adsets":
            objects = [
                world.adset_json(s, day)
                for s in world.adsets
                if s.campaign.account_id == account and world.visible(s.campaign, day)
            ]
        else:
            objects = [
                world.ad_json(a, day)
                for a in world.ads
                if a.adset.campaign.account_id == account and world.visible(a.adset.campaign, day)
            ]
        if wanted is None:  # the real edges leave archived and deleted objects out unless asked
            objects = [o for o in objects if o["effective_status"] not in ("ARCHIVED", "DELETED")]
        else:
            objects = [o for o in objects if o["effective_status"] in wanted]
        objects.sort(key=lambda o: o["id"])
        return [_fields(o, params.get("fields"), always=("id",)) for o in objects]

    def _insights_request(
        self, params: Mapping[str, str], today: dt.date
    ) -> tuple[dt.date, dt.date, tuple[str, ...], tuple[str, ...] | None]:
        if params.get("level", "ad") != "ad" or str(params.get("time_increment", "1")) != "1":
            raise GraphError(400, 100, "(#100) the double only serves level=ad with time_increment=1")
        if params.get("time_range"):
            time_range = json.loads(params["time_range"])
            since = dt.date.fromisoformat(time_range["since"])
            until = dt.date.fromisoformat(time_range["until"])
        else:  # the API's default date_preset, last_30d
            since, until = today - dt.timedelta(days=30), today - dt.timedelta(days=1)
        if since > until:
            raise GraphError(400, 100, "(#100) time_range: since must be on or before until")
        if since < earliest_allowed(today):
            raise GraphError(
                400,
                3018,
                "(#3018) The start date of the time range cannot be beyond 37 months from the current date",
            )
        breakdowns = tuple(
            b
            for b in params.get("breakdowns", "")
            .replace("[", "")
            .replace("]", "")
            .replace('"', "")
            .split(",")
            if b
        )
        for b in breakdowns:
            if b not in BREAKDOWNS:
                raise GraphError(
                    400,
                    100,
                    f"(#100) breakdowns[0] must be one of the following values: {', '.join(BREAKDOWNS)}",
                )
        fields = tuple(f for f in params.get("fields", "").split(",") if f) or None
        return since, until, breakdowns, fields

    def _check_size(self, since: dt.date, until: dt.date, params: Mapping[str, str]) -> None:
        limit = self.faults.too_much_data_days
        if limit is not None and (until - since).days + 1 > limit:
            if self.faults.too_much_data_style == "message":
                raise GraphError(
                    500, 1, "Please reduce the amount of data you're asking for, then retry your request"
                )
            raise GraphError(
                400,
                100,
                "Please reduce the amount of data you're asking for, then retry your request",
                subcode=1487534,
                kind="OAuthException",
            )

    def _create_job(self, account: str, params: Mapping[str, str], today: dt.date) -> dict[str, Any]:
        since, until, breakdowns, fields = self._insights_request(params, today)
        days = (until - since).days + 1
        with self.lock:
            faults = self.faults
            fate = "ok"
            if faults.stall_jobs > 0:
                faults.stall_jobs -= 1
                fate = "stall"
            elif faults.fail_jobs > 0:
                faults.fail_jobs -= 1
                fate = "fail"
            elif faults.fail_jobs_longer_than_days is not None and days > faults.fail_jobs_longer_than_days:
                fate = "fail"
            elif faults.too_much_data_days is not None and days > faults.too_much_data_days:
                fate = "too_much_data"
            job = ReportRun(str(next(self._job_ids)), account, since, until, breakdowns, fields, fate)
            self.jobs[job.id] = job
        return {"report_run_id": job.id}

    def _poll(self, job: ReportRun, today: dt.date) -> dict[str, Any]:
        with self.lock:
            job.polls += 1
            polls = job.polls
        body: dict[str, Any] = {
            "id": job.id,
            "account_id": job.account_id,
            "date_start": job.since.isoformat(),
            "date_stop": job.until.isoformat(),
            "time_ref": 1_700_000_000,
        }
        if job.fate == "stall":
            return {
                **body,
                "async_status": "Job Running" if polls > 1 else "Job Started",
                "async_percent_completion": 37,
            }
        if polls == 1:
            return {**body, "async_status": "Job Started", "async_percent_completion": 0}
        if polls == 2:
            return {**body, "async_status": "Job Running", "async_percent_completion": 60}
        if job.fate in ("fail", "too_much_data"):
            failed = {**body, "async_status": "Job Failed", "async_percent_completion": 0}
            if job.fate == "too_much_data":
                failed.update(
                    {
                        "error_code": 100,
                        "error_subcode": 1487534,
                        "error_message": "Please reduce the amount of data you're asking for, then retry your request",
                    }
                )
            return failed
        if job.rows is None:
            job.rows = self._insights(job.account_id, job.since, job.until, today, job.breakdowns, job.fields)
        return {**body, "async_status": "Job Completed", "async_percent_completion": 100}

    def _insights(
        self,
        account: str,
        since: dt.date,
        until: dt.date,
        today: dt.date,
        breakdowns: tuple[str, ...],
        fields: tuple[str, ...] | None,
    ) -> list[dict[str, Any]]:
        """Rows of one request, cached so that paging through them does not recompute them per page."""
        key = (account, since, until, today, breakdowns, fields)
        with self.lock:
            rows = self._cache.get(key)
        if rows is None:
            rows = _select(self.world.insights(account, since, until, today, breakdowns), fields, breakdowns)
            with self.lock:
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[key] = rows
        return rows

    def _page(
        self, rows: list[dict[str, Any]], path: str, params: Mapping[str, str], token: str | None
    ) -> dict[str, Any]:
        limit = min(max(1, int(params.get("limit") or DEFAULT_PAGE_SIZE)), self.max_page_size)
        offset = _decode_cursor(params["after"]) if params.get("after") else 0
        page = rows[offset : offset + limit]
        body: dict[str, Any] = {"data": page}
        if page:
            body["paging"] = {"cursors": {"before": _cursor(offset), "after": _cursor(offset + len(page))}}
            if offset + len(page) < len(rows):
                query = {k: v for k, v in params.items() if k != "after"}
                query.update(
                    {"access_token": token or "", "limit": str(limit), "after": _cursor(offset + len(page))}
                )
                body["paging"]["next"] = f"{self.base_url}{path}?{urlencode(query)}"
        return body


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(text.split(":", 1)[1])
    except (ValueError, IndexError) as exc:
        raise GraphError(400, 2642, "(#2642) Invalid cursors values") from exc


def _fields(obj: Mapping[str, Any], fields: str | None, always: Sequence[str]) -> dict[str, Any]:
    if not fields:
        return {k: obj[k] for k in ("id", "name") if k in obj}
    names = {re.sub(r"\{.*\}", "", f).strip() for f in fields.split(",")}
    return {k: v for k, v in obj.items() if k in names or k in always}


def _select(
    rows: list[dict[str, Any]], fields: Sequence[str] | None, breakdowns: Sequence[str]
) -> list[dict[str, Any]]:
    if not fields:
        return rows
    keep = {*fields, "date_start", "date_stop", *breakdowns}
    return [{k: v for k, v in row.items() if k in keep} for row in rows]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed loader) is normal here; anything else is reported."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve(
    operational_url: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    access_token: str = DEFAULT_TOKEN,
    today: dt.date | None = None,
    max_page_size: int = 50,
    accounts: int | None = None,
) -> Iterator[GraphDouble]:
    """Start the double on `host:port` (0: a free port) for the world in `operational_url`; stop it after.
    `accounts`: serve that many ad accounts (benchmarks), the world's own first."""
    double = GraphDouble(
        operational_url,
        access_token=access_token,
        today=today,
        max_page_size=max_page_size,
        accounts=accounts,
    )
    double.start(host, port)
    try:
        yield double
    finally:
        double.stop()

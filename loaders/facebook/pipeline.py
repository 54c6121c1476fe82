"""Facebook Ads (Graph / Marketing API) -> warehouse bronze (`bronze_facebook_ads`), with dlt.

Tables (every row carries `_loaded_at`, the time this run extracted it, plus dlt's `_dlt_load_id` and
`_dlt_id`; see docs/facebook_loader.md for every column):

    ad_accounts   one row per ad account                         merged on id ("act_<id>")
    campaigns     one row per campaign, whatever its status     merged on id
    ad_sets       one row per ad set                            merged on id
    ads           one row per ad (with its creative_id)         merged on id
    ad_insights   one row per ad per day (per breakdown value)  merged on the grain below

Why it is built this way:
- **Archived and deleted objects stay.** The Graph API leaves ARCHIVED and DELETED objects out of an edge
  unless `effective_status` asks for them, so every listing asks for every status; bronze keeps the last
  version of each object with its effective_status instead of losing it when a campaign is archived.
- **Insights are daily, at ad level** (`level=ad`, `time_increment=1`) and merged on their real grain:
  account_id, campaign_id, adset_id, ad_id, date_start and every enabled breakdown. Breakdowns are
  configuration (default none); each set of breakdowns lands in its own table (`ad_insights_by_<...>`)
  because it is a different grain. `actions` / `action_values` stay JSON arrays in the row (jsonb on
  PostgreSQL) so dbt unnests them; dlt's max_table_nesting=0 keeps them from becoming child tables.
- **Incremental by date with a re-fetch window.** Facebook keeps attributing conversions to an ad's day
  for up to 28 days (the default click attribution window), so every run re-reads the last `refetch_days`
  days (default 28) and the merge updates restated rows; older days are final and are never asked for
  again. The cursor (per account, the last day loaded) lives in dlt's resource state, which is committed
  in the warehouse with the data of the same load: a run that fails or is killed advances nothing.
- **Re-read rows equal to bronze are not loaded again** (bronze_versions.py): entities are re-listed whole
  and the re-fetch window re-read on every run, and re-loading an unchanged row would move its `_loaded_at`
  and make every mart below look stale to the nightly job. Counted in the processing log
  (`unchanged_rows_skipped`); never on a full refresh (bronze is dropped).
- **The first run back-fills** from `start_date` (default: as far back as the API allows), never earlier
  than the 37 months the Insights API keeps (an earlier start is clamped, with a warning).
- **Big ranges go through asynchronous report runs**, at most `days_per_request` days each; a run that
  fails, is skipped or stalls, and a "too much data" answer, halve the range and try again, down to one
  day. An invalid cursor restarts the range that was being read (rows of the partial read are dropped,
  never duplicated).
- **Failures raise inside the resource**, so dlt commits nothing of that run: no cursor moves and no table
  changes. Throttling waits as long as the API's usage headers say, within a budget; an expired token fails
  at once with what to do. The token is sent in a header and scrubbed from every message (client.py).
- Loaded with `loader_file_format="csv"`: PostgreSQL lands the rows with COPY. On BigQuery
  (WAREHOUSE=bigquery, loaders/destinations.py) the rows go as Parquet files through load jobs, and the
  JSON columns (targeting, actions, action_values) are STRING columns holding the same JSON text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.typing import TSecretStrValue
from dlt.pipeline.exceptions import PipelineStepFailed

from loaders.facebook.bronze_versions import BronzeVersions
from loaders.facebook.client import (
    DEFAULT_API_VERSION,
    DEFAULT_BASE_URL,
    ClientSettings,
    FacebookAdsError,
    FacebookApiError,
    GraphClient,
    Redactor,
    ReportJobFailed,
    ScrubFilter,
    TooMuchData,
)

logger = logging.getLogger("loaders.facebook")

BRONZE_SCHEMA_ENV = "BRONZE_FACEBOOK_SCHEMA"
DEFAULT_BRONZE_SCHEMA = "bronze_facebook_ads"
DEFAULT_REFETCH_DAYS = 28
DEFAULT_DAYS_PER_REQUEST = 31
DEFAULT_ASYNC_MIN_DAYS = 8
INSIGHTS_RETENTION_MONTHS = 37
INSIGHTS_TABLE = "ad_insights"
GRAIN = ("account_id", "campaign_id", "adset_id", "ad_id", "date_start")

_STATUSES = ["ACTIVE", "PAUSED", "DELETED", "ARCHIVED", "IN_PROCESS", "WITH_ISSUES"]
EFFECTIVE_STATUSES = {
    "campaigns": _STATUSES,
    "adsets": [*_STATUSES, "CAMPAIGN_PAUSED"],
    "ads": [
        *_STATUSES,
        "CAMPAIGN_PAUSED",
        "ADSET_PAUSED",
        "PENDING_REVIEW",
        "DISAPPROVED",
        "PREAPPROVED",
        "PENDING_BILLING_INFO",
    ],
}

ACCOUNT_FIELDS = (
    "id,account_id,name,account_status,currency,timezone_name,timezone_offset_hours_utc,created_time"
)
CAMPAIGN_FIELDS = (
    "id,account_id,name,objective,status,configured_status,effective_status,buying_type,bid_strategy,"
    "daily_budget,lifetime_budget,start_time,stop_time,created_time,updated_time"
)
ADSET_FIELDS = (
    "id,account_id,campaign_id,name,status,configured_status,effective_status,optimization_goal,"
    "billing_event,bid_strategy,daily_budget,lifetime_budget,start_time,end_time,targeting,created_time,"
    "updated_time"
)
AD_FIELDS = (
    "id,account_id,campaign_id,adset_id,name,status,configured_status,effective_status,creative{id},"
    "created_time,updated_time"
)
INSIGHT_FIELDS = (
    "account_id,account_name,account_currency,campaign_id,campaign_name,adset_id,adset_name,ad_id,ad_name,"
    "date_start,date_stop,spend,impressions,reach,clicks,frequency,actions,action_values"
)


def _cols(**types: str) -> dict[str, dict[str, Any]]:
    return {name: {"data_type": kind, "nullable": True} for name, kind in types.items()}


LOADED_AT = {"_loaded_at": {"data_type": "timestamp", "nullable": False}}
ID = {"id": {"data_type": "text", "nullable": False}}
ACCOUNT_COLUMNS = {
    **ID,
    **_cols(account_id="text", name="text", account_status="bigint", currency="text"),
    **_cols(timezone_name="text", timezone_offset_hours_utc="double", created_time="timestamp"),
    **LOADED_AT,
}
CAMPAIGN_COLUMNS = {
    **ID,
    **_cols(account_id="text", name="text", objective="text", status="text"),
    **_cols(configured_status="text", effective_status="text", buying_type="text", bid_strategy="text"),
    **_cols(daily_budget="bigint", lifetime_budget="bigint", start_time="timestamp", stop_time="timestamp"),
    **_cols(created_time="timestamp", updated_time="timestamp"),
    **LOADED_AT,
}
ADSET_COLUMNS = {
    **ID,
    **_cols(account_id="text", campaign_id="text", name="text", status="text"),
    **_cols(configured_status="text", effective_status="text", optimization_goal="text"),
    **_cols(billing_event="text", bid_strategy="text", daily_budget="bigint", lifetime_budget="bigint"),
    **_cols(start_time="timestamp", end_time="timestamp", targeting="json"),
    **_cols(created_time="timestamp", updated_time="timestamp"),
    **LOADED_AT,
}
AD_COLUMNS = {
    **ID,
    **_cols(account_id="text", campaign_id="text", adset_id="text", name="text", status="text"),
    **_cols(configured_status="text", effective_status="text", creative_id="text"),
    **_cols(created_time="timestamp", updated_time="timestamp"),
    **LOADED_AT,
}


def insight_columns(breakdowns: Sequence[str]) -> dict[str, dict[str, Any]]:
    grain = {name: {"data_type": "text", "nullable": False} for name in GRAIN if name != "date_start"}
    return {
        **grain,
        "date_start": {"data_type": "date", "nullable": False},
        **{b: {"data_type": "text", "nullable": False} for b in breakdowns},
        **_cols(date_stop="date", account_name="text", account_currency="text", campaign_name="text"),
        **_cols(adset_name="text", ad_name="text", spend="decimal", impressions="bigint", reach="bigint"),
        **_cols(clicks="bigint", frequency="double", actions="json", action_values="json"),
        **LOADED_AT,
    }


def insights_table(breakdowns: Sequence[str]) -> str:
    """ad_insights, or ad_insights_by_<breakdowns> when breakdowns are enabled (another grain)."""
    return INSIGHTS_TABLE if not breakdowns else f"{INSIGHTS_TABLE}_by_{'_'.join(breakdowns)}"


def bronze_schema_from_env() -> str:
    return os.environ.get(BRONZE_SCHEMA_ENV, DEFAULT_BRONZE_SCHEMA)


# -- run statistics --------------------------------------------------------------------------------


@dataclass
class LoadStats:
    """What one run did, per account: the insight ranges asked for, splits, rows per table."""

    ranges: dict[str, list[tuple[str, str, str]]] = field(
        default_factory=dict
    )  # account -> (since, until, how)
    splits: list[dict[str, str]] = field(default_factory=list)
    clamped: dict[str, str] = field(default_factory=dict)  # account -> first day actually requested
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # account -> table -> rows extracted
    skipped: dict[str, int] = field(default_factory=dict)  # table -> rows equal to bronze, not loaded
    client: Any = None  # the client's ClientStats, live while the run goes on
    views_dropped: list[str] = field(default_factory=list)  # dbt's views on bronze, before a full refresh

    def count(self, account: str, table: str, n: int) -> None:
        per_table = self.rows.setdefault(account, {})
        per_table[table] = per_table.get(table, 0) + n

    def skip(self, table: str, n: int) -> None:
        self.skipped[table] = self.skipped.get(table, 0) + n


@dataclass
class FacebookLoadResult:
    """The dlt LoadInfo of the run and what the loader did (see LoadStats)."""

    info: Any
    stats: LoadStats
    run_id: str


# -- dates -----------------------------------------------------------------------------------------


def earliest_insights_date(today: dt.date, months: int = INSIGHTS_RETENTION_MONTHS) -> dt.date:
    """The first day the Insights API still serves: `months` months before today, plus one day of margin
    (the API counts in the account's time zone and rejects a start on the boundary with code 3018)."""
    month_index = today.year * 12 + today.month - 1 - months
    year, month = divmod(month_index, 12)
    month += 1
    last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(today.day, last_day)) + dt.timedelta(days=1)


def _date(value: dt.date | str | None) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _windows(since: dt.date, until: dt.date, days: int) -> Iterator[tuple[dt.date, dt.date]]:
    start = since
    while start <= until:
        end = min(until, start + dt.timedelta(days=days - 1))
        yield start, end
        start = end + dt.timedelta(days=1)


# -- value conversion ------------------------------------------------------------------------------


def _ts(value: Any) -> dt.datetime | None:
    """Graph timestamps ("2024-01-30T10:00:00-0300") as aware UTC datetimes."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _float(value: Any) -> float | None:
    dec = _dec(value)
    return None if dec is None else float(dec)


def _json(value: Any) -> str | None:
    """Nested API values (actions, targeting) as JSON text with stable key order."""
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _digits(account: str) -> str:
    return account[4:] if account.startswith("act_") else account


def _names(value: Sequence[str] | str | None) -> list[str]:
    """A list from configuration: a list, a JSON list ('["a","b"]') or comma-separated text ("a,b")."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def normalize_account_ids(account_ids: Sequence[str] | str | None) -> list[str]:
    """`act_<id>` for each configured account ("act_1,act_2", ["1", "act_2"], ...), order kept."""
    result: list[str] = []
    for item in _names(account_ids):
        raw = str(item).strip()
        if not raw:
            continue
        digits = _digits(raw)
        if not digits.isdigit():
            raise FacebookAdsError(f"ad account ids look like act_1234567890 or 1234567890, got {raw!r}")
        if f"act_{digits}" not in result:
            result.append(f"act_{digits}")
    return result


# -- extraction ------------------------------------------------------------------------------------


class Extractor:
    """The API calls of one run, shared by the resources of the source."""

    def __init__(
        self,
        client: GraphClient,
        *,
        stats: LoadStats,
        loaded_at: dt.datetime,
        breakdowns: Sequence[str],
        refetch_days: int,
        start_date: dt.date | None,
        today: dt.date | None,
        days_per_request: int,
        async_min_days: int,
        bronze: BronzeVersions | None = None,
    ) -> None:
        self.client = client
        self.bronze = bronze
        self.stats = stats
        self.loaded_at = loaded_at
        self.breakdowns = list(breakdowns)
        self.refetch_days = max(1, refetch_days)
        self.start_date = start_date
        self.today = today
        self.days_per_request = max(1, days_per_request)
        self.async_min_days = max(1, async_min_days)
        self._accounts: dict[str, dict[str, Any]] = {}

    def changed(
        self, table: str, rows: list[dict[str, Any]], key: Sequence[str], where: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """`rows` without those equal to their bronze version (bronze_versions.py), counted as skipped."""
        if self.bronze is None or not rows:
            return rows
        kept = self.bronze.changed(table, rows, key, where)
        self.stats.skip(table, len(rows) - len(kept))
        return kept

    # entities ----------------------------------------------------------------------------------

    def account(self, account: str) -> dict[str, Any]:
        if account not in self._accounts:
            self._accounts[account] = self.client.get(account, {"fields": ACCOUNT_FIELDS})
        return self._accounts[account]

    def account_row(self, account: str) -> dict[str, Any]:
        raw = self.account(account)
        row = {
            "id": raw.get("id") or account,
            "account_id": str(raw.get("account_id") or _digits(account)),
            "name": raw.get("name"),
            "account_status": _int(raw.get("account_status")),
            "currency": raw.get("currency"),
            "timezone_name": raw.get("timezone_name"),
            "timezone_offset_hours_utc": _float(raw.get("timezone_offset_hours_utc")),
            "created_time": _ts(raw.get("created_time")),
            "_loaded_at": self.loaded_at,
        }
        self.stats.count(account, "ad_accounts", 1)
        return row

    def changed_account_rows(self, account: str) -> list[dict[str, Any]]:
        return self.changed("ad_accounts", [self.account_row(account)], ("id",), {"id": account})

    def entity_rows(self, account: str, edge: str, table: str) -> list[dict[str, Any]]:
        fields = {"campaigns": CAMPAIGN_FIELDS, "adsets": ADSET_FIELDS, "ads": AD_FIELDS}[edge]
        params = {"fields": fields, "effective_status": EFFECTIVE_STATUSES[edge]}
        rows = [self._entity(raw, account) for raw in self.client.collect(f"{account}/{edge}", params)]
        self.stats.count(account, table, len(rows))
        return self.changed(table, rows, ("id",), {"account_id": _digits(account)})

    def _entity(self, raw: Mapping[str, Any], account: str) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": str(raw["id"]),
            "account_id": str(raw.get("account_id") or _digits(account)),
            "name": raw.get("name"),
            "status": raw.get("status"),
            "configured_status": raw.get("configured_status"),
            "effective_status": raw.get("effective_status"),
            "created_time": _ts(raw.get("created_time")),
            "updated_time": _ts(raw.get("updated_time")),
            "_loaded_at": self.loaded_at,
        }
        for key in ("campaign_id", "adset_id"):
            if key in raw:
                row[key] = str(raw[key])
        for key in ("objective", "buying_type", "bid_strategy", "optimization_goal", "billing_event"):
            if key in raw:
                row[key] = raw[key]
        for key in ("daily_budget", "lifetime_budget"):
            if key in raw:
                row[key] = _int(raw[key])
        for key in ("start_time", "stop_time", "end_time"):
            if key in raw:
                row[key] = _ts(raw[key])
        if "targeting" in raw:
            row["targeting"] = _json(raw["targeting"])
        if "creative" in raw:
            row["creative_id"] = str((raw.get("creative") or {}).get("id") or "") or None
        return row

    # insights ----------------------------------------------------------------------------------

    def account_today(self, account: str) -> dt.date:
        if self.today is not None:
            return self.today
        name = self.account(account).get("timezone_name") or "UTC"
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return dt.datetime.now(zone).date()

    def insight_range(self, account: str, cursor: Mapping[str, Any] | None) -> tuple[dt.date, dt.date]:
        """(since, until) for this run: the back-fill on the first run, else from the day after the last
        loaded one or the start of the re-fetch window, whichever is earlier; never beyond 37 months."""
        today = self.account_today(account)
        earliest = earliest_insights_date(today)
        if cursor and cursor.get("last_day"):
            last_day = dt.date.fromisoformat(cursor["last_day"])
            since = min(last_day + dt.timedelta(days=1), today - dt.timedelta(days=self.refetch_days - 1))
        else:
            since = self.start_date or earliest
        if since < earliest:
            logger.warning(
                "%s: the Insights API keeps %d months of data; start %s clamped to %s",
                account,
                INSIGHTS_RETENTION_MONTHS,
                since,
                earliest,
            )
            self.stats.clamped[account] = earliest.isoformat()
            since = earliest
        return since, today

    def insight_rows(self, account: str, since: dt.date, until: dt.date) -> Iterator[list[dict[str, Any]]]:
        """Rows of [since, until], one list per window of at most days_per_request days."""
        table = insights_table(self.breakdowns)
        for start, end in _windows(since, until, self.days_per_request):
            raw = self._fetch(account, start, end)
            rows = [self._insight(r) for r in raw]
            self.stats.count(account, table, len(rows))
            key = (*GRAIN, *self.breakdowns)
            yield self.changed(table, rows, key, {"account_id": _digits(account), "date_start": (start, end)})

    def _params(self, since: dt.date, until: dt.date) -> dict[str, Any]:
        params: dict[str, Any] = {
            "level": "ad",
            "time_increment": 1,
            "time_range": {"since": since.isoformat(), "until": until.isoformat()},
            "fields": INSIGHT_FIELDS,
        }
        if self.breakdowns:
            params["breakdowns"] = ",".join(self.breakdowns)
        return params

    def _fetch(self, account: str, since: dt.date, until: dt.date, *, sync: bool = False) -> list[dict]:
        days = (until - since).days + 1
        use_async = not sync and days >= self.async_min_days
        how = "async" if use_async else "sync"
        self.stats.ranges.setdefault(account, []).append((since.isoformat(), until.isoformat(), how))
        params = self._params(since, until)
        try:
            if use_async:
                return self.client.run_report(account, params)
            return self.client.collect(f"{account}/insights", params)
        except (TooMuchData, ReportJobFailed) as exc:
            reason = "too much data" if isinstance(exc, TooMuchData) else "report run failed"
            if days == 1:
                if use_async:  # one day through the synchronous endpoint is the last resort
                    return self._fetch(account, since, until, sync=True)
                raise FacebookApiError(
                    f"{account}: the API refuses even one day ({since}) of ad-level insights: {exc}. "
                    "Enable fewer breakdowns or fields",
                    code=exc.code,
                    subcode=exc.subcode,
                ) from None
            middle = since + dt.timedelta(days=days // 2 - 1)
            logger.warning(
                "%s: %s for %s..%s (%s); splitting the range in two", account, reason, since, until, exc
            )
            self.stats.splits.append(
                {"account": account, "since": since.isoformat(), "until": until.isoformat(), "reason": reason}
            )
            return self._fetch(account, since, middle) + self._fetch(
                account, middle + dt.timedelta(days=1), until
            )

    def _insight(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "account_id": str(raw.get("account_id")),
            "campaign_id": str(raw.get("campaign_id")),
            "adset_id": str(raw.get("adset_id")),
            "ad_id": str(raw.get("ad_id")),
            "date_start": dt.date.fromisoformat(raw["date_start"]),
            "date_stop": _date(raw.get("date_stop")),
        }
        for breakdown in self.breakdowns:
            row[breakdown] = str(raw.get(breakdown, ""))
        row.update(
            {
                "account_name": raw.get("account_name"),
                "account_currency": raw.get("account_currency"),
                "campaign_name": raw.get("campaign_name"),
                "adset_name": raw.get("adset_name"),
                "ad_name": raw.get("ad_name"),
                "spend": _dec(raw.get("spend")),
                "impressions": _int(raw.get("impressions")),
                "reach": _int(raw.get("reach")),
                "clicks": _int(raw.get("clicks")),
                "frequency": _float(raw.get("frequency")),
                "actions": _json(raw.get("actions") or []),
                "action_values": _json(raw.get("action_values") or []),
                "_loaded_at": self.loaded_at,
            }
        )
        return row


# -- the dlt source --------------------------------------------------------------------------------


@dlt.source(name="facebook_ads", section="facebook_ads", max_table_nesting=0)
def facebook_ads_source(
    account_ids: str = dlt.config.value,
    access_token: TSecretStrValue = dlt.secrets.value,
    base_url: str = DEFAULT_BASE_URL,
    api_version: str = DEFAULT_API_VERSION,
    app_secret: TSecretStrValue | None = None,
    start_date: str | None = None,
    today: str | None = None,
    refetch_days: int = DEFAULT_REFETCH_DAYS,
    breakdowns: str = "",
    days_per_request: int = DEFAULT_DAYS_PER_REQUEST,
    async_min_days: int = DEFAULT_ASYNC_MIN_DAYS,
    client_settings: dict[str, Any] | None = None,
    stats: LoadStats | None = None,
    bronze: BronzeVersions | None = None,
) -> Iterator[Any]:
    """Ad accounts, campaigns, ad sets, ads and daily ad-level insights of `account_ids`.

    Configuration (environment or .dlt/config.toml + secrets.toml, section sources.facebook_ads):
    ACCESS_TOKEN (secret), ACCOUNT_IDS (JSON list or comma-separated), BASE_URL, API_VERSION, START_DATE,
    TODAY (the API's "today", for tests and the demo's simulated world), REFETCH_DAYS, BREAKDOWNS,
    DAYS_PER_REQUEST, ASYNC_MIN_DAYS, CLIENT_SETTINGS (JSON of client.ClientSettings fields).
    `bronze`: rows equal to their bronze version are dropped (see bronze_versions.py); None loads them all.
    """
    accounts = normalize_account_ids(account_ids)
    if not accounts:
        raise FacebookAdsError(
            "no ad accounts configured: set SOURCES__FACEBOOK_ADS__ACCOUNT_IDS=act_<id>,..."
        )
    breakdown_list = _names(breakdowns)
    client = GraphClient(
        access_token,
        base_url=base_url,
        api_version=api_version,
        app_secret=app_secret,
        settings=ClientSettings.from_mapping(client_settings),
    )
    run_stats = stats if stats is not None else LoadStats()
    run_stats.client = client.stats
    extractor = Extractor(
        client,
        stats=run_stats,
        loaded_at=dt.datetime.now(dt.UTC),
        breakdowns=breakdown_list,
        refetch_days=refetch_days,
        start_date=_date(start_date),
        today=_date(today),
        days_per_request=days_per_request,
        async_min_days=async_min_days,
        bronze=bronze,
    )

    @dlt.resource(name="ad_accounts", write_disposition="merge", primary_key="id", columns=ACCOUNT_COLUMNS)
    def ad_accounts() -> Iterator[list[dict[str, Any]]]:
        yield [row for account in accounts for row in extractor.changed_account_rows(account)]

    def entity_resource(edge: str, table: str, columns: dict[str, Any]) -> Any:
        @dlt.resource(name=table, write_disposition="merge", primary_key="id", columns=columns)
        def entities() -> Iterator[list[dict[str, Any]]]:
            for account in accounts:
                yield extractor.entity_rows(account, edge, table)

        return entities

    table = insights_table(breakdown_list)

    @dlt.resource(
        name=table,
        write_disposition="merge",
        primary_key=[*GRAIN, *breakdown_list],
        columns=insight_columns(breakdown_list),
    )
    def ad_insights() -> Iterator[list[dict[str, Any]]]:
        state = dlt.current.resource_state().setdefault("accounts", {})
        for account in accounts:
            since, until = extractor.insight_range(account, state.get(account))
            logger.info("%s: insights %s..%s", account, since, until)
            yield from extractor.insight_rows(account, since, until)
            # only reached when every window of the account was read; committed with the data
            state[account] = {"last_day": until.isoformat(), "loaded_at": extractor.loaded_at.isoformat()}

    yield ad_accounts
    yield entity_resource("campaigns", "campaigns", CAMPAIGN_COLUMNS)
    yield entity_resource("adsets", "ad_sets", ADSET_COLUMNS)
    yield entity_resource("ads", "ads", AD_COLUMNS)
    yield ad_insights


# -- running it --------------------------------------------------------------------------------------


def load_facebook(
    warehouse_url: str,
    *,
    base_url: str | None = None,
    access_token: str | None = None,
    account_ids: Sequence[str] | str | None = None,
    pipelines_dir: str | None = None,
    bronze_schema: str | None = None,
    api_version: str | None = None,
    start_date: dt.date | str | None = None,
    today: dt.date | str | None = None,
    refetch_days: int | None = None,
    breakdowns: Sequence[str] | None = None,
    days_per_request: int | None = None,
    async_min_days: int | None = None,
    client_settings: ClientSettings | Mapping[str, Any] | None = None,
    full_refresh: bool = False,
    progress: str | None = "log",
    run_id: str | None = None,
    processing_log: bool = True,
) -> FacebookLoadResult:
    """Run the Facebook Ads pipeline once. Arguments left as None come from dlt configuration
    (SOURCES__FACEBOOK_ADS__<NAME> environment variables, .dlt/config.toml, .dlt/secrets.toml).

    Raises FacebookAdsError (FacebookAuthError, FacebookThrottled, FacebookApiError) with a message safe to
    print; nothing of a failed run is committed. Returns the LoadInfo and what the run did."""
    from loaders.destinations import dlt_destination
    from loaders.postgres import drop_views_on
    from loaders.processing_log import ProcessingLog, new_run_id

    schema = bronze_schema or bronze_schema_from_env()
    run_id = run_id or new_run_id()
    stats = LoadStats()
    settings = asdict(client_settings) if isinstance(client_settings, ClientSettings) else client_settings
    overrides = {
        "base_url": base_url,
        "access_token": access_token,
        "account_ids": normalize_account_ids(account_ids) if account_ids is not None else None,
        "api_version": api_version,
        "start_date": _date(start_date).isoformat() if start_date else None,
        "today": _date(today).isoformat() if today else None,
        "refetch_days": refetch_days,
        "breakdowns": list(breakdowns) if breakdowns is not None else None,
        "days_per_request": days_per_request,
        "async_min_days": async_min_days,
        "client_settings": dict(settings) if settings is not None else None,
    }
    redactor = Redactor(access_token or _configured_token())
    scrub = ScrubFilter(redactor)
    watched = [logging.getLogger("loaders.facebook"), logging.getLogger("dlt")]
    for log in watched:
        log.addFilter(scrub)
    plog = ProcessingLog(warehouse_url, component="facebook_ads") if processing_log else None
    # a full refresh drops bronze: every row must be loaded, none compared
    bronze = None if full_refresh else BronzeVersions(warehouse_url, schema)
    entry = plog.start(run_id, layer="bronze", payload_type="facebook_ads") if plog else None
    try:
        os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
        os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID", "true")
        destination = dlt_destination(warehouse_url)
        pipeline = dlt.pipeline(
            pipeline_name=f"facebook_ads_to_{schema}",
            **destination.pipeline_kwargs,
            dataset_name=schema,
            pipelines_dir=pipelines_dir,
            progress=progress,
        )
        source = facebook_ads_source(
            stats=stats, bronze=bronze, **{k: v for k, v in overrides.items() if v is not None}
        )
        for resource in source.resources.values():
            if bronze is not None and isinstance(resource.columns, dict):
                bronze.json_columns[resource.name] = frozenset(
                    name for name, hint in resource.columns.items() if hint.get("data_type") == "json"
                )
            if destination.json_as_text and isinstance(resource.columns, dict):
                resource.apply_hints(columns=destination.column_hints(resource.columns))
        if pipeline.has_pending_data:
            # an interrupted run left a complete package: finish it first, or run() would load only that
            logger.warning("finishing the load package of an interrupted run before extracting")
            pending = pipeline.run(**destination.run_kwargs)
            if pending is not None:
                pending.raise_on_failed_jobs()
        if full_refresh:  # dlt drops bronze's tables, which dbt's views on them would block
            stats.views_dropped = drop_views_on(warehouse_url, schema)
        info = pipeline.run(
            source, **destination.run_kwargs, refresh="drop_sources" if full_refresh else None
        )
        info.raise_on_failed_jobs()
    except PipelineStepFailed as exc:
        root = _facebook_error(exc)
        message = redactor.scrub(str(root) if root is not None else f"{type(exc).__name__}: {exc}")
        _finish(plog, entry, "failed", message, stats)
        if root is not None:
            raise root from None
        raise
    except FacebookAdsError as exc:
        _finish(plog, entry, "failed", redactor.scrub(str(exc)), stats)
        raise
    except BaseException as exc:
        root = _facebook_error(exc)
        message = redactor.scrub(str(root) if root is not None else f"{type(exc).__name__}: {exc}")
        _finish(plog, entry, "failed", message, stats)
        if root is not None:
            raise root from None
        raise
    finally:
        for log in watched:
            log.removeFilter(scrub)
        if bronze is not None:
            bronze.close()
    _finish(plog, entry, "completed", None, stats)
    return FacebookLoadResult(info=info, stats=stats, run_id=run_id)


def _configured_token() -> str | None:
    """The token dlt would resolve from its configuration, so that messages can be scrubbed of it too."""
    try:
        value = dlt.secrets.get("sources.facebook_ads.access_token")
    except Exception:  # not configured: the source will say so
        return None
    return str(value) if value else None


def _finish(plog: Any, entry: Any, status: str, message: str | None, stats: LoadStats) -> None:
    if plog is None or entry is None:
        return
    try:
        total = sum(n for per_table in stats.rows.values() for n in per_table.values())
        details = {
            "rows": stats.rows,
            "insight_ranges": stats.ranges,
            "splits": stats.splits,
            "clamped": stats.clamped,
            "client": stats.client.as_dict() if stats.client is not None else None,
            # re-read rows equal to their bronze version, not loaded again (they keep their _loaded_at)
            "unchanged_rows_skipped": dict(sorted(stats.skipped.items())),
            "views_dropped": stats.views_dropped,
        }
        if status == "completed":
            loaded = total - sum(stats.skipped.values())  # the rows extracted are in details["rows"]
            counts = {"records_processed": loaded, "records_loaded": loaded, "records_invalid": 0}
            plog.finish(entry, status, message=message, details=details, **counts)
        else:  # nothing of a failed run is committed
            plog.finish(entry, status, message=message, details=details)
    finally:
        plog.close()


def _facebook_error(exc: BaseException) -> FacebookAdsError | None:
    """The FacebookAdsError at the root of a dlt failure, if there is one (missing configuration too)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, FacebookAdsError):
            return current
        if isinstance(current, ConfigFieldMissingException):
            names = ", ".join(f"SOURCES__FACEBOOK_ADS__{f.upper()}" for f in current.fields)
            return FacebookAdsError(
                f"missing Facebook Ads configuration: set {names} (environment or .dlt/secrets.toml); "
                "see docs/facebook_loader.md"
            )
        seen.add(id(current))
        current = current.__cause__ or current.__context__ or getattr(current, "exception", None)
    return None

"""A small Graph API (Marketing API) client: cursor paging, asynchronous insights jobs, errors by code.

Why not the official SDK: the loader needs exactly four things the SDK leaves to its caller, and they are
easier to get right in one place than around it:

- **Errors are classified by the Graph error code** of the JSON envelope
  `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`, never by the HTTP status alone
  (a throttled call is usually HTTP 400, like a bad parameter):
  throttling (4, 17, 32, 613, 80000-80014) waits as long as the usage headers say, within a total budget;
  an expired or invalid token (190, 102) and missing permissions (10, 200-299) fail at once with a message
  that says what to do; "too much data" (100 / 1487534, or the "Please reduce the amount of data" message)
  and invalid cursors (2642) are raised as their own exceptions so the caller can split the date range or
  restart the range; transient errors (1, 2, HTTP 5xx, connection errors) are retried a few times.
- **The access token never leaves the Authorization header.** `paging.next` links returned by the API
  carry `access_token=...` in their query string, so the client pages with `paging.cursors.after` and, if
  it ever has to follow a `next` link, strips the token from it first. Every message this module raises or
  logs passes through `Redactor.scrub`, which masks the token and the appsecret_proof wherever they appear.
- **Waits honour the API but can be compressed**: `time_scale` multiplies every real sleep (tests use
  0.001), while budgets and the logged waits stay in API time, so the logic is the same at any scale.
- **Asynchronous report runs** (POST /act_x/insights -> report_run_id, poll /<report_run_id>, read
  /<report_run_id>/insights) detect "Job Failed" / "Job Skipped" and stalled jobs (no progress for
  `stall_polls` polls) and raise `ReportJobFailed`, which the caller answers by splitting the range.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

logger = logging.getLogger("loaders.facebook")

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"

THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
AUTH_CODES = frozenset({102, 190})
PERMISSION_CODES = frozenset({10, *range(200, 300)})
TRANSIENT_CODES = frozenset({1, 2})
INVALID_CURSOR_CODE = 2642
TOO_MUCH_DATA_SUBCODE = 1487534
TOO_MUCH_DATA_TEXT = "reduce the amount of data"
TOKEN_SUBCODES = {
    458: "the app is no longer installed for the token's user",
    459: "the user is checkpointed",
    460: "the user's password changed",
    463: "the token has expired",
    464: "the user is not confirmed",
    467: "the token is invalid",
    492: "the session is invalid",
}
JOB_DONE = "Job Completed"
JOB_FAILED = frozenset({"Job Failed", "Job Skipped"})


# -- exceptions: every message is already scrubbed ----------------------------------------------


class FacebookAdsError(RuntimeError):
    """The Facebook Ads load failed; the message says why (and never contains the access token)."""


class FacebookAuthError(FacebookAdsError):
    """The access token is expired, invalid or lacks permissions: retrying cannot help."""


class FacebookThrottled(FacebookAdsError):
    """The API kept throttling beyond the configured wait budget."""


class FacebookApiError(FacebookAdsError):
    """Any other Graph API error, with its code, subcode and fbtrace_id."""

    def __init__(self, message: str, *, code: int | None = None, subcode: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode


class TooMuchData(FacebookApiError):
    """The request covers too much data: ask for a shorter date range."""


class InvalidCursor(FacebookApiError):
    """A paging cursor was rejected mid-way: restart reading the range from its first page."""


class ReportJobFailed(FacebookApiError):
    """An asynchronous report run failed, was skipped or stalled: split the range and retry."""


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """Tuning of the client; the defaults suit the real API. Durations are in API seconds (see time_scale)."""

    page_size: int = 500
    timeout_seconds: float = 120.0
    throttle_budget_seconds: float = 1800.0  # total wait on throttling per run before failing cleanly
    throttle_fallback_seconds: float = 60.0  # first wait when the headers give no estimate (then doubles)
    transient_retries: int = 5  # attempts after the first for error codes 1 / 2, HTTP 5xx, network errors
    transient_backoff_seconds: float = 2.0  # first wait between transient retries (then doubles)
    poll_interval_seconds: float = 5.0  # between polls of an asynchronous report run
    stall_polls: int = 24  # polls without any progress before a report run counts as stalled
    job_timeout_seconds: float = 3600.0  # a report run not done by then counts as stalled too
    cursor_restarts: int = 3  # restarts of one range after invalid cursors before giving up
    time_scale: float = 1.0  # multiplies every real sleep; tests use e.g. 0.001

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ClientSettings:
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class ClientStats:
    """What the client did, for logs, the processing log and tests."""

    requests: int = 0
    throttled: int = 0
    throttle_waits: list[float] = field(default_factory=list)  # API seconds waited, one per throttle
    transient_retries: int = 0
    invalid_cursors: int = 0
    report_runs: int = 0
    failed_report_runs: int = 0
    stalled_report_runs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


# -- secrets ---------------------------------------------------------------------------------------


class Redactor:
    """Masks secrets in any text: the exact values it knows plus anything shaped like a token parameter."""

    _PARAM = re.compile(r"(?i)\b(access_token|appsecret_proof|client_secret)=([^&\s\"']+)")
    _HEADER = re.compile(r"(?i)\b(Bearer|OAuth)\s+[A-Za-z0-9._\-|%]{8,}")

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def scrub(self, text: Any) -> str:
        result = str(text)
        for secret in self.secrets:
            result = result.replace(secret, "****")
        result = self._PARAM.sub(lambda m: f"{m.group(1)}=****", result)
        return self._HEADER.sub(lambda m: f"{m.group(1)} ****", result)


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs secrets from records of the loader's logger (defence in depth)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.scrub(record.getMessage())
        record.args = ()
        return True


# -- usage headers ---------------------------------------------------------------------------------


def throttle_wait_hint(headers: Mapping[str, str]) -> float | None:
    """Seconds the usage headers ask us to wait, or None when they say nothing.

    x-business-use-case-usage: {"<business or account id>": [{"type", "call_count", "total_cputime",
    "total_time", "estimated_time_to_regain_access" (minutes)}]}; x-ad-account-usage: {"acc_id_util_pct",
    "reset_time_duration" (seconds)}; Retry-After (seconds) if a proxy adds it."""
    waits: list[float] = []
    buc = _json_header(headers, "x-business-use-case-usage")
    if isinstance(buc, dict):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                if isinstance(entry, dict) and entry.get("estimated_time_to_regain_access") is not None:
                    waits.append(float(entry["estimated_time_to_regain_access"]) * 60)
    account = _json_header(headers, "x-ad-account-usage")
    if isinstance(account, dict) and account.get("reset_time_duration") is not None:
        waits.append(float(account["reset_time_duration"]))
    retry_after = headers.get("retry-after")
    if retry_after and retry_after.strip().isdigit():
        waits.append(float(retry_after))
    positive = [w for w in waits if w > 0]
    return max(positive) if positive else None


def usage_summary(headers: Mapping[str, str]) -> dict[str, Any]:
    """The highest utilisation percentages the three usage headers report (for the throttle log line)."""
    summary: dict[str, Any] = {}
    app = _json_header(headers, "x-app-usage")
    if isinstance(app, dict):
        summary["app_pct"] = max((float(v) for v in app.values() if isinstance(v, int | float)), default=0)
    account = _json_header(headers, "x-ad-account-usage")
    if isinstance(account, dict) and "acc_id_util_pct" in account:
        summary["ad_account_pct"] = account["acc_id_util_pct"]
    buc = _json_header(headers, "x-business-use-case-usage")
    if isinstance(buc, dict):
        pcts = [
            float(entry.get(k, 0))
            for entries in buc.values()
            for entry in (entries if isinstance(entries, list) else [entries])
            if isinstance(entry, dict)
            for k in ("call_count", "total_cputime", "total_time")
        ]
        summary["business_use_case_pct"] = max(pcts, default=0)
    return summary


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = headers.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# -- the client ------------------------------------------------------------------------------------


class GraphClient:
    """GET / POST against `<base_url>/<api_version>/...` with the token in the Authorization header."""

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        app_secret: str | None = None,
        settings: ClientSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        if not access_token or not str(access_token).strip():
            raise FacebookAuthError(
                "no Facebook access token: set SOURCES__FACEBOOK_ADS__ACCESS_TOKEN (a system user token "
                "with the ads_read permission) or pass access_token"
            )
        self._token = str(access_token).strip()
        self._proof = (
            hmac.new(app_secret.encode(), self._token.encode(), hashlib.sha256).hexdigest()
            if app_secret
            else None
        )
        self.redactor = Redactor(self._token, self._proof, app_secret)
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version.strip("/")
        self.settings = settings or ClientSettings()
        self.stats = ClientStats()
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {self._token}"})
        self._throttle_waited = 0.0

    # public ------------------------------------------------------------------------------------

    def close(self) -> None:
        self._session.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._request("GET", path, params)

    def post(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._request("POST", path, params)

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        """The `data` of each page of an edge, following `paging.cursors.after` while `paging.next` is
        present. Raises InvalidCursor if the API rejects a cursor part-way (the caller restarts)."""
        query = {**(params or {}), "limit": self.settings.page_size}
        while True:
            body = self.get(path, query)
            data = body.get("data") or []
            yield data
            paging = body.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not data or not paging.get("next"):
                return
            if after:
                query = {**query, "after": after}
            else:  # only a next link: take its parameters, minus any credentials
                path, query = self._split_next(paging["next"])

    def collect(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every row of an edge; an invalid cursor restarts the listing from its first page."""
        for attempt in range(self.settings.cursor_restarts + 1):
            try:
                return [row for page in self.pages(path, params) for row in page]
            except InvalidCursor as exc:
                self._cursor_restart(exc, attempt, path)
        raise AssertionError("unreachable")

    def run_report(self, account_path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One asynchronous insights report: create, poll until done, read every page of its result.
        Raises ReportJobFailed when the run fails, is skipped or stalls (the caller splits the range)."""
        created = self.post(f"{account_path}/insights", params)
        run_id = str(created.get("report_run_id") or created.get("id") or "")
        if not run_id:
            raise FacebookApiError(f"no report_run_id in the answer to POST {account_path}/insights")
        self.stats.report_runs += 1
        settings = self.settings
        best, unchanged, waited = -1.0, 0, 0.0
        while True:
            self._wait(settings.poll_interval_seconds)
            waited += settings.poll_interval_seconds
            job = self.get(run_id, {"fields": "id,async_status,async_percent_completion"})
            status = str(job.get("async_status", ""))
            percent = float(job.get("async_percent_completion") or 0)
            if status == JOB_DONE and percent >= 100:
                break
            if status in JOB_FAILED:
                self.stats.failed_report_runs += 1
                detail = job.get("error_message") or job.get("error_user_msg") or ""
                raise ReportJobFailed(
                    self.redactor.scrub(f"report run {run_id} ended with {status!r} {detail}".strip())
                )
            unchanged = unchanged + 1 if percent <= best else 0
            best = max(best, percent)
            if unchanged >= settings.stall_polls or waited >= settings.job_timeout_seconds:
                self.stats.stalled_report_runs += 1
                raise ReportJobFailed(
                    f"report run {run_id} stalled at {percent:.0f}% ({status}) for {unchanged} polls"
                )
        for attempt in range(settings.cursor_restarts + 1):
            try:
                return [row for page in self.pages(f"{run_id}/insights") for row in page]
            except InvalidCursor as exc:
                self._cursor_restart(exc, attempt, f"{run_id}/insights")
        raise AssertionError("unreachable")

    # internals ---------------------------------------------------------------------------------

    def _cursor_restart(self, exc: InvalidCursor, attempt: int, what: str) -> None:
        self.stats.invalid_cursors += 1
        if attempt >= self.settings.cursor_restarts:
            raise FacebookApiError(
                f"{what}: paging cursors kept being rejected ({attempt + 1} times): {exc}",
                code=exc.code,
                subcode=exc.subcode,
            ) from None
        logger.warning("%s: invalid paging cursor (%s); reading the range again from its start", what, exc)

    def _split_next(self, next_url: str) -> tuple[str, dict[str, Any]]:
        parts = urlsplit(next_url)
        path = parts.path
        prefix = f"/{self.api_version}/"
        path = path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
        query = {k: v for k, v in parse_qsl(parts.query) if k not in ("access_token", "appsecret_proof")}
        return path, query

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{self.api_version}/{path.lstrip('/')}"

    def _wait(self, api_seconds: float) -> None:
        if api_seconds > 0:
            self._sleep(api_seconds * self.settings.time_scale)

    def _request(self, method: str, path: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        if self._proof:
            query["appsecret_proof"] = self._proof
        transient = 0
        fallback = self.settings.throttle_fallback_seconds
        where = f"{method} /{self.api_version}/{path.lstrip('/')}"
        while True:
            self.stats.requests += 1
            try:
                response = self._session.request(
                    method,
                    self._url(path),
                    params=query if method == "GET" else None,
                    data=query if method != "GET" else None,
                    timeout=self.settings.timeout_seconds,
                )
            except requests.RequestException as exc:
                reason = self.redactor.scrub(f"{type(exc).__name__}: {exc}")
                transient = self._retry_transient(transient, where, reason)
                continue
            body = _body(response)
            error = body.get("error") if isinstance(body, dict) else None
            if response.ok and not error:
                return body if isinstance(body, dict) else {"data": body}
            kind, message, code, subcode = self._classify(response, error)
            if kind == "throttle":
                fallback = self._throttle(response, where, message, fallback)
                continue
            if kind == "transient":
                transient = self._retry_transient(transient, where, message)
                continue
            if kind == "auth":
                raise FacebookAuthError(self._auth_message(code, subcode, message))
            if kind == "permission":
                raise FacebookAuthError(
                    f"{where}: the access token lacks a permission ({message}). Give the system user "
                    "the ads_read permission and access to the ad account (Business Manager > System "
                    "users > Assign assets), then generate a new token"
                )
            exc_type = {"too_much_data": TooMuchData, "invalid_cursor": InvalidCursor}.get(
                kind, FacebookApiError
            )
            raise exc_type(f"{where}: {message}", code=code, subcode=subcode)

    def _classify(
        self, response: requests.Response, error: dict[str, Any] | None
    ) -> tuple[str, str, int | None, int | None]:
        """(kind, scrubbed message, code, subcode); kind by the Graph error code, HTTP status only when
        there is no error envelope."""
        if not isinstance(error, dict):
            text = self.redactor.scrub(response.text[:300])
            message = f"HTTP {response.status_code} without a Graph error envelope: {text}"
            if response.status_code == 429:
                return "throttle", message, None, None
            return ("transient" if response.status_code >= 500 else "fatal"), message, None, None
        code = _int(error.get("code"))
        subcode = _int(error.get("error_subcode"))
        text = str(error.get("message", ""))
        message = self.redactor.scrub(
            f"{text} (type {error.get('type')}, code {code}, subcode {subcode}, "
            f"fbtrace_id {error.get('fbtrace_id')})"
        )
        if code in AUTH_CODES:
            return "auth", message, code, subcode
        if code in THROTTLE_CODES:
            return "throttle", message, code, subcode
        if subcode == TOO_MUCH_DATA_SUBCODE or TOO_MUCH_DATA_TEXT in text.lower():
            return "too_much_data", message, code, subcode
        if code == INVALID_CURSOR_CODE or ("cursor" in text.lower() and code == 100):
            return "invalid_cursor", message, code, subcode
        if code in PERMISSION_CODES:
            return "permission", message, code, subcode
        if code in TRANSIENT_CODES or error.get("is_transient") is True or response.status_code >= 500:
            return "transient", message, code, subcode
        return "fatal", message, code, subcode

    def _throttle(self, response: requests.Response, where: str, message: str, fallback: float) -> float:
        """Wait as long as the API asks (or the fallback, doubling); fail cleanly past the budget."""
        self.stats.throttled += 1
        hint = throttle_wait_hint(response.headers)
        wait = hint if hint is not None else fallback
        budget = self.settings.throttle_budget_seconds
        if self._throttle_waited + wait > budget:
            raise FacebookThrottled(
                f"{where}: throttled by the Graph API ({message}); it asks to wait {wait / 60:.1f} min, "
                f"but {self._throttle_waited / 60:.1f} of the {budget / 60:.1f} min wait budget are used. "
                "Nothing was loaded: run again later, or raise throttle_budget_seconds"
            )
        logger.warning(
            "%s: throttled (%s); usage %s; waiting %.0fs as the API asks",
            where,
            message,
            usage_summary(response.headers),
            wait,
        )
        self.stats.throttle_waits.append(wait)
        self._throttle_waited += wait
        self._wait(wait)
        return fallback if hint is not None else fallback * 2

    def _retry_transient(self, attempt: int, where: str, reason: str) -> int:
        if attempt >= self.settings.transient_retries:
            raise FacebookApiError(f"{where}: still failing after {attempt + 1} attempts: {reason}")
        wait = self.settings.transient_backoff_seconds * 2**attempt
        logger.warning("%s: transient error (%s); retrying in %.0fs", where, reason, wait)
        self.stats.transient_retries += 1
        self._wait(wait)
        return attempt + 1

    def _auth_message(self, code: int | None, subcode: int | None, message: str) -> str:
        reason = TOKEN_SUBCODES.get(subcode or 0, "the token was rejected")
        return (
            f"Facebook rejected the access token: {reason} ({message}). Nothing was loaded. "
            "Generate a new system user token with the ads_read permission (Business Manager > "
            "Business settings > Users > System users > Generate new token), store it in "
            "SOURCES__FACEBOOK_ADS__ACCESS_TOKEN (or .dlt/secrets.toml) and run again"
        )


def _param(value: Any) -> str:
    """Graph API parameters: lists and dicts as JSON, booleans lowercase, the rest as text."""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def chunked(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]

"""Unit tests of the Graph API client and the loader's pure helpers (no server, no database)."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from loaders.facebook.client import GraphClient, Redactor, ScrubFilter, throttle_wait_hint, usage_summary
from loaders.facebook.pipeline import (
    FacebookAdsError,
    _windows,
    earliest_insights_date,
    insights_table,
    normalize_account_ids,
)

TOKEN = "EAAGunit0Secret0Token0abc123"


def test_redactor_masks_the_token_anywhere_and_token_shaped_parameters():
    redactor = Redactor(TOKEN, None)
    text = (
        f"GET https://graph.facebook.com/v21.0/act_1/insights?access_token={TOKEN}&after=QVFI "
        f"Authorization: Bearer {TOKEN} appsecret_proof=deadbeef00 and 'other_token=x' {TOKEN[:-1]}"
    )
    scrubbed = redactor.scrub(text)
    assert TOKEN not in scrubbed and "deadbeef00" not in scrubbed
    assert "access_token=****" in scrubbed and "Bearer ****" in scrubbed and "after=QVFI" in scrubbed
    # a different token that only looks like a parameter is masked by shape
    assert Redactor().scrub("next: /x?access_token=EAAother&limit=5") == "next: /x?access_token=****&limit=5"


def test_scrub_filter_cleans_log_records(caplog):
    log = logging.getLogger("loaders.facebook.unit")
    scrub = ScrubFilter(Redactor(TOKEN))
    log.addFilter(scrub)
    try:
        with caplog.at_level("WARNING", logger="loaders.facebook.unit"):
            log.warning("failed %s with %s", "GET", f"https://h/x?access_token={TOKEN}")
    finally:
        log.removeFilter(scrub)
    assert TOKEN not in caplog.text and "access_token=****" in caplog.text


def test_the_next_link_is_followed_without_its_token():
    client = GraphClient(TOKEN, base_url="http://127.0.0.1:9", api_version="v21.0")
    path, query = client._split_next(
        f"http://127.0.0.1:9/v21.0/123/insights?access_token={TOKEN}&limit=50&after=QUZ&appsecret_proof=ab"
    )
    assert path == "123/insights" and query == {"limit": "50", "after": "QUZ"}
    client.close()


def test_throttle_hints_come_from_the_usage_headers():
    buc = {"123": [{"type": "ads_insights", "call_count": 100, "estimated_time_to_regain_access": 7}]}
    assert throttle_wait_hint({"x-business-use-case-usage": json.dumps(buc)}) == 420
    account = {"acc_id_util_pct": 100, "reset_time_duration": 300}
    headers = {"x-ad-account-usage": json.dumps(account), "x-business-use-case-usage": json.dumps(buc)}
    assert throttle_wait_hint(headers) == 420  # the longest estimate wins
    assert throttle_wait_hint({"x-ad-account-usage": json.dumps(account)}) == 300
    assert throttle_wait_hint({"retry-after": "30"}) == 30
    zero = {"123": [{"type": "ads_insights", "estimated_time_to_regain_access": 0}]}
    assert throttle_wait_hint({"x-business-use-case-usage": json.dumps(zero)}) is None
    assert throttle_wait_hint({"x-business-use-case-usage": "not json"}) is None
    usage = usage_summary({"x-app-usage": json.dumps({"call_count": 28, "total_time": 9}), **headers})
    assert usage == {"app_pct": 28, "ad_account_pct": 100, "business_use_case_pct": 100}


@pytest.mark.parametrize(
    ("today", "earliest"),
    [
        (dt.date(2024, 3, 15), dt.date(2021, 2, 16)),
        (dt.date(2024, 5, 31), dt.date(2021, 5, 1)),  # April 2021 has no 31st: last day of the month + 1
        (dt.date(2025, 1, 1), dt.date(2021, 12, 2)),
    ],
)
def test_earliest_insights_date_is_37_months_back(today, earliest):
    assert earliest_insights_date(today) == earliest


def test_account_ids_and_names():
    assert normalize_account_ids("act_1, 2,act_1") == ["act_1", "act_2"]
    assert normalize_account_ids(["123", "act_456"]) == ["act_123", "act_456"]
    with pytest.raises(FacebookAdsError, match="act_1234567890"):
        normalize_account_ids(["act_abc"])
    assert insights_table([]) == "ad_insights"
    assert insights_table(["age", "gender"]) == "ad_insights_by_age_gender"
    windows = list(_windows(dt.date(2024, 1, 1), dt.date(2024, 3, 1), 31))
    assert windows[0] == (dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert windows[-1][1] == dt.date(2024, 3, 1) and len(windows) == 2


def test_a_missing_token_is_refused_before_any_call():
    from loaders.facebook.client import FacebookAuthError

    with pytest.raises(FacebookAuthError, match="SOURCES__FACEBOOK_ADS__ACCESS_TOKEN"):
        GraphClient("  ")


def test_missing_configuration_names_the_variables(tmp_path, monkeypatch):
    from loaders.facebook.pipeline import load_facebook

    for name in ("SOURCES__FACEBOOK_ADS__ACCESS_TOKEN", "SOURCES__FACEBOOK_ADS__ACCOUNT_IDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .dlt folder here
    with pytest.raises(FacebookAdsError, match="SOURCES__FACEBOOK_ADS__ACCOUNT_IDS"):
        load_facebook(
            "postgresql://nobody@127.0.0.1:1/none",
            pipelines_dir=str(tmp_path),
            processing_log=False,
            progress=None,
        )

"""The dbt docs site as a BI user sees it: described, and its lineage reaching back to every bronze source.

The manifest checks fail when a gold model, a gold column or a source lacks what a reader needs. The
browser test serves the generated site over HTTP and opens it in Debian's Chromium (headless, started
here through Playwright, which never downloads a browser of its own), checks that the page of
customer_360 shows its columns' descriptions and that its lineage graph reaches the three bronze sources,
and saves the screenshot the README shows.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gold_warehouse import GoldWarehouse, gold_warehouse
from helpers import PROJECT_DIR

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = PROJECT_DIR / "docs" / "images" / "lineage_customer_360.png"
BRONZE_SOURCES = ("operational", "gcs_payloads", "facebook_ads")
PROJECT = "pharma_warehouse"

# one worker builds the shared warehouse for all three modules under `pytest -n N --dist loadgroup`
pytestmark = pytest.mark.xdist_group("gold_warehouse")


@pytest.fixture(scope="module")
def warehouse(embedded_pg, tmp_path_factory) -> GoldWarehouse:
    return gold_warehouse(embedded_pg, tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(warehouse) -> dict:
    return warehouse.manifest()


def gold_models(manifest: dict) -> list[dict]:
    return [
        node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["schema"] == "gold" and node["package_name"] == PROJECT
    ]


def test_every_gold_model_and_column_is_described(manifest, warehouse):
    from helpers import columns

    models = gold_models(manifest)
    assert len(models) >= 12, "the gold marts are missing from the manifest"
    missing = []
    for node in models:
        if not node["description"].strip():
            missing.append(node["name"])
        documented = {name for name, column in node["columns"].items() if column["description"].strip()}
        # every column of the table as built, not only the columns the YAML happens to list
        for column in columns(warehouse.urls["warehouse"], "gold", node["alias"]):
            if column not in documented:
                missing.append(f"{node['name']}.{column}")
    assert not missing, f"gold models / columns without a description: {missing}"


def test_every_source_has_an_owner_a_loader_freshness_and_descriptions(manifest):
    sources = [s for s in manifest["sources"].values() if s["package_name"] == PROJECT]
    assert {s["source_name"] for s in sources} >= set(BRONZE_SOURCES)
    problems = []
    for source in sources:
        name = f"{source['source_name']}.{source['name']}"
        if not source["meta"].get("owner"):
            problems.append(f"{name}: no meta.owner")
        if not source["loader"]:
            problems.append(f"{name}: no loader")
        if not source["source_description"].strip() or not source["description"].strip():
            problems.append(f"{name}: no description")
        problems += [
            f"{name}.{c}: no description" for c, col in source["columns"].items() if not col["description"]
        ]
    freshness_checked = {
        s["source_name"]
        for s in sources
        if s["loaded_at_field"] and (s["freshness"] or {}).get("error_after", {}).get("count")
    }
    assert not problems, problems
    assert freshness_checked >= set(BRONZE_SOURCES), "every bronze source needs a freshness check"


def test_exposures_end_lineage_at_the_bi_dashboards(manifest):
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    for name in ("sales_dashboard", "customer_360_dashboard", "marketing_dashboard", "data_health_dashboard"):
        assert name in exposures, f"exposure {name} is missing"
        exposure = exposures[name]
        assert exposure["type"] == "dashboard" and exposure["owner"]["name"] and exposure["description"]
        parents = [
            manifest["nodes"][uid] for uid in exposure["depends_on"]["nodes"] if uid.startswith("model.")
        ]
        assert parents and all(node["schema"] == "gold" for node in parents), f"{name} must read gold only"


@pytest.fixture(scope="module")
def docs_url(warehouse) -> Iterator[str]:
    """The generated site (target/index.html + manifest.json + catalog.json) served like `dbt docs serve`."""
    handler = functools.partial(_QuietHandler, directory=str(warehouse.target_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the site's requests are not news
        pass


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A page in Debian's headless Chromium with a fresh profile; Playwright only drives it."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-chromium (make test-deps)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 800},
            device_scale_factor=1.5,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def open_customer_360(page, docs_url: str) -> None:
    page.goto(f"{docs_url}/index.html#!/model/model.{PROJECT}.customer_360", wait_until="networkidle")
    page.locator("tr.column-row").first.wait_for(timeout=60_000)


def test_the_site_shows_customer_360_column_descriptions(browser_page, docs_url, manifest):
    page = browser_page
    open_customer_360(page, docs_url)
    columns = manifest["nodes"][f"model.{PROJECT}.customer_360"]["columns"]
    for column in ("rfm_segment", "share_resolved"):
        description = " ".join(columns[column]["description"].split())
        row = page.locator("tr.column-row", has_text=column).first
        assert description in " ".join(row.inner_text().split()), f"{column}: description not in its row"
        row.click()  # the expanded row shows the whole description, not an ellipsis
        page.locator(".column-row-selected").first.wait_for(timeout=10_000)
        expanded = page.locator("tr.column-row-selected + tr")
        expect_visible = expanded.get_by_text(description[:40], exact=False).first
        expect_visible.wait_for(state="visible", timeout=10_000)
        row.click()


def test_the_lineage_graph_of_customer_360_reaches_every_bronze_source(browser_page, docs_url):
    page = browser_page
    open_customer_360(page, docs_url)
    # the site's own buttons: the lineage graph of +customer_360+, then full screen
    page.locator("[title='View Lineage Graph']").click()
    page.locator("[title='View Fullscreen']:visible").first.click()
    graph = "angular.element(document.body).injector().get('graph')"
    page.wait_for_function(
        f"() => {{ const g = {graph}; return g.orientation === 'fullscreen' && g.graph_element"
        " && g.graph_element.nodes().length > 0; }",
        timeout=60_000,
    )
    shown = page.evaluate(
        f"() => {graph}.graph_element.nodes().filter(n => n.data('is_group') !== 'true').map(n => n.id())"
    )
    assert f"model.{PROJECT}.customer_360" in shown
    assert f"exposure.{PROJECT}.customer_360_dashboard" in shown, "lineage should end at the dashboard"
    reached = {uid.split(".")[2] for uid in shown if uid.startswith("source.")}
    assert reached >= set(BRONZE_SOURCES), (
        f"lineage of customer_360 reaches only the sources {sorted(reached)}"
    )
    canvas = page.locator("canvas:visible").first.bounding_box()
    assert canvas and canvas["height"] > 300, "the graph is not drawn"

    page.mouse.move(5, 5)  # no tooltip in the picture
    page.wait_for_timeout(1_500)  # the layout animation
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000

"""The semantic layer: every BI metric is defined as specified, and MetricFlow answers what SQL answers.

The metrics are checked twice: in dbt's semantic manifest (name, type, and the measure each one reads,
with its aggregation and model), and by querying them with MetricFlow (`mf query`, from its own venv:
.ci/install-metricflow) on the shared PostgreSQL warehouse, compared with hand-written SQL over the
operational database and the gold tables. MetricFlow runs through `python -m loaders.metricflow`, the
command docs/serving.md documents.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from gold_warehouse import GoldWarehouse, gold_warehouse
from helpers import PROJECT_DIR, query

MF_VENV = Path(os.environ.get("METRICFLOW_VENV", PROJECT_DIR / ".bootstrap" / "metricflow"))

# metric -> (type, inputs): simple metrics read a measure (name, agg, model); ratios divide two metrics
SIMPLE = {
    "revenue": ("revenue", "sum", "fact_orders"),
    "orders": ("order_count", "count_distinct", "fact_orders"),
    "active_customers": ("ordering_customer_count", "count_distinct", "fact_orders"),
    "units": ("units", "sum", "fact_orders"),
    "spend": ("spend", "sum", "fact_ad_performance"),
    "conversions": ("conversions", "sum", "fact_ad_performance"),
    "conversion_value": ("conversion_value", "sum", "fact_ad_performance"),
    "attributed_revenue": ("attributed_revenue", "sum", "campaign_performance"),
    "interactions": ("interaction_count", "count", "fact_customer_interactions"),
    "resolved_interactions": ("resolved_interaction_count", "sum", "fact_customer_interactions"),
}
RATIOS = {
    "average_order_value": ("revenue", "orders"),
    "cost_per_conversion": ("spend", "conversions"),
    "reported_roas": ("conversion_value", "spend"),
    "attributed_roas": ("attributed_revenue", "spend"),
    "resolution_rate": ("resolved_interactions", "interactions"),
}

# one worker builds the shared warehouse for all three modules under `pytest -n N --dist loadgroup`
pytestmark = pytest.mark.xdist_group("gold_warehouse")


@pytest.fixture(scope="module")
def warehouse(embedded_pg, tmp_path_factory) -> GoldWarehouse:
    return gold_warehouse(embedded_pg, tmp_path_factory)


@pytest.fixture(scope="module")
def semantic_manifest(warehouse) -> dict:
    return json.loads((warehouse.target_dir / "semantic_manifest.json").read_text())


def test_every_bi_metric_is_defined_with_its_type_and_measures(semantic_manifest):
    metrics = {m["name"]: m for m in semantic_manifest["metrics"]}
    measures = {
        measure["name"]: (measure["agg"], model["node_relation"]["alias"])
        for model in semantic_manifest["semantic_models"]
        for measure in model["measures"]
    }
    for name, (measure, agg, model) in SIMPLE.items():
        assert name in metrics, f"metric {name} is missing"
        assert metrics[name]["type"] == "simple", name
        assert metrics[name]["type_params"]["measure"]["name"] == measure, name
        assert measures[measure] == (agg, model), f"measure {measure} of {name}"
        assert metrics[name]["description"], f"metric {name} has no description"
    for name, (numerator, denominator) in RATIOS.items():
        assert name in metrics, f"metric {name} is missing"
        params = metrics[name]["type_params"]
        assert metrics[name]["type"] == "ratio", name
        assert (params["numerator"]["name"], params["denominator"]["name"]) == (numerator, denominator), name
        assert metrics[name]["description"], f"metric {name} has no description"


def test_the_time_spine_is_the_calendar_at_day_grain(warehouse, semantic_manifest):
    (spine,) = semantic_manifest["project_configuration"]["time_spines"]
    assert spine["node_relation"]["alias"] == "metricflow_time_spine"
    assert spine["primary_column"] == {"name": "date_day", "time_granularity": "day"}
    ((days, first, last),) = query(
        warehouse.urls["warehouse"],
        "select count(*), min(date_day), max(date_day) from gold.metricflow_time_spine",
    )
    ((calendar_days,),) = query(warehouse.urls["warehouse"], "select count(*) from gold.dim_time")
    assert days == calendar_days and first.isoformat() == "2020-01-01" and last.isoformat() == "2030-12-31"


def mf_query(warehouse: GoldWarehouse, tmp_path: Path, metrics: list[str], group_by: list[str]) -> list[dict]:
    """`mf query ... --csv` through the project's documented command (python -m loaders.metricflow)."""
    if not MF_VENV.joinpath("bin", "mf").exists():
        pytest.fail(f"MetricFlow is not installed in {MF_VENV}: run .ci/install-metricflow (make test-deps)")
    out = tmp_path / "result.csv"
    command = ["query", "--metrics", ",".join(metrics), "--group-by", ",".join(group_by), "--csv", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "loaders.metricflow", *command],
        cwd=warehouse.project_dir,
        env={**warehouse.env, "METRICFLOW_VENV": str(MF_VENV)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0 and out.exists(), result.stdout[-4000:] + result.stderr[-4000:]
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def number(value: str | None) -> Decimal | None:
    return None if value in (None, "", "None") else Decimal(value)


def close(actual: Decimal | None, expected: Decimal | None, places: int = 6) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return abs(actual - Decimal(expected)) < Decimal(10) ** -places


@pytest.fixture(scope="module")
def metrics_by_week(warehouse, tmp_path_factory) -> dict[str, dict]:
    """Every metric by ISO week, in one `mf query` (each run of mf costs ~20 s of start-up)."""
    rows = mf_query(warehouse, tmp_path_factory.mktemp("mf"), [*SIMPLE, *RATIOS], ["metric_time__week"])
    return {row["metric_time__week"][:10]: row for row in rows}


def test_metricflow_sales_metrics_match_the_operational_database(warehouse, metrics_by_week):
    expected = query(
        warehouse.urls["operational"],
        """
        select cast(date_trunc('week', o.order_date) as date), sum(i.total), count(distinct o.id),
               count(distinct o.customer_id), sum(i.quantity)
        from orders as o
        inner join order_items as i on i.order_id = o.id
        where o.status <> 'cancelled'
        group by 1
        """,
    )
    assert len(expected) > 10, "the test warehouse holds too few weeks of orders"
    for week, revenue, orders, customers, units in expected:
        row = metrics_by_week[week.isoformat()]
        assert number(row["revenue"]) == revenue, week
        assert (int(row["orders"]), int(row["active_customers"]), int(row["units"])) == (
            orders,
            customers,
            units,
        )
        assert close(number(row["average_order_value"]), revenue / orders), week
    weeks_with_sales = {week.isoformat() for week, *_ in expected}
    assert {week for week, row in metrics_by_week.items() if number(row["revenue"])} == weeks_with_sales


def test_metricflow_marketing_metrics_match_the_marts(warehouse, metrics_by_week):
    ads = query(
        warehouse.urls["warehouse"],
        """
        select cast(date_trunc('week', date_day) as date), sum(spend), sum(conversions), sum(conversion_value)
        from gold.fact_ad_performance
        group by 1
        """,
    )
    attributed = dict(
        query(
            warehouse.urls["warehouse"],
            "select week_start_date, sum(attributed_revenue) from gold.campaign_performance group by 1",
        )
    )
    assert ads and any(attributed.values()), "no ad spend or attributed revenue in the test warehouse"
    for week, spend, conversions, conversion_value in ads:
        row = metrics_by_week[week.isoformat()]
        assert number(row["spend"]) == spend and number(row["conversions"]) == conversions, week
        assert close(number(row["cost_per_conversion"]), spend / conversions if conversions else None), week
        assert close(number(row["reported_roas"]), conversion_value / spend if spend else None), week
        revenue = attributed.get(week)  # None: no campaign row that week, so no attributed ROAS either
        assert number(row["attributed_revenue"]) == revenue, week
        assert close(
            number(row["attributed_roas"]), revenue / spend if spend and revenue is not None else None
        )


def test_metricflow_service_metrics_match_the_marts(warehouse, metrics_by_week):
    expected = query(
        warehouse.urls["warehouse"],
        """
        select cast(date_trunc('week', interaction_date) as date), count(*),
               sum(case when is_resolved then 1 else 0 end)
        from gold.fact_customer_interactions
        group by 1
        """,
    )
    assert expected, "no interactions in the test warehouse"
    for week, interactions, resolved in expected:
        row = metrics_by_week[week.isoformat()]
        assert int(row["interactions"]) == interactions, week
        assert close(number(row["resolution_rate"]), Decimal(resolved) / interactions), week


def test_metricflow_joins_customer_dimensions(warehouse, tmp_path):
    rows = mf_query(warehouse, tmp_path, ["revenue", "orders"], ["customer__region", "customer__tier"])
    actual = {(row["customer__region"], row["customer__tier"]): row for row in rows}
    expected = query(
        warehouse.urls["operational"],
        """
        select c.region, c.tier, sum(i.total), count(distinct o.id)
        from orders as o
        inner join order_items as i on i.order_id = o.id
        inner join customers as c on c.id = o.customer_id
        where o.status <> 'cancelled'
        group by 1, 2
        """,
    )
    assert len(expected) > 1
    assert {key: (number(r["revenue"]), int(r["orders"])) for key, r in actual.items()} == {
        (region, tier): (revenue, orders) for region, tier, revenue, orders in expected
    }


ANALYSES = (
    "cohort_retention",
    "rfm_distribution",
    "inventory_turnover",
    "supplier_performance",
    "revenue_by_region_and_tier",
)


def test_the_analyses_compile_and_answer_on_the_warehouse(warehouse):
    """`dbt compile` renders every analysis for the target; the SQL runs and its totals reconcile."""
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run(
        [str(dbt), "compile", "--select", "resource_type:analysis"],
        cwd=warehouse.project_dir,
        env=warehouse.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    compiled = warehouse.target_dir / "compiled" / "pharma_warehouse" / "analyses"
    answers = {}
    for name in ANALYSES:
        sql = (compiled / f"{name}.sql").read_text()
        answers[name] = query(warehouse.urls["warehouse"], sql)
        assert answers[name], f"analysis {name} returned no rows"

    ((revenue,),) = query(
        warehouse.urls["operational"],
        "select sum(i.total) from orders as o inner join order_items as i on i.order_id = o.id "
        "where o.status <> 'cancelled'",
    )
    assert sum(row[3] for row in answers["revenue_by_region_and_tier"]) == revenue
    assert sum(row[3] for row in answers["rfm_distribution"]) == revenue
    assert sum(row[6] for row in answers["supplier_performance"]) == revenue
    # month 0 of every cohort is the whole cohort
    assert all(row[3] == row[2] for row in answers["cohort_retention"] if row[1] == 0)
    ((customers,),) = query(warehouse.urls["warehouse"], "select count(*) from gold.customer_360")
    assert sum(row[1] for row in answers["rfm_distribution"]) == customers

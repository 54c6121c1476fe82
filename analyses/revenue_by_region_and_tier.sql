-- Revenue by region and tier, per month: net revenue (non-cancelled order lines, BRL), orders, ordering
-- customers and average order value. The same numbers as the revenue / orders / active_customers /
-- average_order_value metrics grouped by metric_time__month, customer__region, customer__tier.
-- `dbt compile --select revenue_by_region_and_tier` writes the SQL for the current target.
with

fact_orders as (

    -- every day of history: says so explicitly, as BigQuery's fact_orders requires a partition filter
    select * from {{ ref('fact_orders') }}
    where {{ all_partitions('order_date') }}

),

dim_customers as (

    select * from {{ ref('dim_customers') }}

),

dim_time as (

    select * from {{ ref('dim_time') }}

),

order_lines as (

    select
        dim_time.month_start_date,
        dim_customers.region,
        dim_customers.tier,
        fact_orders.order_id,
        fact_orders.customer_id,
        fact_orders.total_amount

    from fact_orders
    inner join dim_customers
        on fact_orders.customer_id = dim_customers.customer_id
    inner join dim_time
        on fact_orders.order_date = dim_time.date_day
    where not fact_orders.is_cancelled

),

final as (

    select
        month_start_date,
        region,
        tier,
        sum(total_amount) as revenue,
        count(distinct order_id) as orders,
        count(distinct customer_id) as ordering_customers,
        round(sum(total_amount) / count(distinct order_id), 2) as average_order_value

    from order_lines
    group by
        month_start_date,
        region,
        tier

)

select * from final
order by month_start_date, region, tier

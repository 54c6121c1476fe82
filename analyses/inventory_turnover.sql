-- Inventory turnover per product over the period the warehouse system's daily snapshots cover:
-- units sold (non-cancelled order lines) / average units on hand (all distribution centres), the same
-- annualised, and days of supply (average on hand / units sold per day). Products that did not sell
-- have a turnover of 0 and no days of supply.
with

fact_inventory_snapshots as (

    select * from {{ ref('fact_inventory_snapshots') }}

),

fact_orders as (

    -- every day of history: says so explicitly, as BigQuery's fact_orders requires a partition filter
    select * from {{ ref('fact_orders') }}
    where {{ all_partitions('order_date') }}

),

dim_products as (

    select * from {{ ref('dim_products') }}

),

snapshot_period as (

    select
        min(snapshot_date) as first_day,
        max(snapshot_date) as last_day,
        {{ dbt.datediff('min(snapshot_date)', 'max(snapshot_date)', 'day') }} + 1 as days_covered  -- noqa: LT05

    from fact_inventory_snapshots
    where is_product_known

),

daily_stock as (

    select
        product_id,
        snapshot_date,
        sum(quantity_available) as units_on_hand

    from fact_inventory_snapshots
    where is_product_known
    group by
        product_id,
        snapshot_date

),

average_stock as (

    select
        product_id,
        avg(units_on_hand) as avg_units_on_hand

    from daily_stock
    group by product_id

),

units_sold as (

    select
        fact_orders.product_id,
        sum(fact_orders.quantity) as units_sold

    from fact_orders
    inner join snapshot_period
        on
            fact_orders.order_date >= snapshot_period.first_day
            and fact_orders.order_date <= snapshot_period.last_day
    where not fact_orders.is_cancelled
    group by fact_orders.product_id

),

final as (

    select
        dim_products.product_id,
        dim_products.sku,
        dim_products.product_name,
        dim_products.category,
        snapshot_period.first_day,
        snapshot_period.last_day,
        coalesce(units_sold.units_sold, 0) as units_sold,
        round(average_stock.avg_units_on_hand, 1) as avg_units_on_hand,
        round(coalesce(units_sold.units_sold, 0) / nullif(average_stock.avg_units_on_hand, 0), 4)
            as turnover,
        round(
            coalesce(units_sold.units_sold, 0) / nullif(average_stock.avg_units_on_hand, 0)
            * 365 / snapshot_period.days_covered,
            2
        ) as annualised_turnover,
        round(average_stock.avg_units_on_hand / nullif(units_sold.units_sold, 0) * snapshot_period.days_covered, 1)
            as days_of_supply

    from average_stock
    inner join dim_products
        on average_stock.product_id = dim_products.product_id
    cross join snapshot_period
    left join units_sold
        on average_stock.product_id = units_sold.product_id

)

select * from final
order by annualised_turnover desc, product_id asc

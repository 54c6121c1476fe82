-- Order history per customer with at least one non-cancelled order (cancelled orders excluded).
-- Orders and dates come from the order headers (an order counts even before its lines land);
-- revenue = sum of line totals (quantity * unit_price - discount + tax, shipping excluded),
-- consistent with fact_orders. It reads the orders with their lines already summed
-- (int_order_totals_summed, incremental), about one row per four lines, so a night re-sums only the
-- orders that changed instead of every line.
with

order_totals as (

    select * from {{ ref('int_order_totals_summed') }}

),

valid_orders as (

    select * from order_totals
    where order_status != 'cancelled'

),

aggregated as (

    select
        customer_id,
        count(*) as total_orders,
        coalesce(sum(order_revenue), 0) as total_revenue,
        coalesce(sum(order_units), 0) as total_units,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date

    from valid_orders
    group by customer_id

)

select * from aggregated

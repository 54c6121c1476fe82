-- Gold revenue reconciliation: per order, sum(fact_orders.total_amount) must equal the sum of the
-- staging order_items totals for the same order, and every order must be on both sides
-- (hence the overall totals match too). Returns one row per mismatching order.
{{ config(severity='error') }}

with

fact_orders as (

    select * from {{ ref('fact_orders') }}
    -- every day: fact_orders requires a partition filter on BigQuery
    where {{ all_partitions('order_date') }}

),

order_items as (

    select * from {{ ref('stg_operational__order_items') }}

),

orders as (

    select * from {{ ref('stg_operational__orders') }}

),

staged_order_items as (

    select order_items.*
    from order_items
    inner join orders
        on order_items.order_id = orders.order_id

),

gold_by_order as (

    select
        order_id,
        sum(total_amount) as gold_total_amount
    from fact_orders
    group by order_id

),

silver_by_order as (

    select
        order_id,
        sum(total_amount) as silver_total_amount
    from staged_order_items
    group by order_id

),

compared as (

    select
        coalesce(gold_by_order.order_id, silver_by_order.order_id) as order_id,
        gold_by_order.gold_total_amount,
        silver_by_order.silver_total_amount
    from gold_by_order
    full outer join silver_by_order
        on gold_by_order.order_id = silver_by_order.order_id

),

final as (

    select * from compared
    where
        gold_total_amount is null
        or silver_total_amount is null
        or gold_total_amount != silver_total_amount

)

select * from final

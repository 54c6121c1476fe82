-- One row per order line with its order header attributes. A line changes when either its item row
-- or its order row changes, hence loaded_at = the later of the two bronze _loaded_at values.
-- A view: fact_orders filters it on loaded_at (incremental) and reads it whole on a full refresh.
with

order_items as (

    select * from {{ ref('stg_operational__order_items') }}

),

orders as (

    select * from {{ ref('stg_operational__orders') }}

),

joined as (

    select
        order_items.order_item_id,
        order_items.order_id,
        orders.customer_id,
        order_items.product_id,
        orders.order_date,
        orders.order_status,
        orders.payment_method,
        orders.payment_status,
        order_items.quantity,
        order_items.unit_price,
        order_items.discount,
        order_items.tax,
        order_items.total_amount,
        orders.order_status = 'cancelled' as is_cancelled,
        greatest(orders.updated_at, order_items.updated_at) as source_updated_at,
        greatest(orders.loaded_at, order_items.loaded_at) as loaded_at

    from order_items
    inner join orders
        on order_items.order_id = orders.order_id

)

select * from joined

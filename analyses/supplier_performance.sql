-- Supplier performance: per supplier, the catalogue it supplies (products, share still active), what it
-- sold through the distributor (revenue, units, share of revenue, cancelled share of its order lines) and
-- how well its products are stocked today (positions out of stock or below the reorder point).
with

dim_suppliers as (

    select * from {{ ref('dim_suppliers') }}

),

dim_products as (

    select * from {{ ref('dim_products') }}

),

fact_orders as (

    -- every day of history: says so explicitly, as BigQuery's fact_orders requires a partition filter
    select * from {{ ref('fact_orders') }}
    where {{ all_partitions('order_date') }}

),

fact_inventory_positions as (

    select * from {{ ref('fact_inventory_positions') }}

),

catalogue as (

    select
        supplier_id,
        count(*) as products,
        sum(case when status = 'active' then 1 else 0 end) as active_products

    from dim_products
    group by supplier_id

),

sales as (

    select
        dim_products.supplier_id,
        sum(case when not fact_orders.is_cancelled then fact_orders.total_amount else 0 end) as revenue,
        sum(case when not fact_orders.is_cancelled then fact_orders.quantity else 0 end) as units_sold,
        count(*) as order_lines,
        sum(case when fact_orders.is_cancelled then 1 else 0 end) as cancelled_order_lines

    from fact_orders
    inner join dim_products
        on fact_orders.product_id = dim_products.product_id
    group by dim_products.supplier_id

),

stock as (

    select
        dim_products.supplier_id,
        count(*) as stock_positions,
        sum(case when fact_inventory_positions.is_out_of_stock then 1 else 0 end) as out_of_stock_positions,
        sum(case when fact_inventory_positions.is_below_reorder_point then 1 else 0 end)
            as below_reorder_point_positions

    from fact_inventory_positions
    inner join dim_products
        on fact_inventory_positions.product_id = dim_products.product_id
    group by dim_products.supplier_id

),

final as (

    select
        dim_suppliers.supplier_id,
        dim_suppliers.supplier_name,
        dim_suppliers.supplier_type,
        dim_suppliers.region,
        coalesce(catalogue.products, 0) as products,
        coalesce(catalogue.active_products, 0) as active_products,
        coalesce(sales.revenue, 0) as revenue,
        round(coalesce(sales.revenue, 0) / nullif(sum(sales.revenue) over (), 0), 4) as share_of_revenue,
        coalesce(sales.units_sold, 0) as units_sold,
        round(
            cast(sales.cancelled_order_lines as {{ dbt.type_numeric() }}) / nullif(sales.order_lines, 0), 4
        ) as cancelled_line_share,
        coalesce(stock.stock_positions, 0) as stock_positions,
        round(
            cast(stock.out_of_stock_positions as {{ dbt.type_numeric() }}) / nullif(stock.stock_positions, 0), 4
        ) as out_of_stock_share,
        round(
            cast(stock.below_reorder_point_positions as {{ dbt.type_numeric() }})
            / nullif(stock.stock_positions, 0),
            4
        ) as below_reorder_point_share

    from dim_suppliers
    left join catalogue
        on dim_suppliers.supplier_id = catalogue.supplier_id
    left join sales
        on dim_suppliers.supplier_id = sales.supplier_id
    left join stock
        on dim_suppliers.supplier_id = stock.supplier_id

)

select * from final
order by revenue desc, supplier_id asc

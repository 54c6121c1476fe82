-- Current stock position, one row per product x warehouse.
-- free quantity = available - reserved; is_below_reorder_point when free quantity < reorder point.
with

inventory as (

    select * from {{ ref('stg_operational__inventory') }}

),

positions as (

    select
        *,
        quantity_available - quantity_reserved as quantity_free

    from inventory

),

final as (

    select
        cast(inventory_id as {{ dbt.type_bigint() }}) as inventory_id,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(warehouse_id as {{ dbt.type_string() }}) as warehouse_id,
        cast(quantity_available as {{ dbt.type_int() }}) as quantity_available,
        cast(quantity_reserved as {{ dbt.type_int() }}) as quantity_reserved,
        cast(quantity_incoming as {{ dbt.type_int() }}) as quantity_incoming,
        cast(quantity_free as {{ dbt.type_int() }}) as quantity_free,
        cast(reorder_point as {{ dbt.type_int() }}) as reorder_point,
        quantity_free < reorder_point as is_below_reorder_point,
        quantity_free <= 0 as is_out_of_stock,
        quantity_free + quantity_incoming < reorder_point as needs_replenishment,
        cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from positions

)

select * from final

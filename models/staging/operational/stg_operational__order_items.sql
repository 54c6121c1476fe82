with

source as (

    select * from {{ source('operational', 'order_items') }}

),

not_deleted as (

    -- an item is gone when it was hard-deleted itself, or when its order was
    -- (order_items.order_id references orders on delete cascade in the source)
    {{ exclude_deleted_at_source('source', 'order_items', also_deleted_with={'order_id': 'orders'}) }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as order_item_id,
        cast(order_id as {{ dbt.type_bigint() }}) as order_id,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(quantity as {{ dbt.type_int() }}) as quantity,
        cast(unit_price as {{ dbt.type_numeric() }}) as unit_price,
        cast(discount as {{ dbt.type_numeric() }}) as discount,
        cast(tax as {{ dbt.type_numeric() }}) as tax,
        cast(total as {{ dbt.type_numeric() }}) as total_amount,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

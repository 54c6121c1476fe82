with

source as (

    select * from {{ source('operational', 'inventory') }}

),

not_deleted as (

    {{ exclude_deleted_at_source('source', 'inventory') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as inventory_id,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(upper(trim(warehouse_id)) as {{ dbt.type_string() }}) as warehouse_id,
        cast(quantity_available as {{ dbt.type_int() }}) as quantity_available,
        cast(quantity_reserved as {{ dbt.type_int() }}) as quantity_reserved,
        cast(quantity_incoming as {{ dbt.type_int() }}) as quantity_incoming,
        cast(reorder_point as {{ dbt.type_int() }}) as reorder_point,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

with

source as (

    select * from {{ source('operational', 'orders') }}

),

not_deleted as (

    {{ exclude_deleted_at_source('source', 'orders') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as order_id,
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(order_date as date) as order_date,
        cast(lower(trim(status)) as {{ dbt.type_string() }}) as order_status,
        cast(subtotal as {{ dbt.type_numeric() }}) as subtotal,
        cast(discount as {{ dbt.type_numeric() }}) as discount,
        cast(tax as {{ dbt.type_numeric() }}) as tax,
        cast(shipping_cost as {{ dbt.type_numeric() }}) as shipping_cost,
        cast(total as {{ dbt.type_numeric() }}) as total_amount,
        cast(lower(trim(payment_method)) as {{ dbt.type_string() }}) as payment_method,
        cast(lower(trim(payment_status)) as {{ dbt.type_string() }}) as payment_status,
        cast(trim(shipping_address) as {{ dbt.type_string() }}) as shipping_address,
        cast(trim(notes) as {{ dbt.type_string() }}) as notes,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

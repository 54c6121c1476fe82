with

source as (

    select * from {{ source('operational', 'pricing') }}

),

not_deleted as (

    {{ exclude_deleted_at_source('source', 'pricing') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as pricing_id,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        -- null = list price, valid for every tier without a tier-specific price
        cast(lower(trim(customer_tier)) as {{ dbt.type_string() }}) as customer_tier,
        cast(price as {{ dbt.type_numeric() }}) as price,
        cast(effective_from as date) as effective_from_date,
        cast(effective_to as date) as effective_to_date,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

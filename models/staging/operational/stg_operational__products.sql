with

source as (

    select * from {{ source('operational', 'products') }}

),

not_deleted as (

    {{ exclude_deleted_at_source('source', 'products') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as product_id,
        cast(trim(sku) as {{ dbt.type_string() }}) as sku,
        cast(trim(name) as {{ dbt.type_string() }}) as product_name,
        cast(trim(description) as {{ dbt.type_string() }}) as product_description,
        cast(lower(trim(category)) as {{ dbt.type_string() }}) as category,
        cast(lower(trim(subcategory)) as {{ dbt.type_string() }}) as subcategory,
        cast(trim(manufacturer) as {{ dbt.type_string() }}) as manufacturer,
        cast(supplier_id as {{ dbt.type_bigint() }}) as supplier_id,
        cast(trim(active_ingredient) as {{ dbt.type_string() }}) as active_ingredient,
        cast(trim(dosage) as {{ dbt.type_string() }}) as dosage,
        cast(trim(package_size) as {{ dbt.type_string() }}) as package_size,
        cast(trim(regulatory_code) as {{ dbt.type_string() }}) as regulatory_code,
        cast(is_generic as {{ dbt.type_boolean() }}) as is_generic,
        cast(lower(trim(status)) as {{ dbt.type_string() }}) as product_status,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

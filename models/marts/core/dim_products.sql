with

products as (

    select * from {{ ref('stg_operational__products') }}

),

final as (

    select
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(sku as {{ dbt.type_string() }}) as sku,
        cast(product_name as {{ dbt.type_string() }}) as product_name,
        cast(category as {{ dbt.type_string() }}) as category,
        cast(subcategory as {{ dbt.type_string() }}) as subcategory,
        cast(manufacturer as {{ dbt.type_string() }}) as manufacturer,
        cast(active_ingredient as {{ dbt.type_string() }}) as active_ingredient,
        cast(dosage as {{ dbt.type_string() }}) as dosage,
        cast(package_size as {{ dbt.type_string() }}) as package_size,
        cast(regulatory_code as {{ dbt.type_string() }}) as regulatory_code,
        cast(is_generic as {{ dbt.type_boolean() }}) as is_generic,
        cast(supplier_id as {{ dbt.type_bigint() }}) as supplier_id,
        cast(product_status as {{ dbt.type_string() }}) as status,
        cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
        cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at

    from products

)

select * from final

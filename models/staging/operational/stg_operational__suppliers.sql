with

source as (

    select * from {{ source('operational', 'suppliers') }}

),

not_deleted as (

    {{ exclude_deleted_at_source('source', 'suppliers') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as supplier_id,
        cast(trim(name) as {{ dbt.type_string() }}) as supplier_name,
        cast(trim(cnpj) as {{ dbt.type_string() }}) as cnpj,
        cast(lower(trim(type)) as {{ dbt.type_string() }}) as supplier_type,
        cast(trim(contact_name) as {{ dbt.type_string() }}) as contact_name,
        cast(lower(trim(contact_email)) as {{ dbt.type_string() }}) as contact_email,
        cast(trim(contact_phone) as {{ dbt.type_string() }}) as contact_phone,
        cast(trim(payment_terms) as {{ dbt.type_string() }}) as payment_terms,
        cast(upper(trim(uf)) as {{ dbt.type_string() }}) as uf,
        cast(trim(region) as {{ dbt.type_string() }}) as region,
        cast(lower(trim(status)) as {{ dbt.type_string() }}) as supplier_status,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

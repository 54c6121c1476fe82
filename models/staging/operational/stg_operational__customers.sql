with

source as (

    select * from {{ source('operational', 'customers') }}

),

not_deleted as (

    {{ exclude_deleted_at_source('source', 'customers') }}

),

renamed as (

    select
        cast(id as {{ dbt.type_bigint() }}) as customer_id,
        cast(trim(name) as {{ dbt.type_string() }}) as customer_name,
        cast(trim(cnpj) as {{ dbt.type_string() }}) as cnpj,
        cast(trim(contact_name) as {{ dbt.type_string() }}) as contact_name,
        cast(lower(trim(email)) as {{ dbt.type_string() }}) as email,
        cast(trim(phone) as {{ dbt.type_string() }}) as phone,
        cast(trim(address) as {{ dbt.type_string() }}) as address,
        cast(trim(city) as {{ dbt.type_string() }}) as city,
        cast(upper(trim(uf)) as {{ dbt.type_string() }}) as uf,
        cast(trim(region) as {{ dbt.type_string() }}) as region,
        cast(lower(trim(tier)) as {{ dbt.type_string() }}) as tier,
        cast(credit_limit as {{ dbt.type_numeric() }}) as credit_limit,
        cast(trim(payment_terms) as {{ dbt.type_string() }}) as payment_terms,
        cast(lower(trim(status)) as {{ dbt.type_string() }}) as customer_status,
        cast(lower(trim(utm_source)) as {{ dbt.type_string() }}) as utm_source,
        cast(trim(utm_campaign) as {{ dbt.type_string() }}) as utm_campaign,
        {{ to_utc_timestamp('created_at') }} as created_at,
        {{ to_utc_timestamp('updated_at') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from not_deleted

)

select * from renamed

-- Current state of every customer still present at the source. No personal columns.
with

customers as (

    select * from {{ ref('int_customers_enriched') }}

),

final as (

    select
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(customer_name as {{ dbt.type_string() }}) as customer_name,
        cast(cnpj as {{ dbt.type_string() }}) as cnpj,
        cast(city as {{ dbt.type_string() }}) as city,
        cast(uf as {{ dbt.type_string() }}) as uf,
        cast(state_name as {{ dbt.type_string() }}) as state_name,
        cast(region as {{ dbt.type_string() }}) as region,
        cast(tier as {{ dbt.type_string() }}) as tier,
        cast(credit_limit as {{ dbt.type_numeric() }}) as credit_limit,
        cast(payment_terms as {{ dbt.type_string() }}) as payment_terms,
        cast(customer_status as {{ dbt.type_string() }}) as status,
        cast(signup_date as date) as signup_date,
        cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
        cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at

    from customers

)

select * from final

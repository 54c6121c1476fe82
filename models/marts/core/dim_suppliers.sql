-- Current state of every supplier. No personal columns (contact data stays in silver).
with

suppliers as (

    select * from {{ ref('stg_operational__suppliers') }}

),

brazilian_states as (

    select * from {{ ref('brazilian_states') }}

),

final as (

    select
        cast(suppliers.supplier_id as {{ dbt.type_bigint() }}) as supplier_id,
        cast(suppliers.supplier_name as {{ dbt.type_string() }}) as supplier_name,
        cast(suppliers.cnpj as {{ dbt.type_string() }}) as cnpj,
        cast(suppliers.supplier_type as {{ dbt.type_string() }}) as supplier_type,
        cast(suppliers.uf as {{ dbt.type_string() }}) as uf,
        cast(coalesce(brazilian_states.region, suppliers.region) as {{ dbt.type_string() }}) as region,
        cast(suppliers.payment_terms as {{ dbt.type_string() }}) as payment_terms,
        cast(suppliers.supplier_status as {{ dbt.type_string() }}) as status,
        cast(suppliers.created_at as {{ dbt.type_timestamp() }}) as created_at,
        cast(suppliers.updated_at as {{ dbt.type_timestamp() }}) as updated_at

    from suppliers
    left join brazilian_states
        on suppliers.uf = brazilian_states.uf

)

select * from final

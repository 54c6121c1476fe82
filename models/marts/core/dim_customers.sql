-- Current state of every customer still present at the source. Personal columns (meta personal: true in
-- staging) only as keyed pseudonyms (macros/pii.sql): equal e-mails / phones give equal pseudonyms, so
-- BI can count and match contacts without reading them. Erased customers (warehouse erase-customer,
-- docs/lgpd.md) have neither name nor CNPJ.
with

customers as (

    select * from {{ ref('int_customers_enriched') }}

),

customer_contacts as (

    select
        customer_id,
        email,
        phone
    from {{ ref('stg_operational__customers') }}

),

final as (

    select
        cast(customers.customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(customers.customer_name as {{ dbt.type_string() }}) as customer_name,
        cast(customers.cnpj as {{ dbt.type_string() }}) as cnpj,
        cast({{ pseudonymise('customer_contacts.email') }} as {{ dbt.type_string() }}) as email_pseudonym,
        cast({{ pseudonymise('customer_contacts.phone') }} as {{ dbt.type_string() }}) as phone_pseudonym,
        cast(customers.customer_name is null as {{ dbt.type_boolean() }}) as is_erased,
        cast(customers.city as {{ dbt.type_string() }}) as city,
        cast(customers.uf as {{ dbt.type_string() }}) as uf,
        cast(customers.state_name as {{ dbt.type_string() }}) as state_name,
        cast(customers.region as {{ dbt.type_string() }}) as region,
        cast(customers.tier as {{ dbt.type_string() }}) as tier,
        cast(customers.credit_limit as {{ dbt.type_numeric() }}) as credit_limit,
        cast(customers.payment_terms as {{ dbt.type_string() }}) as payment_terms,
        cast(customers.customer_status as {{ dbt.type_string() }}) as status,
        cast(customers.signup_date as date) as signup_date,
        cast(customers.created_at as {{ dbt.type_timestamp() }}) as created_at,
        cast(customers.updated_at as {{ dbt.type_timestamp() }}) as updated_at

    from customers
    left join customer_contacts
        on customers.customer_id = customer_contacts.customer_id

)

select * from final

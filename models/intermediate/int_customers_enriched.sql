-- Customers without personal columns, with state name and canonical macro-region derived from the UF
-- (falls back to the region recorded at the source when the UF is unknown).
with

customers as (

    select * from {{ ref('stg_operational__customers') }}

),

brazilian_states as (

    select * from {{ ref('brazilian_states') }}

),

enriched as (

    select
        customers.customer_id,
        customers.customer_name,
        customers.cnpj,
        customers.city,
        customers.uf,
        brazilian_states.state_name,
        coalesce(brazilian_states.region, customers.region) as region,
        customers.tier,
        customers.credit_limit,
        customers.payment_terms,
        customers.customer_status,
        cast(customers.created_at as date) as signup_date,
        customers.created_at,
        customers.updated_at,
        customers.loaded_at

    from customers
    left join brazilian_states
        on customers.uf = brazilian_states.uf

)

select * from enriched

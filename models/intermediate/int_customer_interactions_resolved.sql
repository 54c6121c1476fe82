{#
    Customer-service interactions matched to the ERP's customers. One row per interaction: nothing is
    dropped, interactions of customers the ERP does not know (prospects, mistyped CNPJs, ids of deleted
    customers) stay with customer_id null and is_customer_known = false.

    Match: by the operational customer id when the platform sent one that exists, else by CNPJ.
    customer_cnpj is the matched customer's CNPJ when known, else the CNPJ as sent.
    is_resolved / resolution_time_minutes: the time is kept only for resolved interactions; when the
    platform omits it, it is derived from started_at and resolved_at.
#}
with

interactions as (

    select * from {{ ref('stg_gcs__customer_interactions') }}

),

customers as (

    select
        customer_id,
        cnpj
    from {{ ref('stg_operational__customers') }}

),

matched as (

    select
        interactions.*,
        customers_by_id.customer_id as customer_id_by_id,
        customers_by_id.cnpj as cnpj_by_id,
        customers_by_cnpj.customer_id as customer_id_by_cnpj,
        customers_by_cnpj.cnpj as cnpj_by_cnpj

    from interactions
    left join customers as customers_by_id
        on interactions.customer_id = customers_by_id.customer_id
    left join customers as customers_by_cnpj
        on interactions.customer_cnpj = customers_by_cnpj.cnpj

),

resolved as (

    select
        interaction_id,
        coalesce(customer_id_by_id, customer_id_by_cnpj) as customer_id,
        coalesce(cnpj_by_id, cnpj_by_cnpj, customer_cnpj) as customer_cnpj,
        coalesce(customer_id_by_id, customer_id_by_cnpj) is not null as is_customer_known,
        case
            when customer_id_by_id is not null then 'customer_id'
            when customer_id_by_cnpj is not null then 'cnpj'
            else 'unknown'
        end as customer_match_method,
        customer_id as source_customer_id,
        customer_cnpj as source_customer_cnpj,
        cast(started_at as date) as interaction_date,
        started_at,
        resolved_at,
        channel,
        interaction_type,
        is_resolved,
        case
            when is_resolved
                then coalesce(
                    resolution_time_minutes,
                    round(
                        cast({{ dbt.datediff('started_at', 'resolved_at', 'second') }} as {{ dbt.type_numeric() }})  -- noqa: LT05
                        / 60,
                        1
                    )
                )
        end as resolution_time_minutes,
        agent_type,
        agent_id,
        source_file,
        loaded_at

    from matched

)

select * from resolved

{#
    SCD2 history of customers (no personal columns). Check strategy: late updates can arrive with an
    OLDER updated_at than the version already snapshotted, which would break the timestamp strategy;
    comparing the tracked columns is safe. Hard-deleted customers (gone from staging) get their current
    version closed (hard_deletes = invalidate).
#}
{% snapshot snap_customers %}

{{
    config(
        unique_key='customer_id',
        strategy='check',
        check_cols=[
            'customer_name',
            'cnpj',
            'city',
            'uf',
            'region',
            'tier',
            'credit_limit',
            'payment_terms',
            'customer_status',
        ],
        hard_deletes='invalidate',
    )
}}

with

customers as (

    select * from {{ ref('stg_operational__customers') }}

),

final as (

    select
        customer_id,
        customer_name,
        cnpj,
        city,
        uf,
        region,
        tier,
        credit_limit,
        payment_terms,
        customer_status,
        created_at,
        updated_at,
        loaded_at

    from customers

)

select * from final

{% endsnapshot %}

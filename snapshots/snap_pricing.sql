{#
    SCD2 history of the price list. Check strategy on the price attributes (robust to late updates with
    an older updated_at); hard-deleted prices get their current version closed.
#}
{% snapshot snap_pricing %}

{{
    config(
        unique_key='pricing_id',
        strategy='check',
        check_cols=['product_id', 'customer_tier', 'price', 'effective_from_date', 'effective_to_date'],
        hard_deletes='invalidate',
    )
}}

with

pricing as (

    select * from {{ ref('stg_operational__pricing') }}

),

final as (

    select
        pricing_id,
        product_id,
        customer_tier,
        price,
        effective_from_date,
        effective_to_date,
        created_at,
        updated_at,
        loaded_at

    from pricing

)

select * from final

{% endsnapshot %}

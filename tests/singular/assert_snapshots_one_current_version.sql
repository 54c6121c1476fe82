-- SCD2 integrity: at most one current version (dbt_valid_to is null) per business key in each snapshot.
with

snap_customers as (

    select * from {{ ref('snap_customers') }}

),

snap_pricing as (

    select * from {{ ref('snap_pricing') }}

),

current_customer_versions as (

    select
        'snap_customers' as snapshot_name,
        customer_id as business_key,
        count(*) as current_versions
    from snap_customers
    where dbt_valid_to is null
    group by customer_id

),

current_pricing_versions as (

    select
        'snap_pricing' as snapshot_name,
        pricing_id as business_key,
        count(*) as current_versions
    from snap_pricing
    where dbt_valid_to is null
    group by pricing_id

),

final as (

    select * from current_customer_versions
    where current_versions > 1
    union all
    select * from current_pricing_versions
    where current_versions > 1

)

select * from final

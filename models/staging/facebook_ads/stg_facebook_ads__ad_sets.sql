-- Facebook ad sets of every status, one row per ad set (bronze is merged on id).
-- The targeting spec (JSON) stays in bronze.
with

source as (

    select * from {{ source('facebook_ads', 'ad_sets') }}

),

renamed as (

    select
        cast(trim(id) as {{ dbt.type_string() }}) as adset_id,
        cast(trim(account_id) as {{ dbt.type_string() }}) as account_id,
        cast(trim(campaign_id) as {{ dbt.type_string() }}) as campaign_id,
        cast(trim(name) as {{ dbt.type_string() }}) as adset_name,
        cast(upper(trim(status)) as {{ dbt.type_string() }}) as adset_status,
        cast(upper(trim(configured_status)) as {{ dbt.type_string() }}) as configured_status,
        cast(upper(trim(effective_status)) as {{ dbt.type_string() }}) as effective_status,
        cast(upper(trim(optimization_goal)) as {{ dbt.type_string() }}) as optimization_goal,
        cast(upper(trim(billing_event)) as {{ dbt.type_string() }}) as billing_event,
        cast(upper(trim(bid_strategy)) as {{ dbt.type_string() }}) as bid_strategy,
        cast(daily_budget as {{ dbt.type_bigint() }}) as daily_budget_minor_units,
        cast(lifetime_budget as {{ dbt.type_bigint() }}) as lifetime_budget_minor_units,
        {{ to_utc_timestamp('start_time') }} as start_at,
        {{ to_utc_timestamp('end_time') }} as end_at,
        {{ to_utc_timestamp('created_time') }} as created_at,
        {{ to_utc_timestamp('updated_time') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

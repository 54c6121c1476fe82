-- Facebook campaigns of every status, one row per campaign (bronze is merged on id).
-- Budgets stay in minor units of the account currency, as the API sends them.
with

source as (

    select * from {{ source('facebook_ads', 'campaigns') }}

),

renamed as (

    select
        cast(trim(id) as {{ dbt.type_string() }}) as campaign_id,
        cast(trim(account_id) as {{ dbt.type_string() }}) as account_id,
        cast(trim(name) as {{ dbt.type_string() }}) as campaign_name,
        cast(upper(trim(objective)) as {{ dbt.type_string() }}) as objective,
        cast(upper(trim(status)) as {{ dbt.type_string() }}) as campaign_status,
        cast(upper(trim(configured_status)) as {{ dbt.type_string() }}) as configured_status,
        cast(upper(trim(effective_status)) as {{ dbt.type_string() }}) as effective_status,
        cast(upper(trim(buying_type)) as {{ dbt.type_string() }}) as buying_type,
        cast(upper(trim(bid_strategy)) as {{ dbt.type_string() }}) as bid_strategy,
        cast(daily_budget as {{ dbt.type_bigint() }}) as daily_budget_minor_units,
        cast(lifetime_budget as {{ dbt.type_bigint() }}) as lifetime_budget_minor_units,
        {{ to_utc_timestamp('start_time') }} as start_at,
        {{ to_utc_timestamp('stop_time') }} as stop_at,
        {{ to_utc_timestamp('created_time') }} as created_at,
        {{ to_utc_timestamp('updated_time') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

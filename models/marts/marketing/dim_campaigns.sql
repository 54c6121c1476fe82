-- Facebook campaigns, current state, one row per campaign (every status: archived and deleted campaigns
-- stay, so their spend keeps a dimension row).
with

campaigns as (

    select * from {{ ref('stg_facebook_ads__campaigns') }}

),

ad_accounts as (

    select * from {{ ref('stg_facebook_ads__ad_accounts') }}

),

joined as (

    select
        campaigns.campaign_id,
        campaigns.account_id,
        ad_accounts.account_name,
        ad_accounts.currency as account_currency,
        campaigns.campaign_name,
        campaigns.objective,
        campaigns.effective_status,
        campaigns.effective_status = 'ACTIVE' as is_active,
        campaigns.start_at,
        campaigns.stop_at,
        cast(campaigns.start_at as date) as start_date,
        cast(campaigns.stop_at as date) as stop_date,
        campaigns.created_at,
        campaigns.updated_at

    from campaigns
    left join ad_accounts
        on campaigns.account_id = ad_accounts.account_id

),

final as (

    select
        cast(campaign_id as {{ dbt.type_string() }}) as campaign_id,
        cast(account_id as {{ dbt.type_string() }}) as account_id,
        cast(account_name as {{ dbt.type_string() }}) as account_name,
        cast(account_currency as {{ dbt.type_string() }}) as account_currency,
        cast(campaign_name as {{ dbt.type_string() }}) as campaign_name,
        cast(objective as {{ dbt.type_string() }}) as objective,
        cast(effective_status as {{ dbt.type_string() }}) as effective_status,
        cast(is_active as {{ dbt.type_boolean() }}) as is_active,
        cast(start_at as {{ dbt.type_timestamp() }}) as start_at,
        cast(stop_at as {{ dbt.type_timestamp() }}) as stop_at,
        cast(start_date as date) as start_date,
        cast(stop_date as date) as stop_date,
        cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
        cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at

    from joined

)

select * from final

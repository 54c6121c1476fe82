-- Daily ad-level insights, one row per ad and day (the ad fixes account, campaign and ad set).
-- Restated rows (late conversions) carry a new loaded_at: incremental models filter on it.
-- The actions / action_values JSON arrays are unnested in stg_facebook_ads__ad_insight_actions.
with

source as (

    select * from {{ source('facebook_ads', 'ad_insights') }}

),

renamed as (

    select
        cast(trim(ad_id) as {{ dbt.type_string() }}) as ad_id,
        cast(date_start as date) as date_day,
        cast(trim(account_id) as {{ dbt.type_string() }}) as account_id,
        cast(trim(campaign_id) as {{ dbt.type_string() }}) as campaign_id,
        cast(trim(adset_id) as {{ dbt.type_string() }}) as adset_id,
        cast(upper(trim(account_currency)) as {{ dbt.type_string() }}) as account_currency,
        cast(spend as {{ dbt.type_numeric() }}) as spend,
        cast(impressions as {{ dbt.type_bigint() }}) as impressions,
        cast(reach as {{ dbt.type_bigint() }}) as reach,
        cast(clicks as {{ dbt.type_bigint() }}) as clicks,
        cast(frequency as {{ dbt.type_float() }}) as frequency,
        actions,
        action_values,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

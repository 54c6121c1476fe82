{{
    config(
        materialized='incremental',
        unique_key=['ad_id', 'date_day'],
        on_schema_change='append_new_columns',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'merge'),
        partition_by={'field': 'date_day', 'data_type': 'date', 'granularity': 'day'},
        cluster_by=['campaign_id', 'ad_id'],
        labels={'layer': 'gold', 'domain': 'marketing'},
        indexes=[
            {'columns': ['ad_id', 'date_day'], 'unique': true},
            {'columns': ['date_day']},
            {'columns': ['campaign_id']},
        ],
    )
}}

{#
    Daily performance per ad (grain: ad_id, date_day). Incremental: re-process the insight rows that landed
    in bronze (loaded_at) at or after max(loaded_at) already in the table minus
    var('fact_ad_performance_lookback_hours') (0 is safe: `>=` re-reads the newest load, and restated days
    land with a new loaded_at). PostgreSQL merges them on (ad_id, date_day); BigQuery (partitioned by
    date_day, clustered by campaign_id, ad_id) rewrites with insert_overwrite only the days they are in, each
    with all its current rows (macros/incremental/rows_to_rewrite.sql). Insight rows are never deleted by
    the API, so no delete post-hook.
    Conversions / conversion value: the action types of var('facebook_conversion_action_types') /
    var('facebook_revenue_action_types') (default purchase only: the aliases overlap).
#}

{%- set conversion_types = "'" ~ var('facebook_conversion_action_types') | join("', '") ~ "'" %}
{%- set revenue_types = "'" ~ var('facebook_revenue_action_types') | join("', '") ~ "'" %}

with

all_insights as (

    select * from {{ ref('stg_facebook_ads__ad_insights') }}

),

changed_insights as (

    select * from all_insights
    {% if is_incremental() %}
        where {{ loaded_since_last_run('fact_ad_performance_lookback_hours') }}
    {% endif %}

),

insights as (

    {{ rows_to_rewrite('changed_insights', 'all_insights', ['ad_id', 'date_day'], 'date_day') }}

),

insight_actions as (

    select * from {{ ref('stg_facebook_ads__ad_insight_actions') }}

),

conversions as (

    select
        ad_id,
        date_day,
        sum(
            case
                when action_type in ({{ conversion_types }}) then action_count
                else 0
            end
        ) as conversions,
        sum(
            case
                when action_type in ({{ revenue_types }}) then action_value
                else 0
            end
        ) as conversion_value
    from insight_actions
    group by ad_id, date_day

),

joined as (

    select
        insights.date_day,
        insights.account_id,
        insights.campaign_id,
        insights.adset_id,
        insights.ad_id,
        insights.account_currency,
        insights.spend,
        insights.impressions,
        insights.reach,
        insights.clicks,
        coalesce(conversions.conversions, 0) as conversions,
        coalesce(conversions.conversion_value, 0) as conversion_value,
        insights.loaded_at

    from insights
    left join conversions
        on
            insights.ad_id = conversions.ad_id
            and insights.date_day = conversions.date_day

),

final as (

    select
        cast(date_day as date) as date_day,
        cast(account_id as {{ dbt.type_string() }}) as account_id,
        cast(campaign_id as {{ dbt.type_string() }}) as campaign_id,
        cast(adset_id as {{ dbt.type_string() }}) as adset_id,
        cast(ad_id as {{ dbt.type_string() }}) as ad_id,
        cast(account_currency as {{ dbt.type_string() }}) as account_currency,
        cast(spend as {{ dbt.type_numeric() }}) as spend,
        cast(impressions as {{ dbt.type_bigint() }}) as impressions,
        cast(reach as {{ dbt.type_bigint() }}) as reach,
        cast(clicks as {{ dbt.type_bigint() }}) as clicks,
        cast(conversions as {{ dbt.type_bigint() }}) as conversions,
        cast(conversion_value as {{ dbt.type_numeric() }}) as conversion_value,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from joined

)

select * from final

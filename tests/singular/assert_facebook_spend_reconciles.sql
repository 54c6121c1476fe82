-- Facebook spend and conversions reconcile across the layers: the totals of bronze ad_insights (source),
-- silver (stg_facebook_ads__ad_insights / __ad_insight_actions), gold fact_ad_performance and gold
-- campaign_performance are equal, and per day bronze equals gold. Conversions count the action types of
-- var('facebook_conversion_action_types'), unnested from bronze with the same macro as silver.
-- Returns one row per mismatching (metric, day); date_day is null for the whole-history totals.
{{ config(severity='error') }}

{%- set conversion_types = "('" ~ var('facebook_conversion_action_types') | join("', '") ~ "')" %}

with

bronze_insights as (

    select * from {{ source('facebook_ads', 'ad_insights') }}

),

silver_insights as (

    select * from {{ ref('stg_facebook_ads__ad_insights') }}

),

silver_actions as (

    select * from {{ ref('stg_facebook_ads__ad_insight_actions') }}

),

fact_ad_performance as (

    select * from {{ ref('fact_ad_performance') }}

),

campaign_performance as (

    select * from {{ ref('campaign_performance') }}

),

bronze_action_elements as (

    {{ unnest_json_key_values('bronze_insights', 'actions', ['date_start'], 'action_type', 'value') }}

),

bronze_by_day as (

    select
        date_start as date_day,
        sum(spend) as spend
    from bronze_insights
    group by date_start

),

bronze_conversions_by_day as (

    select
        date_start as date_day,
        sum(cast(element_value as {{ dbt.type_numeric() }})) as conversions
    from bronze_action_elements
    where element_key in {{ conversion_types }}
    group by date_start

),

gold_by_day as (

    select
        date_day,
        sum(spend) as spend,
        sum(conversions) as conversions
    from fact_ad_performance
    group by date_day

),

daily_compared as (

    select
        'spend' as metric,
        coalesce(bronze_by_day.date_day, gold_by_day.date_day) as date_day,
        bronze_by_day.spend as bronze_total,
        gold_by_day.spend as gold_total
    from bronze_by_day
    full outer join gold_by_day
        on bronze_by_day.date_day = gold_by_day.date_day
    union all
    select
        'conversions' as metric,
        coalesce(bronze_conversions_by_day.date_day, gold_by_day.date_day) as date_day,
        coalesce(bronze_conversions_by_day.conversions, 0) as bronze_total,
        gold_by_day.conversions as gold_total
    from bronze_conversions_by_day
    full outer join gold_by_day
        on bronze_conversions_by_day.date_day = gold_by_day.date_day

),

totals as (

    select
        'spend' as metric,
        (select coalesce(sum(spend), 0) from bronze_insights) as bronze_total,
        (select coalesce(sum(spend), 0) from silver_insights) as silver_total,
        (select coalesce(sum(spend), 0) from fact_ad_performance) as gold_total,
        (select coalesce(sum(spend), 0) from campaign_performance) as campaign_total
    union all
    select
        'conversions' as metric,
        (
            select coalesce(sum(cast(element_value as {{ dbt.type_numeric() }})), 0)
            from bronze_action_elements
            where element_key in {{ conversion_types }}
        ) as bronze_total,
        (
            select coalesce(sum(action_count), 0)
            from silver_actions
            where action_type in {{ conversion_types }}
        ) as silver_total,
        (select coalesce(sum(conversions), 0) from fact_ad_performance) as gold_total,
        (select coalesce(sum(conversions), 0) from campaign_performance) as campaign_total

),

final as (

    select
        metric,
        cast(null as date) as date_day,
        bronze_total,
        gold_total
    from totals
    where
        bronze_total != silver_total
        or bronze_total != gold_total
        or bronze_total != campaign_total
    union all
    select
        metric,
        date_day,
        bronze_total,
        gold_total
    from daily_compared
    where
        bronze_total is null
        or gold_total is null
        or bronze_total != gold_total

)

select * from final

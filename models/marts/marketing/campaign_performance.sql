-- Facebook campaign performance per ISO week (grain: campaign_id, week_start_date): what Facebook reports
-- (spend, conversions, conversion value) next to what the ERP saw (pharmacies acquired by the campaign,
-- per customers.utm_source = 'facebook' and utm_campaign = campaign_id, and the revenue of their orders).
-- A week appears when the campaign spent, acquired a pharmacy or its pharmacies ordered: weeks after the
-- campaign ended keep the attributed revenue with spend 0 (ratios null). Ratios are null, never infinite,
-- when their denominator is 0.
with

ad_performance as (

    select * from {{ ref('fact_ad_performance') }}

),

campaigns as (

    select * from {{ ref('dim_campaigns') }}

),

customers as (

    select * from {{ ref('stg_operational__customers') }}

),

orders as (

    select * from {{ ref('fact_orders') }}
    -- every day: fact_orders requires a partition filter on BigQuery
    where {{ all_partitions('order_date') }}

),

facebook_customers as (

    select
        customer_id,
        utm_campaign as campaign_id,
        cast(created_at as date) as signup_date
    from customers
    where
        utm_source = 'facebook'
        and utm_campaign is not null

),

ad_weeks as (

    select
        campaign_id,
        cast({{ dbt.dateadd('day', '1 - ' ~ iso_day_of_week('date_day'), 'date_day') }} as date) as week_start_date,
        sum(spend) as spend,
        sum(impressions) as impressions,
        sum(clicks) as clicks,
        sum(conversions) as conversions,
        sum(conversion_value) as conversion_value
    from ad_performance
    group by 1, 2

),

acquisition_weeks as (

    select
        campaign_id,
        cast(
            {{ dbt.dateadd('day', '1 - ' ~ iso_day_of_week('signup_date'), 'signup_date') }} as date
        ) as week_start_date,
        count(*) as acquired_customers
    from facebook_customers
    group by 1, 2

),

revenue_weeks as (

    select
        facebook_customers.campaign_id,
        cast(
            {{ dbt.dateadd('day', '1 - ' ~ iso_day_of_week('orders.order_date'), 'orders.order_date') }} as date
        ) as week_start_date,
        sum(orders.total_amount) as attributed_revenue
    from orders
    inner join facebook_customers
        on orders.customer_id = facebook_customers.customer_id
    where not orders.is_cancelled
    group by 1, 2

),

campaign_weeks as (

    select
        campaign_id,
        week_start_date
    from ad_weeks
    union distinct
    select
        campaign_id,
        week_start_date
    from acquisition_weeks
    union distinct
    select
        campaign_id,
        week_start_date
    from revenue_weeks

),

joined as (

    select
        campaign_weeks.campaign_id,
        campaign_weeks.week_start_date,
        campaigns.account_id,
        campaigns.campaign_name,
        coalesce(ad_weeks.spend, 0) as spend,
        coalesce(ad_weeks.impressions, 0) as impressions,
        coalesce(ad_weeks.clicks, 0) as clicks,
        coalesce(ad_weeks.conversions, 0) as conversions,
        coalesce(ad_weeks.conversion_value, 0) as conversion_value,
        coalesce(acquisition_weeks.acquired_customers, 0) as acquired_customers,
        coalesce(revenue_weeks.attributed_revenue, 0) as attributed_revenue

    from campaign_weeks
    -- campaigns unknown to Facebook bronze (e.g. a utm_campaign typo) are left out
    inner join campaigns
        on campaign_weeks.campaign_id = campaigns.campaign_id
    left join ad_weeks
        on
            campaign_weeks.campaign_id = ad_weeks.campaign_id
            and campaign_weeks.week_start_date = ad_weeks.week_start_date
    left join acquisition_weeks
        on
            campaign_weeks.campaign_id = acquisition_weeks.campaign_id
            and campaign_weeks.week_start_date = acquisition_weeks.week_start_date
    left join revenue_weeks
        on
            campaign_weeks.campaign_id = revenue_weeks.campaign_id
            and campaign_weeks.week_start_date = revenue_weeks.week_start_date

),

metrics as (

    select
        *,
        spend / nullif(conversions, 0) as cost_per_conversion,
        conversion_value / nullif(spend, 0) as reported_roas,
        spend / nullif(acquired_customers, 0) as cost_per_acquired_customer,
        attributed_revenue / nullif(spend, 0) as attributed_roas
    from joined

),

final as (

    select
        cast(campaign_id as {{ dbt.type_string() }}) as campaign_id,
        cast(week_start_date as date) as week_start_date,
        {{ iso_year('week_start_date') }} as iso_year,
        {{ iso_week('week_start_date') }} as iso_week,
        cast(account_id as {{ dbt.type_string() }}) as account_id,
        cast(campaign_name as {{ dbt.type_string() }}) as campaign_name,
        cast(spend as {{ dbt.type_numeric() }}) as spend,
        cast(impressions as {{ dbt.type_bigint() }}) as impressions,
        cast(clicks as {{ dbt.type_bigint() }}) as clicks,
        cast(conversions as {{ dbt.type_bigint() }}) as conversions,
        cast(conversion_value as {{ dbt.type_numeric() }}) as conversion_value,
        cast(cost_per_conversion as {{ dbt.type_numeric() }}) as cost_per_conversion,
        cast(reported_roas as {{ dbt.type_numeric() }}) as reported_roas,
        cast(acquired_customers as {{ dbt.type_bigint() }}) as acquired_customers,
        cast(cost_per_acquired_customer as {{ dbt.type_numeric() }}) as cost_per_acquired_customer,
        cast(attributed_revenue as {{ dbt.type_numeric() }}) as attributed_revenue,
        cast(attributed_roas as {{ dbt.type_numeric() }}) as attributed_roas

    from metrics

)

select * from final

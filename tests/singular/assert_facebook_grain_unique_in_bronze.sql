-- The ad-day grain holds in every layer: bronze ad_insights has one row per (ad_id, date_start) (the ad
-- fixes account, campaign and ad set, so the loader's 5-column merge key reduces to it), which the
-- silver and gold grain tests (ad_id, date_day) rely on. Returns the duplicated keys.
{{ config(severity='error') }}

with

bronze_insights as (

    select * from {{ source('facebook_ads', 'ad_insights') }}

),

final as (

    select
        ad_id,
        date_start,
        count(*) as n_records
    from bronze_insights
    group by ad_id, date_start
    having count(*) > 1

)

select * from final

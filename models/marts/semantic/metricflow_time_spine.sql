-- Day grain time spine of the semantic layer (MetricFlow): one row per day of dim_time. A view, so the
-- calendar is kept in one place; BI users join dim_time, MetricFlow joins this.
{{ config(materialized='view') }}

with

calendar as (

    select * from {{ ref('dim_time') }}

),

final as (

    select cast(date_day as date) as date_day
    from calendar

)

select * from final

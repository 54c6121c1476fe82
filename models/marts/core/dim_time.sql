-- Calendar, one row per day from var('dim_time_start_date') to var('dim_time_end_date') inclusive,
-- with ISO week / day of week (1 = Monday .. 7 = Sunday) and Brazilian national holidays.
{%- set start_date = dbt.cast("'" ~ var('dim_time_start_date') ~ "'", 'date') %}
{%- set end_date_exclusive = dbt.dateadd('day', 1, dbt.cast("'" ~ var('dim_time_end_date') ~ "'", 'date')) %}

with

holidays as (

    select * from {{ ref('brazilian_national_holidays') }}

),

date_spine as (

    {{ dbt.date_spine(datepart='day', start_date=start_date, end_date=end_date_exclusive) }}

),

days as (

    select cast(date_day as date) as date_day
    from date_spine

),

date_parts as (

    select
        date_day,
        cast(extract(year from date_day) as {{ dbt.type_int() }}) as year,
        cast(extract(quarter from date_day) as {{ dbt.type_int() }}) as quarter,
        cast(extract(month from date_day) as {{ dbt.type_int() }}) as month,
        cast(extract(day from date_day) as {{ dbt.type_int() }}) as day_of_month,
        {{ iso_week('date_day') }} as week,
        {{ iso_year('date_day') }} as iso_year,
        {{ iso_day_of_week('date_day') }} as day_of_week,
        cast({{ dbt.date_trunc('month', 'date_day') }} as date) as month_start_date

    from days

),

final as (

    select
        date_parts.date_day,
        date_parts.year,
        date_parts.quarter,
        date_parts.month,
        date_parts.day_of_month,
        date_parts.week,
        date_parts.iso_year,
        date_parts.day_of_week,
        date_parts.month_start_date,
        date_parts.day_of_week >= 6 as is_weekend,
        holidays.date is not null as is_holiday,
        cast(holidays.name as {{ dbt.type_string() }}) as holiday_name,
        date_parts.day_of_week < 6 and holidays.date is null as is_business_day

    from date_parts
    left join holidays
        on date_parts.date_day = holidays.date

)

select * from final

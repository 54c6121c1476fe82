-- The actions / action_values arrays of the daily insights, unnested: one row per insight row (ad and
-- day) and action type, with the count (actions) and the value in the account currency (action_values)
-- of that type; a type present in only one of the arrays has 0 on the other side. Facebook sends the
-- numbers as strings. Aliases overlap (purchase aggregates offsite_conversion.fb_pixel_purchase and
-- others): pick types with var('facebook_conversion_action_types'), never sum every type.
with

insights as (

    select * from {{ ref('stg_facebook_ads__ad_insights') }}

),

action_elements as (

    {{ unnest_json_key_values(
        'insights', 'actions', ['ad_id', 'date_day', 'loaded_at'], 'action_type', 'value'
    ) }}

),

action_value_elements as (

    {{ unnest_json_key_values(
        'insights', 'action_values', ['ad_id', 'date_day', 'loaded_at'], 'action_type', 'value'
    ) }}

),

action_counts as (

    select
        ad_id,
        date_day,
        element_key as action_type,
        max(loaded_at) as loaded_at,
        sum(cast(element_value as {{ dbt.type_numeric() }})) as action_count
    from action_elements
    group by ad_id, date_day, element_key

),

action_values as (

    select
        ad_id,
        date_day,
        element_key as action_type,
        max(loaded_at) as loaded_at,
        sum(cast(element_value as {{ dbt.type_numeric() }})) as action_value
    from action_value_elements
    group by ad_id, date_day, element_key

),

joined as (

    select
        coalesce(action_counts.ad_id, action_values.ad_id) as ad_id,
        coalesce(action_counts.date_day, action_values.date_day) as date_day,
        coalesce(action_counts.action_type, action_values.action_type) as action_type,
        coalesce(action_counts.action_count, 0) as action_count,
        coalesce(action_values.action_value, 0) as action_value,
        coalesce(action_counts.loaded_at, action_values.loaded_at) as loaded_at

    from action_counts
    full outer join action_values
        on
            action_counts.ad_id = action_values.ad_id
            and action_counts.date_day = action_values.date_day
            and action_counts.action_type = action_values.action_type

),

renamed as (

    select
        cast(ad_id as {{ dbt.type_string() }}) as ad_id,
        cast(date_day as date) as date_day,
        cast(lower(trim(action_type)) as {{ dbt.type_string() }}) as action_type,
        cast(action_count as {{ dbt.type_numeric() }}) as action_count,
        cast(action_value as {{ dbt.type_numeric() }}) as action_value,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from joined

)

select * from renamed

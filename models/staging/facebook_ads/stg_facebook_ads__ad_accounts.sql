-- Facebook ad accounts, one row per account (bronze is merged on id).
with

source as (

    select * from {{ source('facebook_ads', 'ad_accounts') }}

),

renamed as (

    select
        cast(trim(account_id) as {{ dbt.type_string() }}) as account_id,
        cast(trim(id) as {{ dbt.type_string() }}) as account_graph_id,
        cast(trim(name) as {{ dbt.type_string() }}) as account_name,
        cast(upper(trim(currency)) as {{ dbt.type_string() }}) as currency,
        cast(trim(timezone_name) as {{ dbt.type_string() }}) as timezone_name,
        cast(timezone_offset_hours_utc as {{ dbt.type_float() }}) as timezone_offset_hours_utc,
        cast(account_status as {{ dbt.type_int() }}) as account_status,
        {{ to_utc_timestamp('created_time') }} as created_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

-- Facebook ads of every status, one row per ad (bronze is merged on id).
with

source as (

    select * from {{ source('facebook_ads', 'ads') }}

),

renamed as (

    select
        cast(trim(id) as {{ dbt.type_string() }}) as ad_id,
        cast(trim(account_id) as {{ dbt.type_string() }}) as account_id,
        cast(trim(campaign_id) as {{ dbt.type_string() }}) as campaign_id,
        cast(trim(adset_id) as {{ dbt.type_string() }}) as adset_id,
        cast(trim(name) as {{ dbt.type_string() }}) as ad_name,
        cast(upper(trim(status)) as {{ dbt.type_string() }}) as ad_status,
        cast(upper(trim(configured_status)) as {{ dbt.type_string() }}) as configured_status,
        cast(upper(trim(effective_status)) as {{ dbt.type_string() }}) as effective_status,
        cast(trim(creative_id) as {{ dbt.type_string() }}) as creative_id,
        {{ to_utc_timestamp('created_time') }} as created_at,
        {{ to_utc_timestamp('updated_time') }} as updated_at,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

-- Customer-service interactions, one row per interaction_id (bronze is merged on it: latest version).
-- The customer is as the platform sent it (CNPJ and / or operational id); int_customer_interactions_resolved
-- matches it to the ERP's customers.
with

source as (

    select * from {{ source('gcs_payloads', 'customer_interactions') }}

),

renamed as (

    select
        cast(trim(interaction_id) as {{ dbt.type_string() }}) as interaction_id,
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(trim(customer_cnpj) as {{ dbt.type_string() }}) as customer_cnpj,
        cast(lower(trim(channel)) as {{ dbt.type_string() }}) as channel,
        cast(lower(trim(type)) as {{ dbt.type_string() }}) as interaction_type,
        cast(
            {{ json_extract_scalar('_raw_json', ['subject']) }} as {{ dbt.type_string() }}
        ) as interaction_subject,
        {{ to_utc_timestamp('started_at') }} as started_at,
        {{ to_utc_timestamp('resolved_at') }} as resolved_at,
        -- the platform may omit the flag: then an interaction is resolved when it has a resolution time
        cast(coalesce(resolved, resolved_at is not null) as {{ dbt.type_boolean() }}) as is_resolved,
        cast(resolution_time_minutes as {{ dbt.type_numeric() }}) as resolution_time_minutes,
        cast(lower(trim(agent_type)) as {{ dbt.type_string() }}) as agent_type,
        cast(trim(agent_id) as {{ dbt.type_string() }}) as agent_id,
        cast(_source_file as {{ dbt.type_string() }}) as source_file,
        cast(_content_hash as {{ dbt.type_string() }}) as content_hash,
        cast(_record_number as {{ dbt.type_bigint() }}) as record_number,
        cast(_run_id as {{ dbt.type_string() }}) as run_id,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

-- Records the payload loader refused, one row per (file content, record number), with the reason.
with

source as (

    select * from {{ source('gcs_payloads', 'rejects') }}

),

renamed as (

    select
        {{ dbt.hash(dbt.concat([
            "_content_hash", "'|'", dbt.cast("_record_number", dbt.type_string()),
        ])) }} as reject_id,
        cast(lower(trim(payload_type)) as {{ dbt.type_string() }}) as payload_type,
        cast(reason as {{ dbt.type_string() }}) as reject_reason,
        cast(_record_number as {{ dbt.type_bigint() }}) as record_number,
        cast(_byte_offset as {{ dbt.type_bigint() }}) as byte_offset,
        cast(_raw_json as {{ dbt.type_string() }}) as raw_json,
        cast(_source_file as {{ dbt.type_string() }}) as source_file,
        cast(_content_hash as {{ dbt.type_string() }}) as content_hash,
        cast(_run_id as {{ dbt.type_string() }}) as run_id,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

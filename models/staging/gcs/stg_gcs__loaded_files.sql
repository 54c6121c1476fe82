-- The payload loader's registry: one row per distinct file content loaded, with its record counts.
with

source as (

    select * from {{ source('gcs_payloads', 'loaded_files') }}

),

renamed as (

    select
        {{ dbt.hash(dbt.concat(["payload_type", "'|'", "content_hash"])) }} as loaded_file_id,
        cast(lower(trim(payload_type)) as {{ dbt.type_string() }}) as payload_type,
        cast(content_hash as {{ dbt.type_string() }}) as content_hash,
        cast(file_name as {{ dbt.type_string() }}) as file_name,
        cast(source_file as {{ dbt.type_string() }}) as source_file,
        cast(source_generation as {{ dbt.type_bigint() }}) as source_generation,
        cast(size_bytes as {{ dbt.type_bigint() }}) as size_bytes,
        cast(compressed as {{ dbt.type_boolean() }}) as is_compressed,
        cast(lower(trim(format)) as {{ dbt.type_string() }}) as file_format,
        cast(records_processed as {{ dbt.type_bigint() }}) as records_processed,
        cast(records_loaded as {{ dbt.type_bigint() }}) as records_loaded,
        cast(records_rejected as {{ dbt.type_bigint() }}) as records_rejected,
        cast(run_id as {{ dbt.type_string() }}) as run_id,
        {{ to_utc_timestamp('loaded_at') }} as loaded_at

    from source

)

select * from renamed

-- The processing log, one row per unit of work (payload file, dbt node) or per run. Who ran it
-- (user_name, hostname) and the free-form details json stay in ops: the health marts need neither.
with

source as (

    select * from {{ source('ops', 'processing_log') }}

),

renamed as (

    select
        cast(log_id as {{ dbt.type_string() }}) as log_id,
        cast(run_id as {{ dbt.type_string() }}) as run_id,
        cast(component as {{ dbt.type_string() }}) as component,
        cast(coalesce(payload_type, '(run)') as {{ dbt.type_string() }}) as payload_type,
        cast(layer as {{ dbt.type_string() }}) as layer,
        cast(file_name as {{ dbt.type_string() }}) as file_name,
        cast(status as {{ dbt.type_string() }}) as status,
        cast(message as {{ dbt.type_string() }}) as message,
        cast(duration_ms as {{ dbt.type_bigint() }}) as duration_ms,
        cast(coalesce(records_processed, 0) as {{ dbt.type_bigint() }}) as records_processed,
        cast(coalesce(records_loaded, 0) as {{ dbt.type_bigint() }}) as records_loaded,
        cast(coalesce(records_invalid, 0) as {{ dbt.type_bigint() }}) as records_invalid,
        -- a run's own row has no file; dbt writes one row per node and no run row
        file_name is null as is_run_summary,
        cast(loader_version as {{ dbt.type_string() }}) as loader_version,
        {{ to_utc_timestamp('started_at') }} as started_at,
        {{ to_utc_timestamp('finished_at') }} as finished_at

    from source

)

select * from renamed

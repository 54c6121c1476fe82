-- One row per (table, id) hard-deleted at the source, with its first detection time.
-- Every other staging model anti-joins this list (see the docs of _operational__sources.yml).
with

source as (

    select * from {{ source('operational', 'source_deletions') }}

),

deduplicated as (

    select
        table_name,
        id,
        min(detected_at) as detected_at
    from source
    group by
        table_name,
        id

),

renamed as (

    select
        {{ dbt.hash(dbt.concat(["table_name", "'|'", dbt.cast("id", dbt.type_string())])) }} as source_deletion_id,
        cast(lower(trim(table_name)) as {{ dbt.type_string() }}) as deleted_table_name,
        cast(id as {{ dbt.type_bigint() }}) as deleted_record_id,
        {{ to_utc_timestamp('detected_at') }} as detected_at

    from deduplicated

)

select * from renamed

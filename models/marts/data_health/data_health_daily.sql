-- Daily health of every pipeline step: one row per day x component x layer x payload type, from the
-- processing log. Record counts come from the leaf rows only (a file, a dbt node, or the run row of a
-- loader that logs no files), so a run's own summary row is never counted twice.
with

processing_log as (

    select * from {{ ref('stg_ops__processing_log') }}

),

runs_with_files as (

    select distinct run_id
    from processing_log
    where not is_run_summary

),

leaf_rows as (

    select
        processing_log.*,
        cast(processing_log.started_at as date) as run_date
    from processing_log
    left join runs_with_files
        on processing_log.run_id = runs_with_files.run_id
    where
        not processing_log.is_run_summary
        or runs_with_files.run_id is null

),

aggregated as (

    select
        run_date,
        component,
        layer,
        payload_type,
        count(distinct run_id) as run_count,
        count(*) as unit_count,
        sum(case when status = 'completed' then 1 else 0 end) as completed_count,
        sum(case when status = 'failed' then 1 else 0 end) as failed_count,
        sum(case when status = 'skipped' then 1 else 0 end) as skipped_count,
        sum(case when status in ('pending', 'processing') then 1 else 0 end) as unfinished_count,
        sum(records_processed) as records_processed,
        sum(records_loaded) as records_loaded,
        sum(records_invalid) as records_invalid,
        sum(coalesce(duration_ms, 0)) as total_duration_ms,
        max(finished_at) as last_finished_at
    from leaf_rows
    group by
        run_date,
        component,
        layer,
        payload_type

),

final as (

    select
        {{ dbt.hash(dbt.concat([
            dbt.cast("run_date", dbt.type_string()), "'|'", "component", "'|'", "layer", "'|'", "payload_type",
        ])) }} as data_health_day_id,
        run_date,
        component,
        layer,
        payload_type,
        cast(run_count as {{ dbt.type_bigint() }}) as run_count,
        cast(unit_count as {{ dbt.type_bigint() }}) as unit_count,
        cast(completed_count as {{ dbt.type_bigint() }}) as completed_count,
        cast(failed_count as {{ dbt.type_bigint() }}) as failed_count,
        cast(skipped_count as {{ dbt.type_bigint() }}) as skipped_count,
        cast(unfinished_count as {{ dbt.type_bigint() }}) as unfinished_count,
        cast(records_processed as {{ dbt.type_bigint() }}) as records_processed,
        cast(records_loaded as {{ dbt.type_bigint() }}) as records_loaded,
        cast(records_invalid as {{ dbt.type_bigint() }}) as records_invalid,
        cast(
            case
                when records_processed > 0
                    then round(cast(records_invalid as {{ dbt.type_numeric() }}) / records_processed, 4)
            end as {{ dbt.type_numeric() }}
        ) as invalid_record_share,
        cast(total_duration_ms as {{ dbt.type_bigint() }}) as total_duration_ms,
        last_finished_at,
        failed_count > 0 as has_failures
    from aggregated

)

select * from final

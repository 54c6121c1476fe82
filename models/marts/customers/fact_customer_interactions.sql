{{
    config(
        materialized='incremental',
        unique_key='interaction_id',
        on_schema_change='append_new_columns',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'merge'),
        partition_by={'field': 'interaction_date', 'data_type': 'date', 'granularity': 'day'},
        cluster_by=['customer_id', 'channel', 'interaction_type'],
        labels={'layer': 'gold', 'domain': 'customer_service'},
        indexes=[
            {'columns': ['interaction_id'], 'unique': true},
            {'columns': ['interaction_date']},
            {'columns': ['customer_id']},
        ],
    )
}}

{#
    Incremental (merge on interaction_id). A run re-processes:
      - interactions landed in bronze (loaded_at) at or after max(loaded_at) already in the table minus
        var('fact_customer_interactions_lookback_hours'): new and corrected records;
      - interactions not in the table yet, whatever their loaded_at;
      - interactions whose customer match changed since they were merged (a prospect became a customer,
        a customer was deleted or changed its CNPJ): the match depends on the ERP's customers, not only
        on the payload, so it is compared with the table's on every run.
    Bronze never deletes a key, so nothing is deleted here. Result = a full refresh.
    PostgreSQL merges those rows on interaction_id; BigQuery (partitioned by interaction_date, clustered by
    customer_id, channel, interaction_type) rewrites with insert_overwrite only the days they are in, or were
    in, each with all its current rows (macros/incremental/rows_to_rewrite.sql).
#}

with

interactions as (

    select * from {{ ref('int_customer_interactions_resolved') }}

),

{% if is_incremental() %}

    existing as (

        select
            interaction_id,
            customer_id,
            customer_cnpj
        from {{ this }}

    ),

{% endif %}

changed_interactions as (

    select interactions.*
    from interactions

    {% if is_incremental() %}
        left join existing
            on interactions.interaction_id = existing.interaction_id
        where
            interactions.{{ loaded_since_last_run('fact_customer_interactions_lookback_hours') }}
            or existing.interaction_id is null
            or coalesce(interactions.customer_id, -1) != coalesce(existing.customer_id, -1)
            or coalesce(interactions.customer_cnpj, '') != coalesce(existing.customer_cnpj, '')
    {% endif %}

),

to_process as (

    {{ rows_to_rewrite('changed_interactions', 'interactions', 'interaction_id', 'interaction_date') }}

),

final as (

    select
        cast(interaction_id as {{ dbt.type_string() }}) as interaction_id,
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(customer_cnpj as {{ dbt.type_string() }}) as customer_cnpj,
        cast(is_customer_known as {{ dbt.type_boolean() }}) as is_customer_known,
        cast(customer_match_method as {{ dbt.type_string() }}) as customer_match_method,
        cast(interaction_date as date) as interaction_date,
        cast(started_at as {{ dbt.type_timestamp() }}) as started_at,
        cast(resolved_at as {{ dbt.type_timestamp() }}) as resolved_at,
        cast(channel as {{ dbt.type_string() }}) as channel,
        cast(interaction_type as {{ dbt.type_string() }}) as interaction_type,
        cast(is_resolved as {{ dbt.type_boolean() }}) as is_resolved,
        cast(resolution_time_minutes as {{ dbt.type_numeric() }}) as resolution_time_minutes,
        cast(agent_type as {{ dbt.type_string() }}) as agent_type,
        cast(source_file as {{ dbt.type_string() }}) as source_file,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from to_process

)

select * from final

{{
    config(
        materialized='incremental',
        unique_key='inventory_snapshot_id',
        on_schema_change='append_new_columns',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'merge'),
        partition_by={'field': 'snapshot_date', 'data_type': 'date', 'granularity': 'day'},
        cluster_by=['product_id', 'warehouse_id'],
        labels={'layer': 'gold', 'domain': 'inventory'},
        indexes=[
            {'columns': ['inventory_snapshot_id'], 'unique': true},
            {'columns': ['snapshot_date']},
            {'columns': ['product_id']},
        ],
    )
}}

{#
    Incremental (merge on inventory_snapshot_id = hash of snapshot_date, warehouse_id, sku). A run
    re-processes the snapshots landed in bronze (loaded_at) at or after max(loaded_at) already in the
    table minus var('fact_inventory_snapshots_lookback_hours'), those not in the table yet, and those
    whose product match by SKU changed since they were merged (a product created, deleted or re-coded in
    the ERP). Bronze never deletes a key, so nothing is deleted here. Result = a full refresh.
    PostgreSQL merges those rows on inventory_snapshot_id; BigQuery (partitioned by snapshot_date, clustered
    by product_id, warehouse_id) rewrites with insert_overwrite only the days they are in, each with all its
    current rows (macros/incremental/rows_to_rewrite.sql).
#}

with

snapshots as (

    select * from {{ ref('int_inventory_snapshots_resolved') }}

),

{% if is_incremental() %}

    existing as (

        select
            inventory_snapshot_id,
            product_id
        from {{ this }}

    ),

{% endif %}

changed_snapshots as (

    select snapshots.*
    from snapshots

    {% if is_incremental() %}
        left join existing
            on snapshots.inventory_snapshot_id = existing.inventory_snapshot_id
        where
            snapshots.{{ loaded_since_last_run('fact_inventory_snapshots_lookback_hours') }}
            or existing.inventory_snapshot_id is null
            or coalesce(snapshots.product_id, -1) != coalesce(existing.product_id, -1)
    {% endif %}

),

to_process as (

    {{ rows_to_rewrite('changed_snapshots', 'snapshots', 'inventory_snapshot_id', 'snapshot_date') }}

),

final as (

    select
        cast(inventory_snapshot_id as {{ dbt.type_string() }}) as inventory_snapshot_id,
        cast(snapshot_date as date) as snapshot_date,
        cast(warehouse_id as {{ dbt.type_string() }}) as warehouse_id,
        cast(sku as {{ dbt.type_string() }}) as sku,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(is_product_known as {{ dbt.type_boolean() }}) as is_product_known,
        cast(quantity_available as {{ dbt.type_bigint() }}) as quantity_available,
        cast(quantity_reserved as {{ dbt.type_bigint() }}) as quantity_reserved,
        cast(quantity_incoming as {{ dbt.type_bigint() }}) as quantity_incoming,
        cast(quantity_free as {{ dbt.type_bigint() }}) as quantity_free,
        cast(captured_at as {{ dbt.type_timestamp() }}) as captured_at,
        cast(source_file as {{ dbt.type_string() }}) as source_file,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from to_process

)

select * from final

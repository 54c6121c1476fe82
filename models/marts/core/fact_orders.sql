{%- set deleted_keys = {'order_item_id': 'order_items', 'order_id': 'orders'} -%}
{{
    config(
        materialized='incremental',
        unique_key='order_item_id',
        on_schema_change='append_new_columns',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'merge'),
        partition_by={'field': 'order_date', 'data_type': 'date', 'granularity': 'day'},
        cluster_by=['customer_id', 'product_id'],
        require_partition_filter=var('fact_orders_require_partition_filter', true),
        labels={'layer': 'gold', 'domain': 'sales'},
        indexes=[
            {'columns': ['order_item_id'], 'unique': true},
            {'columns': ['order_date']},
            {'columns': ['customer_id']},
            {'columns': ['order_id']},
            {'columns': ['loaded_at']},
        ],
        post_hook=(
            [] if target.type == 'bigquery'
            else ["{{ delete_rows_deleted_at_source(this, {'order_item_id': 'order_items', 'order_id': 'orders'}) }}"]
        ),
    )
}}

{#
    Incremental: the lines whose order or item landed in bronze (loaded_at) since the last run, minus
    var('fact_orders_lookback_hours') (macros/incremental/loaded_since_last_run.sql): the lines of the
    orders int_order_totals_summed saw land since then, less those already here with the same loaded_at
    (build it with its parents, as the nightly job does: a stale int_order_totals_summed delays changes to
    the next run that sees them, within the look-back window).
      - PostgreSQL: merged on order_item_id; the lines are looked up by order_id (rows_of_keys); the
        post-hook deletes the lines whose item or order the loader lists in source_deletions (hard deletes).
      - BigQuery: partitioned by order_date, clustered by customer_id, product_id; insert_overwrite rewrites
        only the days holding a changed line, a line that moved away, or a hard-deleted line, each with all
        its current lines (macros/incremental/rows_to_rewrite.sql). Queries must filter on order_date.
    Result = a full refresh, on both.
#}

-- depends_on: {{ ref('stg_operational__source_deletions') }}, {{ ref('int_order_totals_summed') }}

with

-- every current line: what BigQuery rewrites a changed day from (rows_to_rewrite; unused on PostgreSQL)
order_lines as (  -- noqa: ST03

    select * from {{ ref('int_order_lines_joined') }}

),

{% if is_incremental() %}

    {%- set loaded_since = last_run_loaded_bound('fact_orders_lookback_hours', partition_column='order_date') %}

    -- a line changed when its order or its item landed since the last run: int_order_totals_summed has
    -- each order's latest landing as a column (loaded_at), where bronze would be scanned line by line
    changed_order_ids as (

        select order_id from {{ ref('int_order_totals_summed') }}
        where loaded_at >= {{ loaded_since }}

    ),

    -- every line of those orders, read through their order_id (rows_of_keys) rather than by filtering
    -- the join of every line with its order
    lines_of_changed_orders as (

        {{ rows_of_keys(ref('int_order_lines_joined'), 'order_id', 'changed_order_ids') }}

    ),

    -- minus the lines this table already holds with the same loaded_at: neither their order nor their
    -- item landed again, so they are unchanged (the look-back window re-reads the last nights' orders)
    changed_lines as (

        select lines_of_changed_orders.*
        from lines_of_changed_orders
        left join {{ this }} as written
            on
                lines_of_changed_orders.order_item_id = written.order_item_id
                and lines_of_changed_orders.loaded_at = written.loaded_at
                and {{ all_partitions('written.order_date') }}
        where written.order_item_id is null

    ),

{% else %}

changed_lines as (

    select * from order_lines

),

{% endif %}

lines_to_write as (

    {{ rows_to_rewrite(
        'changed_lines', 'order_lines', 'order_item_id', 'order_date',
        partitions_of_rows_deleted_at_source(this, deleted_keys, 'order_date'),
    ) }}

),

final as (

    select
        cast(order_item_id as {{ dbt.type_bigint() }}) as order_item_id,
        cast(order_id as {{ dbt.type_bigint() }}) as order_id,
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(order_date as date) as order_date,
        cast(quantity as {{ dbt.type_int() }}) as quantity,
        cast(unit_price as {{ dbt.type_numeric() }}) as unit_price,
        cast(quantity * unit_price as {{ dbt.type_numeric() }}) as gross_amount,
        cast(discount as {{ dbt.type_numeric() }}) as discount,
        cast(tax as {{ dbt.type_numeric() }}) as tax,
        cast(total_amount as {{ dbt.type_numeric() }}) as total_amount,
        cast(order_status as {{ dbt.type_string() }}) as order_status,
        cast(payment_method as {{ dbt.type_string() }}) as payment_method,
        cast(payment_status as {{ dbt.type_string() }}) as payment_status,
        cast(is_cancelled as {{ dbt.type_boolean() }}) as is_cancelled,
        cast(source_updated_at as {{ dbt.type_timestamp() }}) as source_updated_at,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from lines_to_write

)

select * from final

{%- set deleted_keys = {'order_id': 'orders'} -%}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        on_schema_change='append_new_columns',
        incremental_strategy=('insert_overwrite' if target.type == 'bigquery' else 'merge'),
        partition_by={'field': 'order_date', 'data_type': 'date', 'granularity': 'day'},
        cluster_by=['customer_id'],
        indexes=[{'columns': ['order_id'], 'unique': true}, {'columns': ['loaded_at']}],
        post_hook=(
            [] if target.type == 'bigquery'
            else ["{{ delete_rows_deleted_at_source(this, {'order_id': 'orders'}) }}"]
        ),
    )
}}

{#
    One row per order with its lines summed: the customer aggregate reads ~1 row per 4 lines, and a night
    re-sums only the orders that changed. An order changed when its header or one of its lines landed in
    bronze since the last run (var('fact_orders_lookback_hours'), as fact_orders), or when one of its lines
    was deleted at the source since then. Deleted orders leave as in fact_orders: a post-hook on PostgreSQL,
    a rewrite of their partitions on BigQuery. Result = a full refresh, on both. The index on loaded_at
    makes the night's bound (its max) and fact_orders' changed orders (loaded_at >= bound) index probes.
#}

-- depends_on: {{ ref('stg_operational__source_deletions') }}, {{ ref('stg_operational__order_items_deleted') }}

{#
    The staging views are read in place rather than through import CTEs: PostgreSQL materializes a CTE
    read more than once, and a materialized copy of every order line costs more than the whole night.
#}
{%- set orders = ref('stg_operational__orders') -%}
{%- set order_items = ref('stg_operational__order_items') -%}
{#- the orders whose lines are summed: on a night, the changed ones, read by key as their lines below -#}
{%- set orders_to_join = (
    '(' ~ rows_of_keys(orders, 'order_id', 'changed_order_ids') ~ ')' if is_incremental() else orders
) -%}

{#- an order with its lines summed, for every order and for the changed ones -#}
{%- set line_sums -%}
    sum(total_amount) as order_revenue,
    sum(quantity) as order_units,
    count(*) as order_lines,
    max(loaded_at) as lines_loaded_at
{%- endset -%}
{%- set join_totals -%}
    select
        orders.order_id,
        orders.customer_id,
        orders.order_date,
        orders.order_status,
        coalesce(totals.order_revenue, 0) as order_revenue,
        coalesce(totals.order_units, 0) as order_units,
        coalesce(totals.order_lines, 0) as order_lines,
        case
            when totals.lines_loaded_at > orders.loaded_at then totals.lines_loaded_at
            else orders.loaded_at
        end as loaded_at
{%- endset -%}

with

line_totals as (

    select
        order_id,
        {{ line_sums | indent(8) }}
    from {{ order_items }}
    group by order_id

),

-- every order: what BigQuery rewrites a changed day from (rows_to_rewrite; unused on PostgreSQL)
order_totals as (  -- noqa: ST03

    {{ join_totals }}
    from {{ orders }} as orders
    left join line_totals as totals
        on orders.order_id = totals.order_id

),

{% if is_incremental() %}

    {%- set loaded_since = last_run_loaded_bound('fact_orders_lookback_hours', partition_column='order_date') %}

    changed_order_ids as (

        select order_id from {{ orders }}
        where loaded_at >= {{ loaded_since }}

        union distinct

        select order_id from {{ order_items }}
        where loaded_at >= {{ loaded_since }}

        union distinct

        select order_id from {{ ref('stg_operational__order_items_deleted') }}
        where detected_at >= {{ loaded_since }}

    ),

    -- the changed orders summed on their own, reading only their lines (rows_of_keys): a filter on the
    -- sums of every order would not reach below their group by, and every line would be summed
    changed_line_totals as (

        {{ rows_of_keys(order_items, 'order_id', 'changed_order_ids', line_sums, group_by_key=true) }}

    ),

{% endif %}

changed_orders as (

    {{ join_totals }}
    from {{ orders_to_join }} as orders
    left join {{ 'changed_line_totals' if is_incremental() else 'line_totals' }} as totals
        on orders.order_id = totals.order_id

),

orders_to_write as (

    {{ rows_to_rewrite(
        'changed_orders', 'order_totals', 'order_id', 'order_date',
        partitions_of_rows_deleted_at_source(this, deleted_keys, 'order_date'),
    ) }}

),

final as (

    select
        cast(order_id as {{ dbt.type_bigint() }}) as order_id,
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(order_date as date) as order_date,
        cast(order_status as {{ dbt.type_string() }}) as order_status,
        cast(order_revenue as {{ dbt.type_numeric() }}) as order_revenue,
        cast(order_units as {{ dbt.type_bigint() }}) as order_units,
        cast(order_lines as {{ dbt.type_bigint() }}) as order_lines,
        cast(loaded_at as {{ dbt.type_timestamp() }}) as loaded_at

    from orders_to_write

)

select * from final

{{
    config(
        materialized='incremental',
        unique_key='order_item_id',
        incremental_strategy='merge',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['order_item_id'], 'unique': true},
            {'columns': ['order_date']},
            {'columns': ['customer_id']},
        ],
        post_hook=[
            "{{ delete_rows_missing_upstream(this, ref('int_order_lines_joined'), 'order_item_id') }}",
        ],
    )
}}

{#
    Incremental: re-process every line whose order or item landed in bronze (loaded_at, not the source's
    updated_at: late updates carry an older updated_at but a new _loaded_at) at or after
    max(loaded_at) already in the table minus var('fact_orders_lookback_hours'); merge on order_item_id.
    Hard deletes: the post-hook deletes lines no longer present upstream. Result = a full refresh.
#}

with

order_lines as (

    select * from {{ ref('int_order_lines_joined') }}

    {% if is_incremental() %}
        where loaded_at >= (
            select
                {{ dbt.dateadd(
                    'hour',
                    -1 * var('fact_orders_lookback_hours'),
                    'coalesce(max(loaded_at), ' ~ dbt.cast("'1900-01-01'", dbt.type_timestamp()) ~ ')',
                ) }}
            from {{ this }}
        )
    {% endif %}

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

    from order_lines

)

select * from final

{#
    What an incremental fact writes on this run, given the CTE `changed_rows` (rows new or changed since the
    last run, columns as in `all_rows`; every row on a first or full-refresh build) and the CTE `all_rows`
    (every current upstream row):

      - default (PostgreSQL, merge on unique_key): the changed rows themselves;
      - BigQuery (insert_overwrite of the partitions by `partition_column`): every current row of each
        partition that changed, so the partitions rewritten equal a full refresh of them. A partition
        changed when a changed row is in it now, or was in it before (a row whose date moved), or when
        `extra_partitions_sql` (a query returning partition values: hard deletes) lists it.
#}
{% macro rows_to_rewrite(changed_rows, all_rows, unique_key, partition_column, extra_partitions_sql=none) -%}
    {{ return(adapter.dispatch('rows_to_rewrite', 'pharma_warehouse')(
        changed_rows, all_rows, unique_key, partition_column, extra_partitions_sql
    )) }}
{%- endmacro %}

{% macro default__rows_to_rewrite(changed_rows, all_rows, unique_key, partition_column, extra_partitions_sql) -%}
    select * from {{ changed_rows }}
{%- endmacro %}

{% macro bigquery__rows_to_rewrite(changed_rows, all_rows, unique_key, partition_column, extra_partitions_sql) -%}
    {%- if not is_incremental() -%}
        {{ return(default__rows_to_rewrite(changed_rows, all_rows, unique_key, partition_column, extra_partitions_sql)) }}
    {%- endif -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    select * from {{ all_rows }}
    where {{ partition_column }} in (
        select {{ partition_column }} from {{ changed_rows }}
        union distinct
        select existing_rows.{{ partition_column }}
        from {{ this }} as existing_rows
        inner join {{ changed_rows }} as moved_rows
            on
            {%- for key in keys %}
                {% if not loop.first %}and {% endif %}existing_rows.{{ key }} = moved_rows.{{ key }}
            {%- endfor %}
        where {{ all_partitions('existing_rows.' ~ partition_column) }}
        {%- if extra_partitions_sql %}
        union distinct
        {{ extra_partitions_sql }}
        {%- endif %}
    )
{%- endmacro %}

{#
    The incremental window of the facts that follow bronze's `_loaded_at` (never the source's updated_at:
    a late update carries an older updated_at but a new _loaded_at):
        <column> >= max(<column>) already in {{ this }} minus var(<lookback_var>) hours
    (1900-01-01 when the table is empty). `partition_column`: on a BigQuery table that requires a
    partition filter, the max is read over every partition explicitly.
#}
{% macro loaded_since_last_run(lookback_var, column='loaded_at', partition_column=none) -%}
    {{ column }} >= (
        select
            {{ dbt.dateadd(
                'hour',
                -1 * var(lookback_var),
                'coalesce(max(' ~ column ~ '), ' ~ dbt.cast("'1900-01-01'", dbt.type_timestamp()) ~ ')',
            ) }}
        from {{ this }}
        {%- if partition_column is not none %}
        where {{ all_partitions(partition_column) }}
        {%- endif %}
    )
{%- endmacro %}

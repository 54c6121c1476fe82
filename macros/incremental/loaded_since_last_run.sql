{#
    The incremental window of the models that follow bronze's `_loaded_at` (never the source's updated_at:
    a late update carries an older updated_at but a new _loaded_at):
        <column> >= max(<column>) already in {{ this }} minus var(<lookback_var>) hours
    (1900-01-01 when the table is empty). `partition_column`: on a BigQuery table that requires a
    partition filter, the max is read over every partition explicitly.

    On PostgreSQL the bound is read before the model's query runs and written into it as a literal
    (postgres__loaded_since_bound): from a subquery it is a parameter to the planner, which then guesses
    that a third of the rows pass (and plans joins for that many), and could never use an index on
    loaded_at. Same rows either way: nothing writes {{ this }} between the two statements. BigQuery has no
    such planner choice and keeps the subquery (its emulator also mis-reads the literal on GCS facts).
#}
{% macro loaded_since_last_run(lookback_var, column='loaded_at', partition_column=none) -%}
    {{ column }} >= {{ last_run_loaded_bound(lookback_var, column, partition_column) }}
{%- endmacro %}

{#- The bound alone, for a model that filters several relations on it (read once). -#}
{% macro last_run_loaded_bound(lookback_var, column='loaded_at', partition_column=none) -%}
    {%- set bound_sql -%}
        select
            {{ dbt.dateadd(
                'hour',
                -1 * var(lookback_var),
                'coalesce(max(' ~ column ~ '), ' ~ dbt.cast("'1900-01-01'", dbt.type_timestamp()) ~ ')',
            ) }} as loaded_since
        from {{ this }}
        {%- if partition_column is not none %}
        where {{ all_partitions(partition_column) }}
        {%- endif %}
    {%- endset -%}
    {{ return(loaded_since_bound(bound_sql)) }}
{%- endmacro %}

{#- The bound of loaded_since_last_run as SQL: the subquery itself, or (PostgreSQL) its value. -#}
{% macro loaded_since_bound(bound_sql) -%}
    {{ return(adapter.dispatch('loaded_since_bound', 'pharma_warehouse')(bound_sql)) }}
{%- endmacro %}

{% macro default__loaded_since_bound(bound_sql) -%}
    ({{ bound_sql }})
{%- endmacro %}

{% macro postgres__loaded_since_bound(bound_sql) -%}
    {%- if execute -%}
        {#- a timestamp without time zone (UTC), written to the microsecond -#}
        {%- set bound = run_query(bound_sql).columns[0].values()[0] -%}
        {{ dbt.cast("'" ~ bound.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "'", dbt.type_timestamp()) | trim }}
    {%- else -%}
        ({{ bound_sql }})
    {%- endif -%}
{%- endmacro %}

{#
    Reference date for recency metrics. var('as_of_date') = null -> today's date (UTC on BigQuery,
    session time zone on postgres); otherwise the pinned date, e.g. --vars '{as_of_date: "2025-06-30"}'.
#}
{% macro as_of_date() -%}
    {{ return(adapter.dispatch('as_of_date', 'pharma_warehouse')()) }}
{%- endmacro %}

{% macro default__as_of_date() -%}
    {%- set pinned = var('as_of_date', none) -%}
    {%- if pinned is none or pinned | string | trim == '' -%}
        cast({{ dbt.current_timestamp() }} as date)
    {%- else -%}
        cast('{{ pinned }}' as date)
    {%- endif -%}
{%- endmacro %}

{#
    Normalise a timezone-aware timestamp to a UTC timestamp column (`*_at` convention).
    postgres: timestamptz -> timestamp without time zone holding the UTC wall-clock time
              (independent of the session TimeZone setting).
    default (bigquery, ...): TIMESTAMP is already an absolute UTC instant, a plain cast suffices.
#}
{% macro to_utc_timestamp(column_name) -%}
    {{ return(adapter.dispatch('to_utc_timestamp', 'pharma_warehouse')(column_name)) }}
{%- endmacro %}

{% macro default__to_utc_timestamp(column_name) -%}
    cast({{ column_name }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro postgres__to_utc_timestamp(column_name) -%}
    cast(timezone('UTC', {{ column_name }}) as {{ dbt.type_timestamp() }})
{%- endmacro %}

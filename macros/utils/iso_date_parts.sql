{#
    ISO-8601 date parts that differ between warehouses.
      iso_day_of_week: 1 = Monday .. 7 = Sunday
      iso_week:        ISO week number 1..53 (weeks start on Monday, week 1 holds the first Thursday)
      iso_year:        ISO week-numbering year (may differ from the calendar year around 1 January)
#}
{% macro iso_day_of_week(date_expr) -%}
    {{ return(adapter.dispatch('iso_day_of_week', 'pharma_warehouse')(date_expr)) }}
{%- endmacro %}

{% macro default__iso_day_of_week(date_expr) -%}
    cast(extract(isodow from {{ date_expr }}) as {{ dbt.type_int() }})
{%- endmacro %}

{% macro bigquery__iso_day_of_week(date_expr) -%}
    {#- bigquery dayofweek: 1 = Sunday .. 7 = Saturday -#}
    cast(mod(extract(dayofweek from {{ date_expr }}) + 5, 7) + 1 as {{ dbt.type_int() }})
{%- endmacro %}


{% macro iso_week(date_expr) -%}
    {{ return(adapter.dispatch('iso_week', 'pharma_warehouse')(date_expr)) }}
{%- endmacro %}

{% macro default__iso_week(date_expr) -%}
    {#- postgres: `week` is the ISO week -#}
    cast(extract(week from {{ date_expr }}) as {{ dbt.type_int() }})
{%- endmacro %}

{% macro bigquery__iso_week(date_expr) -%}
    cast(extract(isoweek from {{ date_expr }}) as {{ dbt.type_int() }})
{%- endmacro %}


{% macro iso_year(date_expr) -%}
    {{ return(adapter.dispatch('iso_year', 'pharma_warehouse')(date_expr)) }}
{%- endmacro %}

{% macro default__iso_year(date_expr) -%}
    {#- same syntax on postgres and bigquery -#}
    cast(extract(isoyear from {{ date_expr }}) as {{ dbt.type_int() }})
{%- endmacro %}

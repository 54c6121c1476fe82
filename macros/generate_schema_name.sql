{#
    Custom schemas: silver (staging + intermediate + seeds), gold (marts), snapshots, audit (test failures).
    target prod (bigquery_prod)   -> exactly the custom schema name (silver, gold, ...).
    other targets -> <target.schema>_<custom> (e.g. ci_silver), so developers and CI runs never collide.
    Models without a custom schema land in target.schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.name in ('prod', 'bigquery_prod') -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

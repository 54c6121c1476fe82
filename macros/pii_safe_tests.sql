{#
    dbt's not_null stores whole failing rows (`select *`) when store_failures is on. On a model that holds
    personal columns (meta personal: true) that would copy them into the audit schema, so there it stores
    only the tested column (a null, by definition); elsewhere the whole row, as dbt does. A relation we
    cannot match to a node (a test with a `where` config reads a subquery) also gets the column only.
#}
{% macro default__test_not_null(model, column_name) %}

{% set column_list = '*' if should_store_failures() and not pii_relation_may_hold_personal_data(model) else column_name %}

select {{ column_list }}
from {{ model }}
where {{ column_name }} is null

{% endmacro %}

{% macro pii_relation_may_hold_personal_data(relation) -%}
    {%- set rendered = relation | string | trim -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() | list + graph.sources.values() | list -%}
            {%- if node.relation_name and node.relation_name | trim == rendered -%}
                {%- for column in node.columns.values() -%}
                    {%- if (column.get('meta') or {}).get('personal') or ((column.get('config') or {}).get('meta') or {}).get('personal') -%}
                        {{ return(true) }}
                    {%- endif -%}
                {%- endfor -%}
                {{ return(false) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(true) }}
{%- endmacro %}

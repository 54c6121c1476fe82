{#
    The rows of `relation` (a CTE over an operational bronze table) whose id the loader does not list in
    source_deletions for `table_name`: hard deletes leave silver here (bronze keeps the last version).
    `also_deleted_with`: {column of relation: parent table_name} for cascades, e.g. {'order_id': 'orders'}
    (an order's deletion deletes its lines at the source).
#}
{% macro exclude_deleted_at_source(relation, table_name, also_deleted_with={}) -%}
    {%- set deletions = source('operational', 'source_deletions') -%}
    select {{ relation }}.*
    from {{ relation }}
    where
        not exists (
            select 1 from {{ deletions }} as source_deletions
            where
                source_deletions.table_name = '{{ table_name }}'
                and source_deletions.id = {{ relation }}.id
        )
    {%- for column, parent_table in also_deleted_with.items() %}
        and not exists (
            select 1 from {{ deletions }} as source_deletions
            where
                source_deletions.table_name = '{{ parent_table }}'
                and source_deletions.id = {{ relation }}.{{ column }}
        )
    {%- endfor %}
{%- endmacro %}

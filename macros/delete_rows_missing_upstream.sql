{#
    Hard-delete propagation for incremental models: delete from `target_relation` every row whose
    `unique_key` no longer exists in `upstream_relation`. Portable SQL (delete ... where not exists),
    valid on postgres and bigquery. Used as a post-hook; a no-op after a full refresh.
#}
{% macro delete_rows_missing_upstream(target_relation, upstream_relation, unique_key) -%}
    {{ return(adapter.dispatch('delete_rows_missing_upstream', 'pharma_warehouse')(
        target_relation, upstream_relation, unique_key
    )) }}
{%- endmacro %}

{% macro default__delete_rows_missing_upstream(target_relation, upstream_relation, unique_key) -%}
    delete from {{ target_relation }} as target_rows
    where not exists (
        select 1
        from {{ upstream_relation }} as upstream_rows
        where upstream_rows.{{ unique_key }} = target_rows.{{ unique_key }}
    )
{%- endmacro %}

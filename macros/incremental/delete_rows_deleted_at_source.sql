{#
    Hard deletes in an incremental fact merged on its key (PostgreSQL): delete the rows whose key, or whose
    parent's key, the operational loader lists in source_deletions (ids in bronze but gone from the source).
    Narrow: each key list is read once (an array), then looked up in the target's index on that column
    (`in (subquery)` would be checked row by row over the whole table); PostgreSQL only.
    `deleted_keys`: {column of the target: source table_name in source_deletions}, e.g.
    {'order_item_id': 'order_items', 'order_id': 'orders'} (an order's deletion cascades to its lines).
    On BigQuery the facts rewrite the partitions of deleted rows instead (rows_to_rewrite), so no hook.
#}
{% macro delete_rows_deleted_at_source(target_relation, deleted_keys) -%}
    delete from {{ target_relation }}
    where
    {%- for column, table_name in deleted_keys.items() %}
        {% if not loop.first %}or {% endif %}{{ column }} = any(array(
            select deleted_record_id from {{ ref('stg_operational__source_deletions') }}
            where deleted_table_name = '{{ table_name }}'
        ))
    {%- endfor %}
{%- endmacro %}

{# The partition values (on `partition_column`) of the target's rows listed in source_deletions. #}
{% macro partitions_of_rows_deleted_at_source(target_relation, deleted_keys, partition_column) -%}
    select {{ partition_column }} from {{ target_relation }}
    where
        {{ all_partitions(partition_column) }}
        and ({{ listed_in_source_deletions(deleted_keys) }})
{%- endmacro %}

{# True for a row whose key, or whose parent's key, source_deletions lists (`deleted_keys` as above). #}
{% macro listed_in_source_deletions(deleted_keys) -%}
    {%- for column, table_name in deleted_keys.items() %}
        {% if not loop.first %}or {% endif %}{{ column }} in (
            select deleted_record_id from {{ ref('stg_operational__source_deletions') }}
            where deleted_table_name = '{{ table_name }}'
        )
    {%- endfor %}
{%- endmacro %}

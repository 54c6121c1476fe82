{#
    The rows of `relation` whose `key` is one of those in the CTE `keys_cte` (a distinct `key` column):
    how an incremental model reads the few order lines of the orders that changed. `select_list`: what
    to select of them; with `group_by_key`, `key` followed by `select_list` grouped by `key` (one row per
    key that has rows).

      - default (BigQuery): `key in (select key from keys_cte)`;
      - PostgreSQL: a lateral subquery per key, so each key is one index lookup (bronze's lookup indexes,
        source_lookup_indexes.sql). With `in (...)` the planner cannot know how few keys
        there are and hash-joins every row of `relation`: at 1M order lines, 34 ms against 501 ms for
        the lines of 3,486 orders.
#}
{% macro rows_of_keys(relation, key, keys_cte, select_list='*', group_by_key=false) -%}
    {{ return(adapter.dispatch('rows_of_keys', 'pharma_warehouse')(
        relation, key, keys_cte, select_list, group_by_key
    )) }}
{%- endmacro %}

{% macro default__rows_of_keys(relation, key, keys_cte, select_list, group_by_key) -%}
    select {% if group_by_key %}{{ key }}, {% endif %}{{ select_list }}
    from {{ relation }}
    where {{ key }} in (select {{ key }} from {{ keys_cte }})
    {%- if group_by_key %}
    group by {{ key }}
    {%- endif %}
{%- endmacro %}

{% macro postgres__rows_of_keys(relation, key, keys_cte, select_list, group_by_key) -%}
    select rows_of_key.*
    from {{ keys_cte }} as keys_to_read
    cross join lateral (
        select {% if group_by_key %}{{ key }}, {% endif %}{{ select_list }}
        from {{ relation }} as rows_to_read
        where rows_to_read.{{ key }} = keys_to_read.{{ key }}
        {%- if group_by_key %}
        group by {{ key }}
        {%- endif %}
        offset 0  -- kept a subquery per key: pulled up into the outer query, it is planned as a hash join again
    ) as rows_of_key
{%- endmacro %}

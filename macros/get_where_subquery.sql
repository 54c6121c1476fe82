{#
    Data tests read the whole model they test. On BigQuery, a table built with require_partition_filter
    refuses a query without a filter on its partition column, so the relation under test is wrapped with a
    filter that keeps every partition (macros/incremental/all_partitions.sql); a test's own `where` config
    still applies. Other adapters and tables: dbt's default.
#}
{% macro bigquery__get_where_subquery(relation) -%}
    {%- set partition_column = partition_column_if_filter_required(relation) -%}
    {%- if partition_column -%}
        {%- set where = config.get('where', '') -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ all_partitions(partition_column) }}{% if where %} and ({{ where }}){% endif %}) dbt_subquery
        {%- endset -%}
        {{ return(filtered) }}
    {%- endif -%}
    {{ return(dbt.default__get_where_subquery(relation)) }}
{%- endmacro %}

{# The partition column of the model behind `relation` when it requires a partition filter, else none. #}
{% macro partition_column_if_filter_required(relation) -%}
    {%- if execute and relation.identifier is defined -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.alias == relation.identifier
                and node.schema == relation.schema
                and node.config.get('require_partition_filter') and node.config.get('partition_by') -%}
                {{ return(node.config.get('partition_by').get('field')) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}

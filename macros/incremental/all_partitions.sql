{#
    A predicate true for every row that names the partition column, for the few queries that must read a
    whole fact whose BigQuery table requires a partition filter (require_partition_filter protects BI users
    from accidental full scans; the pipeline's own full reads say so explicitly). Valid on every adapter.
#}
{% macro all_partitions(partition_column) -%}
    {{ partition_column }} >= {{ dbt.cast("'1900-01-01'", 'date') }}
{%- endmacro %}

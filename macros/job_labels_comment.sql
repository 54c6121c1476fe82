{#
    The query comment of every dbt query; with `job-label: true` (dbt_project.yml) dbt-bigquery turns its
    keys into job labels (lower-cased, sanitised to BigQuery's label rules) for cost attribution.
    BIGQUERY_JOB_TEAM names the team billed (default data-platform).
#}
{% macro job_labels_comment(node) -%}
    {%- set labels = {
        'app': 'pharma_warehouse',
        'target': target.name,
        'team': env_var('BIGQUERY_JOB_TEAM', 'data-platform'),
    } -%}
    {%- if node is not none -%}
        {%- do labels.update({
            'layer': (node.config.get('schema') or 'default'),
            'resource': node.resource_type,
            'model': node.name,
        }) -%}
    {%- endif -%}
    {{ return(tojson(labels)) }}
{%- endmacro %}

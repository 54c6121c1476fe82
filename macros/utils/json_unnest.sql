{#
    Unnesting JSON arrays of objects without dialect-specific operators in models.

    unnest_json_key_values(relation, json_column, columns, key_field, value_field):
        a complete select statement with one row per element of the JSON array `json_column` of every row of
        `relation` (a ref, a source or a CTE name), returning the `columns` of the parent row (a list of
        names) plus
          element_key:   the element's `key_field` as a string (e.g. action_type)
          element_value: the element's `value_field` as a string (cast it; Facebook sends numbers as strings)
        Rows whose array is empty, null or not an array yield no element rows.

    postgres: jsonb_array_elements (lateral) + jsonb_extract_path_text, on the value cast to jsonb.
    bigquery: UNNEST(JSON_QUERY_ARRAY(...)) + JSON_VALUE, JSON or STRING input.
    Keys must be plain identifiers (letters, digits, underscore).

    usage (Facebook actions):
        {{ unnest_json_key_values('insights', 'actions', ['ad_id', 'date_day'], 'action_type', 'value') }}
#}
{% macro unnest_json_key_values(relation, json_column, columns, key_field, value_field) -%}
    {{ return(adapter.dispatch('unnest_json_key_values', 'pharma_warehouse')(
        relation, json_column, columns, key_field, value_field
    )) }}
{%- endmacro %}

{% macro postgres__unnest_json_key_values(relation, json_column, columns, key_field, value_field) -%}
    select
        {%- for column in columns %}
        parent_rows.{{ column }},
        {%- endfor %}
        jsonb_extract_path_text(json_elements.element, '{{ key_field }}') as element_key,
        jsonb_extract_path_text(json_elements.element, '{{ value_field }}') as element_value
    from {{ relation }} as parent_rows
    cross join lateral jsonb_array_elements(
        case
            when jsonb_typeof(cast(parent_rows.{{ json_column }} as jsonb)) = 'array'
                then cast(parent_rows.{{ json_column }} as jsonb)
            else cast('[]' as jsonb)
        end
    ) as json_elements (element)
{%- endmacro %}

{% macro bigquery__unnest_json_key_values(relation, json_column, columns, key_field, value_field) -%}
    select
        {%- for column in columns %}
        parent_rows.{{ column }},
        {%- endfor %}
        json_value(json_element, '$.{{ key_field }}') as element_key,
        json_value(json_element, '$.{{ value_field }}') as element_value
    from {{ relation }} as parent_rows
    cross join unnest(json_query_array(parent_rows.{{ json_column }})) as json_element
{%- endmacro %}

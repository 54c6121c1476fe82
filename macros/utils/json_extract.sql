{#
    Reading JSON without dialect-specific operators (no ->> / jsonb operators in models).

    json_extract_scalar(json_expr, path): the scalar at `path` (a list of keys, e.g. ['totals', 'freight'])
        as a string; null when the path is absent or holds an object / array. Cast the result.
    json_array_length(json_expr): number of elements of a JSON array; null when the value is not an array.

    `json_expr` may be a json / jsonb column or a string holding JSON (e.g. _raw_json).
    postgres: jsonb_extract_path_text / jsonb_array_length (function forms) on the value cast to jsonb.
    bigquery: JSON_VALUE(expr, '$.a.b') / ARRAY_LENGTH(JSON_QUERY_ARRAY(expr)), JSON or STRING input.
    default:  the SQL:2016 JSON_VALUE and json_array_length.
    Keys must be plain identifiers (letters, digits, underscore).
#}
{% macro json_extract_scalar(json_expr, path) -%}
    {{ return(adapter.dispatch('json_extract_scalar', 'pharma_warehouse')(json_expr, path)) }}
{%- endmacro %}

{% macro default__json_extract_scalar(json_expr, path) -%}
    json_value({{ json_expr }}, '$.{{ path | join(".") }}')
{%- endmacro %}

{% macro postgres__json_extract_scalar(json_expr, path) -%}
    jsonb_extract_path_text(cast({{ json_expr }} as jsonb), '{{ path | join("', '") }}')
{%- endmacro %}

{% macro bigquery__json_extract_scalar(json_expr, path) -%}
    json_value({{ json_expr }}, '$.{{ path | join(".") }}')
{%- endmacro %}


{% macro json_array_length(json_expr) -%}
    {{ return(adapter.dispatch('json_array_length', 'pharma_warehouse')(json_expr)) }}
{%- endmacro %}

{% macro default__json_array_length(json_expr) -%}
    json_array_length({{ json_expr }})
{%- endmacro %}

{% macro postgres__json_array_length(json_expr) -%}
    case
        when jsonb_typeof(cast({{ json_expr }} as jsonb)) = 'array'
            then jsonb_array_length(cast({{ json_expr }} as jsonb))
    end
{%- endmacro %}

{% macro bigquery__json_array_length(json_expr) -%}
    array_length(json_query_array({{ json_expr }}))
{%- endmacro %}

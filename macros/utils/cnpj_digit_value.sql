{#
    Numeric value (0-9) of the character at `position` (1-based) of a string expression,
    or null when that character is not a decimal digit. Portable: substr + case, no cast, no regex.
#}
{% macro cnpj_digit_value(column_name, position) -%}
    {{ return(adapter.dispatch('cnpj_digit_value', 'pharma_warehouse')(column_name, position)) }}
{%- endmacro %}

{% macro default__cnpj_digit_value(column_name, position) -%}
    case substr({{ column_name }}, {{ position }}, 1)
        {%- for digit in range(10) %}
        when '{{ digit }}' then {{ digit }}
        {%- endfor %}
    end
{%- endmacro %}

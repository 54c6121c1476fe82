{#
    valid_cnpj: fails for every non-null value that is not a valid CNPJ.
    A valid CNPJ has exactly 14 characters, all digits (no mask), is not a run of one repeated digit,
    and both check digits match (modulo 11, weights 5..2,9..2 then 6..2,9..2; remainder < 2 -> 0,
    else 11 - remainder). Portable SQL: substr + case, no regex.

    usage:
      - valid_cnpj
#}
{% test valid_cnpj(model, column_name) %}

{%- set weights_1 = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2] -%}
{%- set weights_2 = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2] -%}

with

candidates as (

    select {{ column_name }} as cnpj
    from {{ model }}
    where {{ column_name }} is not null

),

digits as (

    select
        cnpj,
        {{ dbt.length('cnpj') }} as cnpj_length,
        {%- for position in range(1, 15) %}
        {{ cnpj_digit_value('cnpj', position) }} as d{{ position }}{{ ',' if not loop.last }}
        {%- endfor %}
    from candidates

),

check_sums as (

    select
        *,
        mod(
            {%- for weight in weights_1 %}
            d{{ loop.index }} * {{ weight }}{{ ' +' if not loop.last }}
            {%- endfor %},
            11
        ) as remainder_1,
        mod(
            {%- for weight in weights_2 %}
            d{{ loop.index }} * {{ weight }}{{ ' +' if not loop.last }}
            {%- endfor %},
            11
        ) as remainder_2
    from digits

),

validated as (

    select
        cnpj,
        case
            when cnpj_length != 14 then false
            {%- for position in range(1, 15) %}
            when d{{ position }} is null then false
            {%- endfor %}
            when
                {%- for position in range(2, 15) %}
                d{{ position }} = d1{{ ' and' if not loop.last }}
                {%- endfor %}
                then false
            when d13 != case when remainder_1 < 2 then 0 else 11 - remainder_1 end then false
            when d14 != case when remainder_2 < 2 then 0 else 11 - remainder_2 end then false
            else true
        end as is_valid
    from check_sums

)

select cnpj
from validated
where not is_valid

{% endtest %}

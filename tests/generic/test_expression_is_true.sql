{#
    expression_is_true: fails for every row where `expression` is not true.
    Only the columns in `columns` (default: the expression's own evaluation) are returned, so stored
    failures carry no more data than needed.

    usage:
      - expression_is_true:
          arguments:
            expression: "total_amount = round(quantity * unit_price - discount + tax, 2)"
            columns: [order_item_id]
#}
{% test expression_is_true(model, expression, column_name=none, columns=none, where_clause=none) %}

select
    {%- if columns %}
    {{ columns | join(', ') }}
    {%- else %}
    1 as failing_row
    {%- endif %}
from {{ model }}
where
    not coalesce({{ expression }}, false)
    {%- if where_clause %}
    and ({{ where_clause }})
    {%- endif %}

{% endtest %}

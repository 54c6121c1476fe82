{#
    non_negative: fails for every row where the column is negative (nulls pass; pair with not_null).
    Applied to every money column.
#}
{% test non_negative(model, column_name) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} < 0

{% endtest %}

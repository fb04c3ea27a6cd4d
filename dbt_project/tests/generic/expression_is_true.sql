{#- dbt_utils.expression_is_true without the package (no dbt hub here): rows where it is false fail. -#}
{% test expression_is_true(model, expression, column_name=None) %}
    select *
    from {{ model }}
    where not coalesce(({{ column_name ~ ' ' if column_name else '' }}{{ expression }}), false)
{% endtest %}

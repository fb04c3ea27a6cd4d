{#- The cutoff grid: T_j = test_cutoff_ts + j * step (j <= 0 on the exported grid). -#}

{% macro step_seconds() -%}
    {{ var('cutoff_step_hours') | int * 3600 }}
{%- endmacro %}

{% macro horizon_seconds() -%}
    {{ var('horizon_hours') | int * 3600 }}
{%- endmacro %}

{#- H: label windows span this many grid steps (the horizon must be a multiple of the step) -#}
{% macro horizon_steps() -%}
    {%- set step = var('cutoff_step_hours') | int -%}
    {%- set horizon = var('horizon_hours') | int -%}
    {%- if step <= 0 or horizon <= 0 or horizon % step != 0 -%}
        {{ exceptions.raise_compiler_error(
            "horizon_hours (" ~ horizon ~ ") must be a positive multiple of cutoff_step_hours (" ~ step ~ ")") }}
    {%- endif -%}
    {{ horizon // step }}
{%- endmacro %}

{#- the grid bucket of an epoch-seconds timestamp: bucket k covers [T_k, T_k+1) -#}
{% macro bucket_of(ts_column, test_cutoff_column) -%}
    cast(floor(({{ ts_column }} - {{ test_cutoff_column }}) / {{ step_seconds() }}) as bigint)
{%- endmacro %}

{#- The event vocabulary as SQL, from the vars that mirror ml_tasks/features.py. -#}

{% macro event_type_idx(column) -%}
    case {{ column }}
    {%- for name in var('event_types') %}
        when '{{ name }}' then {{ loop.index }}
    {%- endfor %}
    end
{%- endmacro %}

{% macro event_weight(column) -%}
    case {{ column }}
    {%- for name, weight in var('event_weights').items() %}
        when '{{ name }}' then {{ weight }}
    {%- endfor %}
        else 1.0
    end
{%- endmacro %}

{#- half-lives (hours) of the decayed counts of ml_pair_features: its columns decay_24h, decay_72h, decay_168h -#}
{% macro decay_half_lives() -%}
    {{ return([24, 72, 168]) }}
{%- endmacro %}

{#- the weight of an event type given by its index (1 = view ...) -#}
{% macro event_weight_by_idx(column) -%}
    case {{ column }}
    {%- for name in var('event_types') %}
        when {{ loop.index }} then {{ var('event_weights')[name] }}
    {%- endfor %}
        else 1.0
    end
{%- endmacro %}

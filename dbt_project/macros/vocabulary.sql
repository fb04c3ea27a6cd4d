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

{#- The history order of a user's events, a total order: time, then category index, event type (by name)
    and item -- as ml_tasks.online orders them. `events` and `categories` qualify the columns when given.
    int_events_enriched numbers the events in it; int_user_events_listed lists them in it. -#}
{% macro history_order(events=none, categories=none) -%}
    {%- set e = events ~ '.' if events else '' -%}
    {%- set c = categories ~ '.' if categories else '' -%}
    {{ e }}event_at, {{ c }}category_idx, {{ e }}event_type, {{ e }}item_id
{%- endmacro %}

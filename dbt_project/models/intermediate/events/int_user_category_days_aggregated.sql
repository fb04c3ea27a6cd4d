{#- Each user's interest per category and UTC day: events by type, weighted events, sessions. -#}
{{ config(
    materialized='incremental', unique_key='user_id', incremental_strategy='delete+insert', on_schema_change='fail'
) }}

with events as (
    select * from {{ ref('fct_events') }}
    {% if is_incremental() -%}
    where user_id in ({{ affected_users(ref('fct_events')) }})
    {%- endif %}
),

final as (
    select
        user_id,
        category_idx,
        category_id,
        cast(event_at as date) as event_date,
        count(*) as n_events,
        {% for name in var('event_types') -%}
        count(*) filter (where event_type = '{{ name }}') as n_{{ name }}_events,
        {% endfor -%}
        sum({{ event_weight('event_type') }}) as weighted_events,
        count(distinct session_number) as n_sessions,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at,
        max(last_load_id) as last_load_id,
    from events
    group by user_id, category_idx, category_id, cast(event_at as date)
)

select * from final

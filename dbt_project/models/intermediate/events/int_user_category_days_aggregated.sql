{#- Each user's interest per category and UTC day: events by type, weighted events, sessions. -#}
{{ config(
    materialized='incremental', unique_key='user_id', incremental_strategy='delete+insert', on_schema_change='fail'
) }}

with events as (
    select * from {{ ref('int_events_enriched') }}
    {% if is_incremental() -%}
        where user_id in ({{ affected_users(ref('int_events_enriched')) }})
    {%- endif %}
),

-- per session first: counting sessions is then a count of rows, not a count(distinct ...)
per_session as (
    select
        user_id,
        category_idx,
        session_number,
        cast(event_at as date) as event_date,
        any_value(category_id) as category_id,
        count(*) as n_events,
        {% for name in var('event_types') -%}
            count(*) filter (where event_type = '{{ name }}') as n_{{ name }}_events,
        {% endfor -%}
        sum({{ event_weight('event_type') }}) as weighted_events,
        min(event_at) as first_event_at,
        max(event_at) as last_event_at,
        max(last_load_id) as last_load_id
    from events
    group by user_id, category_idx, cast(event_at as date), session_number
),

per_day as (
    select
        user_id,
        category_idx,
        event_date,
        any_value(category_id) as category_id,
        cast(sum(n_events) as bigint) as n_events,
        {% for name in var('event_types') -%}
            cast(sum(n_{{ name }}_events) as bigint) as n_{{ name }}_events,
        {% endfor -%}
        sum(weighted_events) as weighted_events,
        count(*) as n_sessions,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at,
        max(last_load_id) as last_load_id
    from per_session
    group by user_id, category_idx, event_date
),

final as (
    select
        user_id,
        category_idx,
        category_id,
        event_date,
        n_events,
        {% for name in var('event_types') -%}
            n_{{ name }}_events,
        {% endfor -%}
        weighted_events,
        n_sessions,
        first_event_at,
        last_event_at,
        last_load_id
    from per_day
)

select * from final

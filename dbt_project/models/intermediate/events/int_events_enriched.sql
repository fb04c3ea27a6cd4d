{#-
    Clean, deduplicated events with the stable category index, history position and session.
    Incremental per user (see macros/incremental.sql): new loads rewrite the rows of the users they
    touch, so the table equals a full refresh.
-#}
-- depends_on: {{ ref('stg_raw__events') }}
{{ config(
    materialized='incremental', unique_key='user_id', incremental_strategy='delete+insert', on_schema_change='fail'
) }}

with events as (
    select * from {{ ref('int_events_sessionised') }}
    {% if is_incremental() -%}
    where user_id in ({{ affected_users(ref('stg_raw__events')) }})
    {%- endif %}
),

final as (
    select
        events.user_id,
        events.item_id,
        events.category_id,
        events.category_idx,
        events.event_type,
        cast(events.event_type_idx as integer) as event_type_idx,
        events.event_at,
        events.event_ts,
        events.user_event_pos,
        events.session_number,
        events.is_session_start,
        events.first_load_id,
        events.last_load_id,
        events.n_copies,
    from events
)

select * from final

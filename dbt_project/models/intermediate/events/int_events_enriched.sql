{#-
    The clean events fct_events and the interest days read (the ML tables list the same order from
    staging themselves, in int_user_events_listed): distinct
    events with the stable category index, the event type index and their place in the user's history --
    a total order per user (time, then category index, event type and item, so ties are broken the same
    way every run and as ml_tasks.online does), the position in it, and sessions: a gap longer than
    session_gap_minutes since the user's previous event starts a new one.

    Stored once (one dedup pass, one sort per user); fct_events is a view over it. Incremental per user
    (see macros/incremental.sql): new loads rewrite the rows of the users they touch, from all their
    events, so the table equals a full refresh.
-#}
{{ config(
    materialized='incremental', unique_key='user_id', incremental_strategy='delete+insert', on_schema_change='fail'
) }}

with events as (
    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() -%}
        where user_id in ({{ affected_users(ref('stg_raw__events')) }})
    {%- endif %}
),

categories as (
    select * from {{ ref('int_categories_indexed') }}
),

indexed as (
    select
        events.*,
        categories.category_idx,
        cast({{ event_type_idx('events.event_type') }} as integer) as event_type_idx
    from events
    inner join categories on events.category_id = categories.category_id
),

ordered as (
    select
        *,
        row_number() over user_history as user_event_pos,
        lag(event_ts) over user_history as previous_event_ts
    from indexed
    window user_history as (partition by user_id order by {{ history_order() }})
),

flagged as (
    select
        *,
        previous_event_ts is null
        or event_ts - previous_event_ts > {{ var('session_gap_minutes') | int * 60 }} as is_session_start
    from ordered
),

final as (
    select
        user_id,
        item_id,
        category_id,
        category_idx,
        event_type,
        event_type_idx,
        event_at,
        event_ts,
        user_event_pos,
        cast(sum(cast(is_session_start as integer)) over (
            partition by user_id order by user_event_pos rows between unbounded preceding and current row
        ) as bigint) as session_number,
        is_session_start,
        first_load_id,
        last_load_id,
        n_copies
    from flagged
)

select * from final

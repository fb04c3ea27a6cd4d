{#-
    Clean, deduplicated events with the stable category index, history position and session: the rows
    of int_events_enriched (incremental there), exported as events.parquet. A view, so the events are
    deduplicated, sorted and stored once.
-#}
{{ config(materialized='view') }}

with events as (
    select * from {{ ref('int_events_enriched') }}
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
        session_number,
        is_session_start,
        first_load_id,
        last_load_id,
        n_copies
    from events
)

select * from final

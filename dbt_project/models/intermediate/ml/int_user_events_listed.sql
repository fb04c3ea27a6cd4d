{#-
    Each user's whole history as ordered lists (DESIGN.md: build the list once per user, then slice
    it at every cutoff). Incremental per user.
-#}
{{ config(
    materialized='incremental', unique_key='user_id', incremental_strategy='delete+insert', on_schema_change='fail'
) }}

with events as (
    select * from {{ ref('int_events_enriched') }}
    {% if is_incremental() -%}
        where user_id in ({{ affected_users(ref('int_events_enriched')) }})
    {%- endif %}
),

final as (
    select
        user_id,
        count(*) as n_events,
        list(event_ts order by user_event_pos) as event_ts_list,
        list(category_idx order by user_event_pos) as category_idx_list,
        list(event_type_idx order by user_event_pos) as event_type_idx_list,
        max(last_load_id) as last_load_id
    from events
    group by user_id
)

select * from final

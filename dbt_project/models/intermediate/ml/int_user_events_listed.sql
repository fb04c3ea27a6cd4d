{#-
    Each user's whole history as ordered lists (DESIGN.md: build the list once per user, then slice
    it at every cutoff), straight from the distinct events: one sort per user, of one list of
    (time, category, event type) entries, split into the three lists. The order is
    int_events_enriched's history order (time, then category index, event type and item), which
    the unit test `histories_are_listed_in_the_enriched_history_order` checks; reading the staging rows
    here spares the ML tables the enriched table's positions and sessions. Incremental per user.
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

listed as (
    select
        events.user_id,
        count(*) as n_events,
        list(
            {
                'event_ts': events.event_ts,
                'category_idx': categories.category_idx,
                'event_type_idx': cast({{ event_type_idx('events.event_type') }} as integer)
            }
            order by {{ history_order('events', 'categories') }}
        ) as history,
        max(events.last_load_id) as last_load_id
    from events
    inner join categories on events.category_id = categories.category_id
    group by events.user_id
),

split as (
    select
        listed.user_id,
        listed.n_events,
        listed.last_load_id,
        list_transform(listed.history, lambda entry: entry.event_ts) as event_ts_list,
        list_transform(listed.history, lambda entry: entry.category_idx) as category_idx_list,
        list_transform(listed.history, lambda entry: entry.event_type_idx) as event_type_idx_list
    from listed
),

final as (
    select
        user_id,
        n_events,
        event_ts_list,
        category_idx_list,
        event_type_idx_list,
        last_load_id
    from split
)

select * from final

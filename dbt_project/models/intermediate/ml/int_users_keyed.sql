{#- A dense integer key per user for the ML tables' joins and sorts (rebuilt every run; never exported),
    with the user's first and last event time. -#}
{{ config(materialized='table') }}

with histories as (
    select * from {{ ref('int_user_events_listed') }}
),

keyed as (
    select
        user_id,
        n_events,
        event_ts_list[1] as first_event_ts,
        event_ts_list[-1] as last_event_ts,
        row_number() over (order by user_id) as user_key
    from histories
),

final as (
    select
        user_id,
        user_key,
        n_events,
        first_event_ts,
        last_event_ts
    from keyed
)

select * from final

{#- A dense integer key per user for the ML tables' joins and sorts (rebuilt every run; never exported). -#}
{{ config(materialized='table') }}

with histories as (
    select user_id, n_events from {{ ref('int_user_events_listed') }}
),

final as (
    select
        user_id,
        row_number() over (order by user_id) as user_key,
        n_events,
    from histories
)

select * from final

{#- Each user's interest per category over the whole history, and over the last 7 days of the data. -#}
with days as (
    select * from {{ ref('int_user_category_days_aggregated') }}
),

last_day as (
    select max(event_date) as last_date
    from days
),

per_pair as (
    select
        days.user_id,
        days.category_idx,
        days.category_id,
        sum(days.n_events) as n_events,
        sum(days.weighted_events) as weighted_events,
        sum(days.weighted_events) filter (
            where days.event_date > last_day.last_date - 7
        ) as weighted_events_last_7d,
        count(*) as n_active_days,
        sum(days.n_sessions) as n_session_days,
        min(days.first_event_at) as first_event_at,
        max(days.last_event_at) as last_event_at
    from days
    cross join last_day
    group by days.user_id, days.category_idx, days.category_id
),

ranked as (
    select
        user_id,
        category_idx,
        category_id,
        n_events,
        weighted_events,
        n_active_days,
        n_session_days,
        first_event_at,
        last_event_at,
        cast(row_number() over (
            partition by user_id order by weighted_events desc, last_event_at desc, category_idx asc
        ) as integer) as interest_rank,
        coalesce(weighted_events_last_7d, 0) as weighted_events_last_7d,
        weighted_events / sum(weighted_events) over (partition by user_id) as share_of_user_interest
    from per_pair
),

final as (
    select
        user_id,
        category_idx,
        category_id,
        n_events,
        weighted_events,
        weighted_events_last_7d,
        share_of_user_interest,
        interest_rank,
        n_active_days,
        n_session_days,
        first_event_at,
        last_event_at
    from ranked
)

select * from final

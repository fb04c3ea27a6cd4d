{#- One row per category: its stable index, first event, first load, and its events and users. -#}
with categories as (
    select * from {{ ref('int_categories_indexed') }}
),

events as (
    select * from {{ ref('int_events_enriched') }}
),

counts as (
    select
        category_idx,
        count(*) as n_events,
        count(distinct user_id) as n_users
    from events
    group by category_idx
),

joined as (
    select
        categories.category_idx,
        categories.category_id,
        categories.first_load_id,
        epoch_ms(categories.first_event_at) // 1000 as first_event_ts,
        coalesce(counts.n_events, 0) as n_events,
        coalesce(counts.n_users, 0) as n_users
    from categories
    left join counts on categories.category_idx = counts.category_idx
),

final as (
    select
        category_idx,
        category_id,
        first_event_ts,
        n_events,
        n_users,
        first_load_id
    from joined
)

select * from final

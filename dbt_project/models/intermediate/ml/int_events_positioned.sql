{#- Events back in long form from the users' lists, keyed by integers: (user_key, position, time, category,
    event type). Cheaper to scan and join than int_events_enriched with its text ids. -#}
with histories as (
    select * from {{ ref('int_user_events_listed') }}
),

users as (
    select * from {{ ref('int_users_keyed') }}
),

final as (
    select
        users.user_key,
        generate_subscripts(histories.event_ts_list, 1) as user_event_pos,
        unnest(histories.event_ts_list) as event_ts,
        unnest(histories.category_idx_list) as category_idx,
        unnest(histories.event_type_idx_list) as event_type_idx
    from histories
    inner join users on histories.user_id = users.user_id
)

select * from final

with source as (
    select * from {{ source('raw', 'events') }}
),

renamed as (
    select
        {{ pseudonymised_user_id('user_id') }} as user_id,
        item_id,
        category_id,
        event_type,
        event_ts as event_at,
        load_id
    from source
),

deduplicated as (
    select
        user_id,
        item_id,
        category_id,
        event_type,
        event_at,
        min(load_id) as first_load_id,
        max(load_id) as last_load_id,
        count(*) as n_copies
    from renamed
    group by user_id, item_id, category_id, event_type, event_at
),

converted as (
    select
        *,
        epoch_ms(event_at) // 1000 as event_ts
    from deduplicated
),

final as (
    select
        user_id,
        item_id,
        category_id,
        event_type,
        event_at,
        event_ts,
        first_load_id,
        last_load_id,
        n_copies
    from converted
)

select * from final

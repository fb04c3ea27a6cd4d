{#-
    Every row of raw.events, one per loaded copy (identical rows are not merged here; stg_raw__events
    keeps each event once), with the staging column names. int_categories_indexed reads it: grouping
    the raw rows by (category, load) is far cheaper than deduplicating them first.
-#}
with source as (
    select * from {{ source('raw', 'events') }}
),

final as (
    select
        {{ pseudonymised_user_id('user_id') }} as user_id,
        item_id,
        category_id,
        event_type,
        event_ts as event_at,
        load_id,
        source_file,
        line_number
    from source
)

select * from final

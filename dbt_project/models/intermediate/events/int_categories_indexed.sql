{#-
    The stable integer index of each category: categories are numbered 1..n by first appearance -- the
    first load that had the category, then its first event time within that load, then its id. A later
    load, even one with older events, only appends new numbers and never renumbers old ones, so a full
    refresh and an incremental run agree.

    Read from the raw rows (stg_raw__event_rows), not the deduplicated staging events: the result is the
    same (an event's first load is its copies' smallest load_id, so a category's smallest load_id over its
    raw rows is its first load, and that load's raw rows of the category are copies of exactly the events
    first loaded there), and grouping the raw rows by (category, load) is far cheaper than deduplicating
    them first.
-#}
{{ config(materialized='table') }}

with raw_events as (
    select * from {{ ref('stg_raw__event_rows') }}
),

per_load as (
    select
        category_id,
        load_id as first_load_id,
        min(event_at) as first_at_in_load
    from raw_events
    group by category_id, load_id
),

per_category as (
    select
        category_id,
        min(first_load_id) as first_load_id,
        arg_min(first_at_in_load, first_load_id) as first_at_in_first_load,
        min(first_at_in_load) as first_event_at
    from per_load
    group by category_id
),

final as (
    select
        cast(row_number() over (order by first_load_id, first_at_in_first_load, category_id) as integer)
            as category_idx,
        category_id,
        first_load_id,
        first_event_at
    from per_category
)

select * from final

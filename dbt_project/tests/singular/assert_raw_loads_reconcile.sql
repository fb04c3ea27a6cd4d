{#- Every load's counts match the rows it left: loaded rows in raw.events, rejected ones in
    raw.rejected_events, and rows_read = rows_loaded + rows_rejected. Rows returned are failures. -#}
with loads as (
    select * from {{ ref('stg_raw__loads') }}
),

loaded as (
    select load_id, count(*) as n_rows from {{ source('raw', 'events') }} group by load_id
),

rejected as (
    select load_id, count(*) as n_rows from {{ ref('stg_raw__rejected_events') }} group by load_id
),

final as (
    select
        loads.load_id,
        loads.rows_read,
        loads.rows_loaded,
        loads.rows_rejected,
        coalesce(loaded.n_rows, 0) as events_found,
        coalesce(rejected.n_rows, 0) as rejects_found,
    from loads
    left join loaded on loads.load_id = loaded.load_id
    left join rejected on loads.load_id = rejected.load_id
)

select * from final
where rows_read <> rows_loaded + rows_rejected
    or events_found <> rows_loaded
    or rejects_found <> rows_rejected

with source as (
    select * from {{ source('raw', 'rejected_events') }}
),

final as (
    select
        load_id,
        source_file,
        line_number,
        raw_line,
        reason
    from source
)

select * from final

with source as (
    select * from {{ source('raw', 'loads') }}
),

final as (
    select
        load_id,
        source_file,
        sha256,
        format as source_format,
        size_bytes,
        rows_read,
        rows_loaded,
        rows_rejected,
        rows_duplicate,
        blank_lines,
        loaded_at,
        duration_s
    from source
)

select * from final

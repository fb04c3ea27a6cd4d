{#- The global temporal split of EVALUATION.md, one row (computed in int_protocol_cutoffs). -#}
with protocol as (
    select * from {{ ref('int_protocol_cutoffs') }}
),

final as (
    select
        max_ts,
        test_cutoff_ts,
        val_cutoff_ts,
        score_cutoff_ts,
        horizon_hours,
        cutoff_step_hours,
        sequence_length
    from protocol
)

select * from final

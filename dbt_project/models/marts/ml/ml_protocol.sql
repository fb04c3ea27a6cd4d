{#- The global temporal split of EVALUATION.md, one row. -#}
with events as (
    select event_ts from {{ ref('fct_events') }}
),

bounds as (
    select max(event_ts) as max_ts from events
),

final as (
    select
        max_ts,
        max_ts - {{ horizon_seconds() }} as test_cutoff_ts,
        max_ts - 2 * {{ horizon_seconds() }} as val_cutoff_ts,
        max_ts + 1 as score_cutoff_ts,
        cast({{ var('horizon_hours') | int }} as integer) as horizon_hours,
        cast({{ var('cutoff_step_hours') | int }} as integer) as cutoff_step_hours,
        cast({{ var('sequence_length') | int }} as integer) as sequence_length,
    from bounds
    where max_ts is not null
)

select * from final

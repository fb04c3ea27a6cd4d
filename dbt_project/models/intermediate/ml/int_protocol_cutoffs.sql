{#-
    The global temporal split of EVALUATION.md, one row: the latest event max_ts, the test cutoff one
    horizon before it, the validation cutoff one horizon earlier, the score cutoff max_ts + 1 s, and the
    vars that shape the ML tables. Every ML model reads the cutoffs from here; ml_protocol exports it.
-#}
{{ config(materialized='table') }}

with histories as (
    select * from {{ ref('int_user_events_listed') }}
),

bounds as (
    select max(event_ts_list[-1]) as max_ts  -- each list ends with the user's latest event
    from histories
),

final as (
    select
        max_ts,
        max_ts - {{ horizon_seconds() }} as test_cutoff_ts,
        max_ts - 2 * {{ horizon_seconds() }} as val_cutoff_ts,
        max_ts + 1 as score_cutoff_ts,
        cast({{ var('horizon_hours') | int }} as integer) as horizon_hours,
        cast({{ var('cutoff_step_hours') | int }} as integer) as cutoff_step_hours,
        cast({{ var('sequence_length') | int }} as integer) as sequence_length
    from bounds
    where max_ts is not null
)

select * from final

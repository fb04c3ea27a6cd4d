{#-
    The (user, cutoff) samples of the ML tables and how far each one reaches into the user's history.

    Cutoff grid (EVALUATION.md, ml_tasks.features.SPLITS): T_j = test_cutoff_ts + j * step for j <= 0;
    j = 0 is the test cutoff, -2H < j <= -H the validation cutoffs (their label windows end in
    (T_val, T_test]), j <= -2H training; -H < j < 0 is not exported (its label window crosses T_test).
    H = horizon / step. A grid sample exists when the user has an event before T_j and one in
    [T_j, T_j + horizon): those are the samples that carry a label, and the test samples are exactly
    the evaluated users. Every user also gets a `score` sample at max_ts + 1 s (no label).

    n_history_events: the user's events strictly before the cutoff (the slice [1, n] of the user's
    list); n_until_label_end: those strictly before cutoff + horizon (the label is the slice between).
    sample_rank: 1, 2, ... over the user's grid samples in time order (score: 0).
    Computed on per-(user, grid bucket) counts, never on per-(event, cutoff) pairs.
-#}
{%- set H = horizon_steps() | int -%}
{{ config(materialized='table') }}

with protocol as (
    select * from {{ ref('int_protocol_cutoffs') }}
),

events as (
    select * from {{ ref('int_events_positioned') }}
),

users as (
    select * from {{ ref('int_users_keyed') }}
),

user_buckets as (
    select
        events.user_key,
        {{ bucket_of('events.event_ts', 'protocol.test_cutoff_ts') }} as bucket,
        count(*) as n_events
    from events
    cross join protocol
    group by all
),

cumulative as (
    select
        user_key,
        bucket,
        cast(sum(n_events) over (
            partition by user_key order by bucket rows between unbounded preceding and current row
        ) as bigint) as n_through_bucket
    from user_buckets
),

-- cutoffs whose label window holds the bucket: j in [bucket - H + 1, bucket], exported ones only
window_cutoffs as (
    select
        user_key,
        unnest(range(bucket - {{ H }} + 1, bucket + 1)) as cutoff_step
    from user_buckets
),

candidates as (
    select distinct
        user_key,
        cutoff_step
    from window_cutoffs
    where cutoff_step = 0 or cutoff_step <= -{{ H }}
),

with_history as (
    select
        candidates.user_key,
        candidates.cutoff_step,
        cumulative.n_through_bucket as n_history_events
    from candidates
    asof inner join cumulative
        on candidates.user_key = cumulative.user_key and candidates.cutoff_step > cumulative.bucket
),

with_label_end as (
    select
        with_history.*,
        cumulative.n_through_bucket as n_until_label_end
    from with_history
    asof inner join cumulative
        on
            with_history.user_key = cumulative.user_key
            and with_history.cutoff_step + {{ H }} > cumulative.bucket
),

grid_samples as (
    select
        with_label_end.user_key,
        protocol.test_cutoff_ts + with_label_end.cutoff_step * {{ step_seconds() }} as cutoff_ts,
        with_label_end.cutoff_step,
        case
            when with_label_end.cutoff_step = 0 then 'test'
            when with_label_end.cutoff_step > -2 * {{ H }} then 'val'
            else 'train'
        end as split,
        with_label_end.n_history_events,
        with_label_end.n_until_label_end,
        row_number() over (partition by with_label_end.user_key order by with_label_end.cutoff_step)
            as sample_rank
    from with_label_end
    cross join protocol
),

score_samples as (
    select
        users.user_key,
        protocol.score_cutoff_ts as cutoff_ts,
        cast(null as bigint) as cutoff_step,
        'score' as split,
        users.n_events as n_history_events,
        users.n_events as n_until_label_end,
        0 as sample_rank
    from users
    cross join protocol
),

final as (
    select * from grid_samples
    union all
    select * from score_samples
)

select * from final

{#-
    Per (user, category, grid bucket): counts and running totals that ml_pair_features reads for every
    cutoff the bucket is the latest one before, instead of joining every event to every later cutoff.

    covers_from_rank / covers_to_rank: the user's grid samples (sample_rank of
    int_user_cutoffs_enumerated) whose latest bucket of this category is this one: those with a cutoff
    after this bucket and not after the category's next bucket.

    Decayed counts sum weight * 0.5 ** (age_hours / half_life). They are kept as "mass" anchored at the
    start of an era of ERA_BUCKETS buckets (at most 500 half-lives of 24 h), so that the exponentials
    neither overflow nor underflow for data sets spanning decades (MovieLens): at a cutoff T the decayed
    count is era_mass * 2 ** ((era_anchor - T) / h) plus the previous era's total, decayed the same way;
    older eras are more than 500 * 24 h / h half-lives back and contribute nothing a double can hold.

    n_through_d<d>: events in the buckets [bucket - d, bucket], for the last-horizon counts.
-#}
{%- set H = horizon_steps() | int -%}
{%- set era_buckets = (500 * 24) // (var('cutoff_step_hours') | int) -%}
{{ config(materialized='table') }}

with protocol as (
    select * from {{ ref('ml_protocol') }}
),

samples as (
    select user_key, cutoff_step from {{ ref('int_user_cutoffs_enumerated') }} where split <> 'score'
),

events as (
    select
        events.user_key,
        events.category_idx,
        events.event_ts,
        events.user_event_pos,
        {{ event_weight_by_idx('events.event_type_idx') }} as weight,
        {{ bucket_of('events.event_ts', 'protocol.test_cutoff_ts') }} as bucket,
        protocol.test_cutoff_ts,
    from {{ ref('int_events_positioned') }} as events
    cross join protocol
),

anchored as (
    select
        *,
        cast(floor(bucket / {{ era_buckets }}) as bigint) as era,
        test_cutoff_ts + cast(floor(bucket / {{ era_buckets }}) as bigint) * {{ era_buckets * (var('cutoff_step_hours') | int) * 3600 }}
            as era_anchor_ts,
    from events
),

per_bucket as (
    select
        user_key,
        category_idx,
        bucket,
        era,
        any_value(era_anchor_ts) as era_anchor_ts,
        count(*) as n_events,
        sum(weight) as weighted_events,
        max(event_ts) as last_event_ts,
        max(user_event_pos) as last_event_pos,
        {% for h in decay_half_lives() -%}
        sum(weight * pow(2.0, (event_ts - era_anchor_ts) / {{ h * 3600 }}.0)) as mass_{{ h }}h,
        {% endfor %}
    from anchored
    group by user_key, category_idx, bucket, era
),

running as (
    select
        *,
        cast(sum(n_events) over through_bucket as bigint) as n_through_bucket,
        sum(weighted_events) over through_bucket as weighted_through_bucket,
        lead(bucket) over through_bucket as next_bucket,
        {% for i in range(1, H) -%}
        lag(bucket, {{ i }}) over through_bucket as bucket_lag_{{ i }},
        lag(n_events, {{ i }}) over through_bucket as n_events_lag_{{ i }},
        {% endfor -%}
        {% for h in decay_half_lives() -%}
        sum(mass_{{ h }}h) over (
            partition by user_key, category_idx, era order by bucket rows between unbounded preceding and current row
        ) as era_mass_{{ h }}h,
        {% endfor %}
    from per_bucket
    window through_bucket as (
        partition by user_key, category_idx order by bucket rows between unbounded preceding and current row
    )
),

era_totals as (
    select
        user_key,
        category_idx,
        era,
        any_value(era_anchor_ts) as era_anchor_ts,
        {% for h in decay_half_lives() -%}
        sum(mass_{{ h }}h) as total_mass_{{ h }}h,
        {% endfor %}
    from per_bucket
    group by user_key, category_idx, era
),

previous_eras as (
    select
        user_key,
        category_idx,
        era,
        lag(era_anchor_ts) over by_era as previous_era_anchor_ts,
        {% for h in decay_half_lives() -%}
        lag(total_mass_{{ h }}h) over by_era as previous_era_mass_{{ h }}h,
        {% endfor %}
    from era_totals
    window by_era as (partition by user_key, category_idx order by era)
),

-- per user and bucket: how many grid samples have their cutoff at or before the bucket's start
user_buckets as (
    select distinct user_key, bucket from per_bucket
),

samples_seen as (
    select user_key, bucket, n_samples_seen
    from (
        select
            user_key,
            step,
            is_bucket,
            step as bucket,
            count(*) filter (where not is_bucket) over (
                partition by user_key order by step, is_bucket rows between unbounded preceding and current row
            ) as n_samples_seen,
        from (
            select user_key, cutoff_step as step, false as is_bucket from samples
            union all
            select user_key, bucket as step, true as is_bucket from user_buckets
        )
    )
    where is_bucket
),

final as (
    select
        running.user_key,
        running.category_idx,
        running.bucket,
        running.n_events,
        running.n_through_bucket,
        running.weighted_through_bucket,
        running.last_event_ts,
        running.last_event_pos,
        {% for d in range(H) -%}
        cast(running.n_events
            {%- for i in range(1, H) %}
            + case when running.bucket - running.bucket_lag_{{ i }} <= {{ d }} then running.n_events_lag_{{ i }} else 0 end
            {%- endfor %}
        as bigint) as n_through_d{{ d }},
        {% endfor -%}
        running.era_anchor_ts,
        previous_eras.previous_era_anchor_ts,
        {% for h in decay_half_lives() -%}
        running.era_mass_{{ h }}h,
        coalesce(previous_eras.previous_era_mass_{{ h }}h, 0.0) as previous_era_mass_{{ h }}h,
        {% endfor -%}
        seen_here.n_samples_seen + 1 as covers_from_rank,
        coalesce(seen_next.n_samples_seen, user_samples.n_samples) as covers_to_rank,
    from running
    inner join previous_eras
        on running.user_key = previous_eras.user_key
        and running.category_idx = previous_eras.category_idx
        and running.era = previous_eras.era
    inner join samples_seen as seen_here
        on running.user_key = seen_here.user_key and running.bucket = seen_here.bucket
    left join samples_seen as seen_next
        on running.user_key = seen_next.user_key and running.next_bucket = seen_next.bucket
    left join (select user_key, count(*) as n_samples from samples group by user_key) as user_samples
        on running.user_key = user_samples.user_key
)

select
    * replace (coalesce(covers_to_rank, 0) as covers_to_rank)
from final

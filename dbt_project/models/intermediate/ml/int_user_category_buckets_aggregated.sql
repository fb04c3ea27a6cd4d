{#-
    Per (user, category, grid bucket): counts and running totals that ml_pair_features reads for every
    cutoff the bucket is the latest one before, instead of joining every event to every later cutoff.

    covers_from_rank / covers_to_rank: the user's grid samples (sample_rank of
    int_user_cutoffs_enumerated) whose latest bucket of this category is this one: those with a cutoff
    after this bucket and not after the category's next bucket.

    Decayed counts sum weight * 0.5 ** (age_hours / half_life). They are kept as "mass": the sum of
    weight * 2 ** ((event_ts - anchor) / half_life) up to the bucket, anchored at the start of the user's
    era, so that at a cutoff T the decayed count is mass * 2 ** ((anchor - T) / half_life). An era is
    ERA_BUCKETS buckets (500 half-lives of 24 h) from the user's first event, so the exponentials neither
    overflow nor underflow. Nearly every user lives in one era: their masses are plain running sums. For
    the few whose history is longer (MovieLens spans decades), the running sums restart at every era
    and the previous era's total is carried, decayed from its own anchor; events two eras back are more
    than 500 * 24 h / half_life half-lives old and contribute nothing a double can hold.

    n_through_d<d>: events in the buckets [bucket - d, bucket], for the last-horizon counts.
-#}
{%- set H = horizon_steps() | int -%}
{%- set era_buckets = (500 * 24) // (var('cutoff_step_hours') | int) -%}
{%- set step_s = var('cutoff_step_hours') | int * 3600 -%}
{{ config(materialized='table') }}

with protocol as (
    select * from {{ ref('int_protocol_cutoffs') }}
),

samples as (
    select * from {{ ref('int_user_cutoffs_enumerated') }}
),

users_keyed as (
    select * from {{ ref('int_users_keyed') }}
),

positioned_events as (
    select * from {{ ref('int_events_positioned') }}
),

grid_samples as (
    select
        user_key,
        cutoff_step
    from samples
    where split <> 'score'
),

users as (
    select
        users_keyed.user_key,
        {{ bucket_of('users_keyed.first_event_ts', 'protocol.test_cutoff_ts') }} as first_bucket,
        {{ bucket_of('users_keyed.last_event_ts', 'protocol.test_cutoff_ts') }} as last_bucket
    from users_keyed
    cross join protocol
),

events as (
    select
        positioned_events.user_key,
        positioned_events.category_idx,
        positioned_events.event_ts,
        positioned_events.user_event_pos,
        protocol.test_cutoff_ts,
        users.first_bucket,
        {{ event_weight_by_idx('positioned_events.event_type_idx') }} as weight,
        {{ bucket_of('positioned_events.event_ts', 'protocol.test_cutoff_ts') }} as bucket,
        users.last_bucket - users.first_bucket >= {{ era_buckets }} as has_eras
    from positioned_events
    inner join users on positioned_events.user_key = users.user_key
    cross join protocol
),

anchored as (
    select
        *,
        (bucket - first_bucket) // {{ era_buckets }} as era,
        test_cutoff_ts
        + (first_bucket + (bucket - first_bucket) // {{ era_buckets }} * {{ era_buckets }}) * {{ step_s }}
            as era_anchor_ts
    from events
),

per_bucket as (
    select
        user_key,
        category_idx,
        bucket,
        {% for h in decay_half_lives() -%}
            sum(weight * pow(2.0, (event_ts - era_anchor_ts) / {{ h * 3600 }}.0)) as mass_{{ h }}h,
        {% endfor -%}
        any_value(era) as era,
        any_value(era_anchor_ts) as era_anchor_ts,
        any_value(has_eras) as has_eras,
        count(*) as n_events,
        sum(weight) as weighted_events,
        max(event_ts) as last_event_ts,
        max(user_event_pos) as last_event_pos
    from anchored
    group by user_key, category_idx, bucket
),

-- per user: the grid samples' cutoff steps and the buckets with events, on one axis
steps as (
    select
        user_key,
        cutoff_step as step,
        false as is_bucket
    from grid_samples
    union all
    select distinct
        user_key,
        bucket as step,
        true as is_bucket
    from per_bucket
),

steps_counted as (
    select
        user_key,
        step,
        is_bucket,
        count(*) filter (where not is_bucket) over (
            partition by user_key order by step, is_bucket rows between unbounded preceding and current row
        ) as n_samples_seen,
        count(*) filter (where not is_bucket) over (partition by user_key) as n_samples
    from steps
),

-- per user and bucket: how many of the user's grid samples have their cutoff at or before the bucket
samples_seen as (
    select
        user_key,
        step as bucket,
        n_samples_seen,
        n_samples
    from steps_counted
    where is_bucket
),

with_seen as (
    select
        per_bucket.*,
        samples_seen.n_samples_seen,
        samples_seen.n_samples
    from per_bucket
    inner join samples_seen
        on per_bucket.user_key = samples_seen.user_key and per_bucket.bucket = samples_seen.bucket
),

running as (
    select
        *,
        {% for i in range(1, H) -%}
            lag(bucket, {{ i }}) over through_bucket as bucket_lag_{{ i }},
            lag(n_events, {{ i }}) over through_bucket as n_events_lag_{{ i }},
        {% endfor -%}
        {% for h in decay_half_lives() -%}
            sum(mass_{{ h }}h) over through_bucket as running_mass_{{ h }}h,
        {% endfor -%}
        cast(sum(n_events) over through_bucket as bigint) as n_through_bucket,
        sum(weighted_events) over through_bucket as weighted_through_bucket,
        coalesce(lead(n_samples_seen) over through_bucket, n_samples) as covers_to_rank
    from with_seen
    window through_bucket as (
        partition by user_key, category_idx order by bucket rows between unbounded preceding and current row
    )
),

-- users with more than one era: running masses restart per era, plus the previous era's total
era_rows as (
    select * from per_bucket
    where has_eras
),

era_running as (
    select
        user_key,
        category_idx,
        bucket,
        {% for h in decay_half_lives() -%}
            sum(mass_{{ h }}h) over through_bucket_in_era as era_mass_{{ h }}h,
        {% endfor -%}
        era
    from era_rows
    window through_bucket_in_era as (
        partition by user_key, category_idx, era
        order by bucket rows between unbounded preceding and current row
    )
),

era_totals as (
    select
        user_key,
        category_idx,
        era,
        {% for h in decay_half_lives() -%}
            sum(mass_{{ h }}h) as total_mass_{{ h }}h,
        {% endfor -%}
        any_value(era_anchor_ts) as era_anchor_ts
    from era_rows
    group by user_key, category_idx, era
),

previous_eras as (
    select
        user_key,
        category_idx,
        era,
        {% for h in decay_half_lives() -%}
            lag(total_mass_{{ h }}h) over by_era as previous_era_mass_{{ h }}h,
        {% endfor -%}
        lag(era_anchor_ts) over by_era as previous_era_anchor_ts
    from era_totals
    window by_era as (partition by user_key, category_idx order by era)
),

eras as (
    select
        era_running.*,
        {% for h in decay_half_lives() -%}
            previous_eras.previous_era_mass_{{ h }}h,
        {% endfor -%}
        previous_eras.previous_era_anchor_ts
    from era_running
    inner join previous_eras
        on
            era_running.user_key = previous_eras.user_key
            and era_running.category_idx = previous_eras.category_idx
            and era_running.era = previous_eras.era
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
            cast(
                running.n_events
                {%- for i in range(1, H) %}
                    + case
                        when running.bucket - running.bucket_lag_{{ i }} <= {{ d }}
                            then running.n_events_lag_{{ i }}
                        else 0
                    end
                {%- endfor %}
                as bigint
            ) as n_through_d{{ d }},
        {% endfor -%}
        running.era_anchor_ts,
        eras.previous_era_anchor_ts,
        {% for h in decay_half_lives() -%}
            coalesce(eras.era_mass_{{ h }}h, running.running_mass_{{ h }}h) as era_mass_{{ h }}h,
            coalesce(eras.previous_era_mass_{{ h }}h, 0.0) as previous_era_mass_{{ h }}h,
        {% endfor -%}
        running.n_samples_seen + 1 as covers_from_rank,
        running.covers_to_rank
    from running
    left join eras
        on
            running.has_eras
            and running.user_key = eras.user_key
            and running.category_idx = eras.category_idx
            and running.bucket = eras.bucket
)

select * from final

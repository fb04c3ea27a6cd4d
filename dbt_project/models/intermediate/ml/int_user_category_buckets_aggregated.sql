{#-
    Per (user, category, grid bucket): counts and running totals that ml_pair_features reads at each
    cutoff with one as-of lookup (the latest bucket before the cutoff), instead of joining every event
    to every later cutoff.

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

events as (
    select
        events.user_id,
        events.category_idx,
        events.event_ts,
        events.user_event_pos,
        {{ event_weight('events.event_type') }} as weight,
        {{ bucket_of('events.event_ts', 'protocol.test_cutoff_ts') }} as bucket,
        protocol.test_cutoff_ts,
    from {{ ref('fct_events') }} as events
    cross join protocol
),

eras as (
    select
        *,
        cast(floor(bucket / {{ era_buckets }}) as bigint) as era,
    from events
),

anchored as (
    select
        *,
        test_cutoff_ts + era * {{ era_buckets }} * {{ step_seconds() }} as era_anchor_ts,
    from eras
),

per_bucket as (
    select
        user_id,
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
    group by user_id, category_idx, bucket, era
),

running as (
    select
        *,
        cast(sum(n_events) over through_bucket as bigint) as n_through_bucket,
        sum(weighted_events) over through_bucket as weighted_through_bucket,
        {% for d in range(H) -%}
        cast(sum(n_events) over (
            partition by user_id, category_idx order by bucket range between {{ d }} preceding and current row
        ) as bigint) as n_through_d{{ d }},
        {% endfor -%}
        {% for h in decay_half_lives() -%}
        sum(mass_{{ h }}h) over (
            partition by user_id, category_idx, era order by bucket rows between unbounded preceding and current row
        ) as era_mass_{{ h }}h,
        {% endfor %}
    from per_bucket
    window through_bucket as (
        partition by user_id, category_idx order by bucket rows between unbounded preceding and current row
    )
),

era_totals as (
    select
        user_id,
        category_idx,
        era,
        any_value(era_anchor_ts) as era_anchor_ts,
        {% for h in decay_half_lives() -%}
        sum(mass_{{ h }}h) as total_mass_{{ h }}h,
        {% endfor %}
    from per_bucket
    group by user_id, category_idx, era
),

previous_eras as (
    select
        user_id,
        category_idx,
        era,
        lag(era_anchor_ts) over by_era as previous_era_anchor_ts,
        {% for h in decay_half_lives() -%}
        lag(total_mass_{{ h }}h) over by_era as previous_era_mass_{{ h }}h,
        {% endfor %}
    from era_totals
    window by_era as (partition by user_id, category_idx order by era)
),

final as (
    select
        running.user_id,
        running.category_idx,
        running.bucket,
        running.n_events,
        running.n_through_bucket,
        running.weighted_through_bucket,
        running.last_event_ts,
        running.last_event_pos,
        {% for d in range(H) -%}
        running.n_through_d{{ d }},
        {% endfor -%}
        running.era_anchor_ts,
        previous_eras.previous_era_anchor_ts,
        {% for h in decay_half_lives() -%}
        running.era_mass_{{ h }}h,
        coalesce(previous_eras.previous_era_mass_{{ h }}h, 0.0) as previous_era_mass_{{ h }}h,
        {% endfor %}
    from running
    inner join previous_eras
        on running.user_id = previous_eras.user_id
        and running.category_idx = previous_eras.category_idx
        and running.era = previous_eras.era
)

select * from final

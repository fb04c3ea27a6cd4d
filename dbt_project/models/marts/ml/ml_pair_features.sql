{#-
    One row per (user, cutoff, category the user touched before the cutoff): recency/frequency
    features for the predictor, from events strictly before the cutoff only.

    Grid cutoffs read the running totals of int_user_category_buckets_aggregated at the latest bucket
    before the cutoff (an as-of join); the score cutoff (max_ts + 1 s: every event) aggregates the
    events directly.
-#}
{%- set H = horizon_steps() | int -%}

with protocol as (
    select * from {{ ref('ml_protocol') }}
),

samples as (
    select * from {{ ref('int_user_cutoffs_enumerated') }}
),

buckets as (
    select * from {{ ref('int_user_category_buckets_aggregated') }}
),

user_categories as (
    select user_id, category_idx, min(bucket) as first_bucket
    from buckets
    group by user_id, category_idx
),

grid_pairs as (
    select
        samples.user_id,
        samples.cutoff_ts,
        samples.cutoff_step,
        samples.n_history_events,
        user_categories.category_idx,
    from samples
    inner join user_categories
        on samples.user_id = user_categories.user_id
        and user_categories.first_bucket < samples.cutoff_step
    where samples.split <> 'score'
),

grid_features as (
    select
        grid_pairs.user_id,
        grid_pairs.cutoff_ts,
        grid_pairs.category_idx,
        buckets.n_through_bucket as n_events,
        buckets.weighted_through_bucket as weighted_events,
        {% for h in decay_half_lives() -%}
        buckets.era_mass_{{ h }}h * pow(2.0, (buckets.era_anchor_ts - grid_pairs.cutoff_ts) / {{ h * 3600 }}.0)
        + coalesce(
            buckets.previous_era_mass_{{ h }}h
            * pow(2.0, (buckets.previous_era_anchor_ts - grid_pairs.cutoff_ts) / {{ h * 3600 }}.0),
            0.0
        ) as decay_{{ h }}h,
        {% endfor -%}
        (grid_pairs.cutoff_ts - buckets.last_event_ts) / 3600.0 as hours_since_last,
        grid_pairs.n_history_events - buckets.last_event_pos as events_since_last,
        case grid_pairs.cutoff_step - buckets.bucket
            {% for m in range(1, H + 1) -%}
            when {{ m }} then buckets.n_through_d{{ H - m }}
            {% endfor -%}
            else 0
        end as n_events_last_horizon,
    from grid_pairs
    asof inner join buckets
        on grid_pairs.user_id = buckets.user_id
        and grid_pairs.category_idx = buckets.category_idx
        and grid_pairs.cutoff_step > buckets.bucket
),

score_events as (
    select
        events.user_id,
        events.category_idx,
        events.event_ts,
        events.user_event_pos,
        {{ event_weight('events.event_type') }} as weight,
        protocol.score_cutoff_ts as cutoff_ts,
    from {{ ref('fct_events') }} as events
    cross join protocol
),

score_totals as (
    select user_id, n_history_events from samples where split = 'score'
),

score_features as (
    select
        score_events.user_id,
        any_value(score_events.cutoff_ts) as cutoff_ts,
        score_events.category_idx,
        count(*) as n_events,
        sum(score_events.weight) as weighted_events,
        {% for h in decay_half_lives() -%}
        sum(score_events.weight * pow(0.5, (score_events.cutoff_ts - score_events.event_ts) / {{ h * 3600 }}.0))
            as decay_{{ h }}h,
        {% endfor -%}
        (any_value(score_events.cutoff_ts) - max(score_events.event_ts)) / 3600.0 as hours_since_last,
        any_value(score_totals.n_history_events) - max(score_events.user_event_pos) as events_since_last,
        count(*) filter (
            where score_events.event_ts >= score_events.cutoff_ts - {{ horizon_seconds() }}
        ) as n_events_last_horizon,
    from score_events
    inner join score_totals on score_events.user_id = score_totals.user_id
    group by score_events.user_id, score_events.category_idx
),

unioned as (
    select * from grid_features
    union all by name
    select * from score_features
),

final as (
    select
        user_id,
        cutoff_ts,
        cast(category_idx as integer) as category_idx,
        cast(n_events as bigint) as n_events,
        cast(weighted_events as double) as weighted_events,
        {% for h in decay_half_lives() -%}
        cast(decay_{{ h }}h as double) as decay_{{ h }}h,
        {% endfor -%}
        cast(hours_since_last as double) as hours_since_last,
        cast(events_since_last as bigint) as events_since_last,
        cast(n_events_last_horizon as bigint) as n_events_last_horizon,
    from unioned
)

select * from final

{#-
    One row per (user, cutoff, category the user touched before the cutoff): recency/frequency
    features for the predictor, from events strictly before the cutoff only.

    Grid cutoffs: every (user, category, bucket) row of int_user_category_buckets_aggregated holds the
    running totals up to that bucket and the ranks of the user's samples for which it is the latest
    bucket of the category before the cutoff; expanding those ranks gives exactly the output rows. The
    score cutoff (max_ts + 1 s: every event) aggregates the events directly.
-#}
{%- set H = horizon_steps() | int -%}

with protocol as (
    select * from {{ ref('int_protocol_cutoffs') }}
),

samples as (
    select * from {{ ref('int_user_cutoffs_enumerated') }}
),

buckets as (
    select * from {{ ref('int_user_category_buckets_aggregated') }}
),

users as (
    select
        user_id,
        user_key
    from {{ ref('int_users_keyed') }}
),

-- a second import of int_users_keyed rather than a second reference to `users`: DuckDB materialises a
-- CTE read twice, which changes the join order and with it the float summation order of the decays
user_totals as (
    select
        user_key,
        n_events
    from {{ ref('int_users_keyed') }}
),

positioned_events as (
    select * from {{ ref('int_events_positioned') }}
),

expanded as (
    select
        *,
        unnest(range(covers_from_rank, covers_to_rank + 1)) as sample_rank
    from buckets
    where covers_to_rank >= covers_from_rank
),

grid_features as (
    select
        samples.user_key,
        samples.cutoff_ts,
        expanded.category_idx,
        expanded.n_through_bucket as n_events,
        expanded.weighted_through_bucket as weighted_events,
        {% for h in decay_half_lives() -%}
            expanded.era_mass_{{ h }}h
            * pow(2.0, (expanded.era_anchor_ts - samples.cutoff_ts) / {{ h * 3600 }}.0)
            + coalesce(
                expanded.previous_era_mass_{{ h }}h
                * pow(2.0, (expanded.previous_era_anchor_ts - samples.cutoff_ts) / {{ h * 3600 }}.0),
                0.0
            ) as decay_{{ h }}h,
        {% endfor -%}
        (samples.cutoff_ts - expanded.last_event_ts) / 3600.0 as hours_since_last,
        samples.n_history_events - expanded.last_event_pos as events_since_last,
        case samples.cutoff_step - expanded.bucket
            {% for m in range(1, H + 1) -%}
                when {{ m }} then expanded.n_through_d{{ H - m }}
            {% endfor -%}
            else 0
        end as n_events_last_horizon
    from expanded
    inner join samples
        on expanded.user_key = samples.user_key and expanded.sample_rank = samples.sample_rank
),

score_events as (
    select
        positioned_events.user_key,
        positioned_events.category_idx,
        positioned_events.event_ts,
        positioned_events.user_event_pos,
        protocol.score_cutoff_ts as cutoff_ts,
        {{ event_weight_by_idx('positioned_events.event_type_idx') }} as weight
    from positioned_events
    cross join protocol
),

score_features as (
    select
        score_events.user_key,
        any_value(score_events.cutoff_ts) as cutoff_ts,
        score_events.category_idx,
        count(*) as n_events,
        sum(score_events.weight) as weighted_events,
        {% for h in decay_half_lives() -%}
            sum(
                score_events.weight
                * pow(0.5, (score_events.cutoff_ts - score_events.event_ts) / {{ h * 3600 }}.0)
            ) as decay_{{ h }}h,
        {% endfor -%}
        (any_value(score_events.cutoff_ts) - max(score_events.event_ts)) / 3600.0 as hours_since_last,
        any_value(user_totals.n_events) - max(score_events.user_event_pos) as events_since_last,
        count(*) filter (
            where score_events.event_ts >= score_events.cutoff_ts - {{ horizon_seconds() }}
        ) as n_events_last_horizon
    from score_events
    inner join user_totals on score_events.user_key = user_totals.user_key
    group by score_events.user_key, score_events.category_idx
),

unioned as (
    select * from grid_features
    union all by name
    select * from score_features
),

final as (
    select
        users.user_id,
        unioned.cutoff_ts,
        cast(unioned.category_idx as integer) as category_idx,
        cast(unioned.n_events as bigint) as n_events,
        cast(unioned.weighted_events as double) as weighted_events,
        {% for h in decay_half_lives() -%}
            cast(unioned.decay_{{ h }}h as double) as decay_{{ h }}h,
        {% endfor -%}
        cast(unioned.hours_since_last as double) as hours_since_last,
        cast(unioned.events_since_last as bigint) as events_since_last,
        cast(unioned.n_events_last_horizon as bigint) as n_events_last_horizon
    from unioned
    inner join users on unioned.user_key = users.user_key
)

select * from final

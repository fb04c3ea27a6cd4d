{#-
    Point-in-time correctness: no event used for a sample's features is at or after its cutoff.
    1. every sequence event is strictly before its cutoff (gap > 0), and every pair feature's last
       event too (hours_since_last > 0);
    2. for a deterministic 1-in-20 sample of users, recomputed from fct_events by brute force: the
       number of events before each cutoff, the time of the last sequence event, and each pair's event
       count and last event time. Rows returned here are failures.
-#}
with sequences as (
    select * from {{ ref('ml_sequences') }}
),

pairs as (
    select * from {{ ref('ml_pair_features') }}
),

events as (
    select user_id, category_idx, event_ts from {{ ref('fct_events') }}
    where hash(user_id) % 20 = 0
),

sampled_sequences as (
    select * from sequences where hash(user_id) % 20 = 0
),

sequence_truth as (
    select
        sampled_sequences.user_id,
        sampled_sequences.cutoff_ts,
        any_value(sampled_sequences.n_history_events) as n_history_events,
        any_value(sampled_sequences.seq_gap_hours[-1]) as last_gap_hours,
        count(events.event_ts) as true_n_history_events,
        max(events.event_ts) as true_last_event_ts,
    from sampled_sequences
    left join events
        on sampled_sequences.user_id = events.user_id and events.event_ts < sampled_sequences.cutoff_ts
    group by sampled_sequences.user_id, sampled_sequences.cutoff_ts
),

pair_truth as (
    select
        pairs.user_id,
        pairs.cutoff_ts,
        pairs.category_idx,
        any_value(pairs.n_events) as n_events,
        any_value(pairs.hours_since_last) as hours_since_last,
        count(events.event_ts) as true_n_events,
        max(events.event_ts) as true_last_event_ts,
    from pairs
    left join events
        on pairs.user_id = events.user_id
        and pairs.category_idx = events.category_idx
        and events.event_ts < pairs.cutoff_ts
    where hash(pairs.user_id) % 20 = 0
    group by pairs.user_id, pairs.cutoff_ts, pairs.category_idx
),

failures as (
    select user_id, cutoff_ts, 'sequence event at or after its cutoff' as failure
    from sequences
    where list_min(seq_gap_hours) <= 0
    union all
    select user_id, cutoff_ts, 'pair feature event at or after its cutoff'
    from pairs
    where hours_since_last <= 0
    union all
    select user_id, cutoff_ts, 'n_history_events differs from the events before the cutoff'
    from sequence_truth
    where n_history_events <> true_n_history_events
    union all
    select user_id, cutoff_ts, 'last sequence event is not the last event before the cutoff'
    from sequence_truth
    where abs(last_gap_hours - (cutoff_ts - true_last_event_ts) / 3600.0) > 1e-9
    union all
    select user_id, cutoff_ts, 'pair n_events differs from the events before the cutoff'
    from pair_truth
    where n_events <> true_n_events
        or abs(hours_since_last - (cutoff_ts - true_last_event_ts) / 3600.0) > 1e-9
)

select * from failures

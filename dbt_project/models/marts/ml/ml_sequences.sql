{#-
    One row per (user, cutoff): the last L events strictly before the cutoff, oldest first, and the
    label: the categories touched in [cutoff, cutoff + horizon) with their event counts (ascending
    category_idx; empty for the score cutoff). Each user's ordered history is sliced at the sample's
    position -- no event is ever joined to a cutoff it does not belong to.
-#}
{%- set L = var('sequence_length') | int -%}

with samples as (
    select * from {{ ref('int_user_cutoffs_enumerated') }}
),

histories as (
    select * from {{ ref('int_user_events_listed') }}
),

users as (
    select * from {{ ref('int_users_keyed') }}
),

joined as (
    select
        users.user_id,
        samples.cutoff_ts,
        samples.split,
        samples.n_history_events,
        samples.n_until_label_end,
        greatest(samples.n_history_events - {{ L }}, 0) + 1 as first_pos,
        histories.event_ts_list,
        histories.category_idx_list,
        histories.event_type_idx_list
    from samples
    inner join users on samples.user_key = users.user_key
    inner join histories on users.user_id = histories.user_id
),

sliced as (
    select
        user_id,
        cutoff_ts,
        split,
        n_history_events,
        list_slice(category_idx_list, first_pos, n_history_events) as seq_category_idx,
        list_slice(event_type_idx_list, first_pos, n_history_events) as seq_event_type_idx,
        list_transform(
            list_slice(event_ts_list, first_pos, n_history_events),
            lambda event_time: (cutoff_ts - event_time) / 3600.0
        ) as seq_gap_hours,
        list_histogram(
            list_slice(category_idx_list, n_history_events + 1, n_until_label_end)
        ) as label_histogram
    from joined
),

final as (
    select
        user_id,
        cutoff_ts,
        split,
        n_history_events,
        cast(seq_category_idx as integer[]) as seq_category_idx,
        cast(seq_event_type_idx as integer[]) as seq_event_type_idx,
        cast(seq_gap_hours as double[]) as seq_gap_hours,
        cast(coalesce(map_keys(label_histogram), []) as integer[]) as label_category_idx,
        cast(coalesce(map_values(label_histogram), []) as integer[]) as label_event_counts
    from sliced
)

select * from final

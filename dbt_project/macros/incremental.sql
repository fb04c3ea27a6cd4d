{#-
    Incremental models here are rebuilt per user: a run deletes and re-inserts every row of the users
    that have events from loads newer than the newest load already in the model (`load_column` of
    `this`, compared with `first_load_id` of `events`). Sessions, positions and lists of those users
    are then recomputed from all their events, so the result equals a full refresh.
-#}
{% macro affected_users(events, this_load_column) -%}
    select distinct user_id
    from {{ events }}
    where first_load_id > (select coalesce(max({{ this_load_column }}), 0) from {{ this }})
{%- endmacro %}

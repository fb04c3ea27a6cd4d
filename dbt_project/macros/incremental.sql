{#-
    Incremental models here are rebuilt per user: a run deletes and re-inserts every row of the users
    that have a raw row from a load newer than the newest load the model has seen (`last_load_id`:
    the latest load that had a copy of the event). Sessions, positions, lists and duplicate counts of
    those users are recomputed from all their events, so the result equals a full refresh.
-#}
{% macro affected_users(events) -%}
    select distinct user_id
    from {{ events }}
    where last_load_id > (select coalesce(max(last_load_id), 0) from {{ this }})
{%- endmacro %}

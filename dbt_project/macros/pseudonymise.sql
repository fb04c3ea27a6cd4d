{#-
    User ids pseudonymised with a salted SHA-256 when IEP_PSEUDONYMISE_SECRET is set (off by default).
    The secret reaches DuckDB as a variable bound when dbt opens its connection (the profile's plugin
    ml_tasks.data.dbt_connection), never as SQL text: compiled SQL, the manifest and run results only hold
    the variable's name. Unset, the variable is NULL and the ids stay as they are. Changing the secret
    changes every user id: run with --full-refresh afterwards.
-#}
{% macro pseudonymised_user_id(column) -%}
    coalesce(sha256(getvariable('iep_pseudonymise_secret') || {{ column }}), {{ column }})
{%- endmacro %}

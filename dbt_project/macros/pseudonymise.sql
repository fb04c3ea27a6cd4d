{#-
    User ids pseudonymised with a salted SHA-256 when IEP_PSEUDONYMISE_SALT is set (off by default).
    The salt is part of the compiled SQL under target/ (git-ignored): treat that folder as secret when
    the option is on. Changing the salt changes every user id: run with --full-refresh afterwards.
-#}
{% macro pseudonymised_user_id(column) -%}
    {%- set salt = env_var('IEP_PSEUDONYMISE_SALT', '') -%}
    {%- if salt -%}
        sha256('{{ salt | replace("'", "''") }}' || {{ column }})
    {%- else -%}
        {{ column }}
    {%- endif -%}
{%- endmacro %}

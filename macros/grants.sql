{#
    Least-privilege access for BI: the principals in var('bi_reader_grantees') read gold and nothing else.

    - Table and view grants come from dbt's `grants` config on every gold model (dbt_project.yml, models >
      marts), re-applied by dbt after each build: `select` on PostgreSQL, `roles/bigquery.dataViewer` on
      BigQuery (grantees are then IAM principals, e.g. "group:bi@example.com").
    - PostgreSQL also needs the role itself (cluster-level: on-run-start creates it, NOLOGIN, when missing
      and the dbt user may create roles; otherwise a DBA creates it once, see docs/lgpd.md) and `usage` on
      the gold schema (on-run-end), plus default privileges so tables created outside dbt's grant step are
      readable too. No grant is ever given on bronze, silver, snapshots, audit or ops.
    Default grantee: bi_reader on PostgreSQL, none on BigQuery; `--vars '{bi_reader_grantees: []}'` turns it off.
#}
{% macro bi_reader_grantees() -%}
    {%- set grantees = var('bi_reader_grantees', [] if target.type == 'bigquery' else ['bi_reader']) -%}
    {%- if grantees is string -%}
        {%- set grantees = [grantees] -%}
    {%- endif -%}
    {{ return(grantees | list) }}
{%- endmacro %}

{% macro ensure_bi_reader_role() -%}
    {{ return(adapter.dispatch('ensure_bi_reader_role')()) }}
{%- endmacro %}

{% macro default__ensure_bi_reader_role() -%}
    select 1
{%- endmacro %}

{% macro postgres__ensure_bi_reader_role() -%}
    {%- if execute -%}
        {%- for grantee in bi_reader_grantees() -%}
            {%- set found = run_query(
                "select count(*) from pg_roles where rolname = " ~ dbt.string_literal(grantee)
            ).columns[0].values()[0] -%}
            {%- if found == 0 -%}
                {%- set may_create = run_query(
                    "select rolsuper or rolcreaterole from pg_roles where rolname = current_user"
                ).columns[0].values()[0] -%}
                {%- if not may_create -%}
                    {{ exceptions.raise_compiler_error(
                        'The BI role ' ~ grantee ~ ' does not exist and ' ~ target.user ~ ' may not create roles.'
                        ~ ' Ask a DBA to run: create role ' ~ adapter.quote(grantee) ~ ' nologin;'
                        ~ ' (or set the var bi_reader_grantees; docs/lgpd.md)'
                    ) }}
                {%- endif -%}
                {%- do run_query('create role ' ~ adapter.quote(grantee) ~ ' nologin') -%}
                {{ log('Created role ' ~ grantee ~ ' (NOLOGIN; grant it to BI login roles)', info=true) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{% macro grant_bi_reader_schema_usage() -%}
    {{ return(adapter.dispatch('grant_bi_reader_schema_usage')()) }}
{%- endmacro %}

{% macro default__grant_bi_reader_schema_usage() -%}
    select 1
{%- endmacro %}

{% macro postgres__grant_bi_reader_schema_usage() -%}
    {%- set gold = generate_schema_name('gold', none) | trim -%}
    {%- set grantees = bi_reader_grantees() -%}
    {%- if grantees | length == 0 -%}
        select 1
    {%- else -%}
        {%- set quoted = [] -%}
        {%- for grantee in grantees -%}
            {%- do quoted.append(adapter.quote(grantee)) -%}
        {%- endfor -%}
        do $grants$
        begin
            if exists (select 1 from pg_namespace where nspname = {{ dbt.string_literal(gold) }}) then
                grant usage on schema {{ adapter.quote(gold) }} to {{ quoted | join(', ') }};
                alter default privileges in schema {{ adapter.quote(gold) }}
                    grant select on tables to {{ quoted | join(', ') }};
            end if;
        end
        $grants$
    {%- endif -%}
{%- endmacro %}

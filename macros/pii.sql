{#
    Pseudonymisation of personal columns (LGPD): HMAC-SHA256 keyed with WAREHOUSE_PII_KEY, as lower-case hex.

    HMAC(K, m) = sha256((K xor opad) || sha256((K xor ipad) || m)). The `warehouse` CLI derives the two padded
    keys from WAREHOUSE_PII_KEY in Python (loaders/pii_key.py), so the SQL only needs sha256 and concatenation:
    no pgcrypto, no bitwise operators, identical on every adapter. The key never appears in compiled SQL,
    in target/ or in dbt's logs:
      - PostgreSQL: the padded keys are session settings (warehouse_pii.inner_pad / outer_pad) that the CLI
        passes through PGOPTIONS to every dbt connection; they exist only in dbt's own sessions.
      - BigQuery: the CLI writes them (load job) into <ops dataset>.pii_key, a dataset the BI principals are
        never granted; the model reads them by scalar subquery.
    A null input gives a null pseudonym.
#}
{% macro pseudonymise(expression) -%}
    {{ return(adapter.dispatch('pseudonymise')(expression)) }}
{%- endmacro %}

{% macro default__pseudonymise(expression) -%}
    encode(
        sha256(
            decode(current_setting('warehouse_pii.outer_pad'), 'hex')
            || sha256(decode(current_setting('warehouse_pii.inner_pad'), 'hex') || convert_to({{ expression }}, 'UTF8'))
        ),
        'hex'
    )
{%- endmacro %}

{#
    BigQuery: the concatenations are done on hex strings and turned into BYTES by from_hex, which is the
    same HMAC (verified against Python's hmac on the test suite's emulator, whose CONCAT of BYTES is not
    BigQuery's). cast(STRING as BYTES) is the UTF-8 encoding, as convert_to(..., 'UTF8') on PostgreSQL.
#}
{% macro bigquery__pseudonymise(expression) -%}
    {%- set key_table = adapter.quote(target.project) ~ '.' ~ adapter.quote(pii_key_dataset()) ~ '.pii_key' -%}
    to_hex(sha256(from_hex(concat(
        (select outer_pad from {{ key_table }}),
        to_hex(sha256(from_hex(concat(
            (select inner_pad from {{ key_table }}),
            to_hex(cast({{ expression }} as bytes))
        ))))
    ))))
{%- endmacro %}

{% macro pii_key_dataset() -%}
    {{ return(var('ops_schema', env_var('OPS_SCHEMA', 'ops'))) }}
{%- endmacro %}

{#
    on-run-start: when the run builds a model that pseudonymises, fail at once with what to do if the key is
    missing (dbt run directly instead of through `warehouse transform`), rather than deep inside a model.
#}
{% macro pii_key_check() -%}
    {{ return(adapter.dispatch('pii_key_check')()) }}
{%- endmacro %}

{% macro default__pii_key_check() -%}
    {%- if execute and pii_key_needed() -%}
        {%- set result = run_query(
            "select coalesce(length(current_setting('warehouse_pii.inner_pad', true)), 0) = 128"
            ~ " and coalesce(length(current_setting('warehouse_pii.outer_pad', true)), 0) = 128"
        ) -%}
        {%- if not result.columns[0].values()[0] -%}
            {{ exceptions.raise_compiler_error(pii_key_missing_message()) }}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{% macro bigquery__pii_key_check() -%}
    {%- if execute and pii_key_needed() -%}
        {%- set key_table = adapter.get_relation(target.project, pii_key_dataset(), 'pii_key') -%}
        {%- if key_table is none -%}
            {{ exceptions.raise_compiler_error(pii_key_missing_message()) }}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{% macro pii_key_needed() -%}
    {%- for node in graph.nodes.values() -%}
        {%- if node.unique_id in selected_resources and 'pseudonymise(' in (node.raw_code or '') -%}
            {{ return(true) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(false) }}
{%- endmacro %}

{% macro pii_key_missing_message() -%}
    {{ return(
        'The pseudonymisation key is not available to this dbt run. Run dbt through `warehouse transform`'
        ~ ' (it hands WAREHOUSE_PII_KEY to dbt without writing it anywhere), see docs/lgpd.md.'
    ) }}
{%- endmacro %}

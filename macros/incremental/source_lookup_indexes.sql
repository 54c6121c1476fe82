{#
    Indexes on bronze (source) tables that the incremental models look rows up by, on PostgreSQL. A night
    finds the orders that changed by their load time, then reads the lines of those few orders one index
    probe per order (rows_of_keys.sql). They are declared where the tables are, on the source table:

        config:
          meta:
            lookup_indexes: [[order_id]]    # one list of columns per index
            loaded_at_index: true           # plus one on loaded_at as the staging models read it: the
                                            # source's loaded_at_field through to_utc_timestamp()

    and created by on-run-start (dbt run and dbt build) when missing: after the first load of a table,
    and again after a loader's full refresh, which drops its tables with their indexes. So they are
    there whichever tool loaded bronze, and loading does not pay for them. A table that gets an index on
    an expression is analyzed right after, so the planner has the expression's statistics at once (before,
    it guesses that a third of the rows match and scans them all). A run that finds every index pays one
    catalog query; the run that builds them pays the build once (1M order lines: ~2 s in all), and later
    loads only add their rows. BigQuery has no indexes (its models filter partitions and cluster instead).
#}
{% macro source_lookup_index_name(table, columns) -%}
    {{ return(table ~ '__' ~ (columns | join('_')) ~ '__lookup') }}
{%- endmacro %}

{#- the indexes every source table declares: table, index (schema-qualified), name, expressions -#}
{% macro source_lookup_indexes() -%}
    {%- set wanted = [] -%}
    {%- for source_table in graph.sources.values() -%}
        {%- set schema = adapter.quote(source_table.schema) -%}
        {%- set table = schema ~ '.' ~ adapter.quote(source_table.identifier) -%}
        {%- set meta = source_table.config.meta -%}
        {%- set indexes = [] -%}
        {%- for columns in meta.get('lookup_indexes', []) -%}
            {%- set expressions = [] -%}
            {%- for column in columns -%}
                {%- do expressions.append(adapter.quote(column)) -%}
            {%- endfor -%}
            {%- do indexes.append((columns, expressions, false)) -%}
        {%- endfor -%}
        {%- if meta.get('loaded_at_index') -%}
            {%- set loaded_at_field = source_table.loaded_at_field or source_table.config.loaded_at_field -%}
            {%- do indexes.append((['loaded_at'], [to_utc_timestamp(adapter.quote(loaded_at_field))], true)) -%}
        {%- endif -%}
        {%- for columns, expressions, is_expression in indexes -%}
            {%- set name = source_lookup_index_name(source_table.identifier, columns) -%}
            {%- do wanted.append({
                'table': table,
                'name': name,
                'index': schema ~ '.' ~ adapter.quote(name),
                'expressions': expressions,
                'is_expression': is_expression,
            }) -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(wanted) }}
{%- endmacro %}

{% macro ensure_source_lookup_indexes() -%}
    {{ return(adapter.dispatch('ensure_source_lookup_indexes', 'pharma_warehouse')()) }}
{%- endmacro %}

{% macro default__ensure_source_lookup_indexes() -%}
    select 1
{%- endmacro %}

{% macro postgres__ensure_source_lookup_indexes() -%}
    {%- if execute and flags.WHICH in ('run', 'build') -%}
        {%- set wanted = source_lookup_indexes() -%}
        {%- if wanted -%}
            {#- one query: which tables exist, and which of their indexes do not -#}
            {%- set checks = [] -%}
            {%- for index in wanted -%}
                {%- do checks.append(
                    'select ' ~ loop.index0 ~ ' as position, to_regclass(' ~ dbt.string_literal(index.table)
                    ~ ') is not null as has_table, to_regclass(' ~ dbt.string_literal(index.index)
                    ~ ') is not null as has_index'
                ) -%}
            {%- endfor -%}
            {%- set found = run_query(checks | join(' union all ') ~ ' order by position') -%}
            {%- set to_analyze = [] -%}
            {%- for row in found.rows -%}
                {%- set index = wanted[row[0]] -%}
                {%- if row[1] and not row[2] -%}
                    {%- do run_query(
                        'create index if not exists ' ~ adapter.quote(index.name) ~ ' on ' ~ index.table
                        ~ ' (' ~ index.expressions | join(', ') ~ ')'
                    ) -%}
                    {{ log('Created lookup index ' ~ index.index ~ ' on ' ~ index.table, info=true) }}
                    {%- if index.is_expression and index.table not in to_analyze -%}
                        {%- do to_analyze.append(index.table) -%}
                    {%- endif -%}
                {%- endif -%}
            {%- endfor -%}
            {%- for table in to_analyze -%}
                {%- do run_query('analyze ' ~ table) -%}
            {%- endfor -%}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

-- Supplier invoices (NF-e), one row per access key (bronze is merged on it: latest issue of the document).
-- Scalars from the nested parts through json_extract_scalar (portable); the parts stay as json for models
-- that need the items.
with

source as (

    select * from {{ source('gcs_payloads', 'supplier_invoices') }}

),

renamed as (

    select
        cast(trim(access_key) as {{ dbt.type_string() }}) as supplier_invoice_id,
        cast(invoice_number as {{ dbt.type_bigint() }}) as invoice_number,
        cast(series as {{ dbt.type_bigint() }}) as invoice_series,
        {{ to_utc_timestamp('issued_at') }} as issued_at,
        cast(trim(supplier_cnpj) as {{ dbt.type_string() }}) as supplier_cnpj,
        cast(trim(supplier_name) as {{ dbt.type_string() }}) as supplier_name,
        cast(upper(trim(supplier_uf)) as {{ dbt.type_string() }}) as supplier_uf,
        cast(upper(trim(warehouse_id)) as {{ dbt.type_string() }}) as warehouse_id,
        cast({{ json_array_length('items') }} as {{ dbt.type_int() }}) as item_count,
        cast(products_amount as {{ dbt.type_numeric() }}) as products_amount,
        cast(
            {{ json_extract_scalar('totals', ['freight']) }} as {{ dbt.type_numeric() }}
        ) as freight_amount,
        cast(
            {{ json_extract_scalar('totals', ['discount']) }} as {{ dbt.type_numeric() }}
        ) as discount_amount,
        cast(total_amount as {{ dbt.type_numeric() }}) as total_amount,
        cast(icms_amount as {{ dbt.type_numeric() }}) as icms_amount,
        cast(
            {{ json_extract_scalar('taxes', ['pis', 'amount']) }} as {{ dbt.type_numeric() }}
        ) as pis_amount,
        cast(
            {{ json_extract_scalar('taxes', ['cofins', 'amount']) }} as {{ dbt.type_numeric() }}
        ) as cofins_amount,
        items as items_json,
        taxes as taxes_json,
        cast(_source_file as {{ dbt.type_string() }}) as source_file,
        cast(_content_hash as {{ dbt.type_string() }}) as content_hash,
        cast(_record_number as {{ dbt.type_bigint() }}) as record_number,
        cast(_run_id as {{ dbt.type_string() }}) as run_id,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

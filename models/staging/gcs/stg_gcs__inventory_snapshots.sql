-- WMS end-of-day stock, one row per (snapshot_date, warehouse_id, sku) (bronze is merged on that key).
-- The product is as the WMS sent it (SKU, optional id); int_inventory_snapshots_resolved matches it to the
-- ERP's products by SKU.
with

source as (

    select * from {{ source('gcs_payloads', 'inventory_snapshots') }}

),

renamed as (

    select
        {{ dbt.hash(dbt.concat([
            dbt.cast("snapshot_date", dbt.type_string()), "'|'", "upper(trim(warehouse_id))", "'|'", "trim(sku)",
        ])) }} as inventory_snapshot_id,
        cast(snapshot_date as date) as snapshot_date,
        cast(upper(trim(warehouse_id)) as {{ dbt.type_string() }}) as warehouse_id,
        cast(trim(sku) as {{ dbt.type_string() }}) as sku,
        cast(product_id as {{ dbt.type_bigint() }}) as product_id,
        cast(quantity_available as {{ dbt.type_bigint() }}) as quantity_available,
        cast(quantity_reserved as {{ dbt.type_bigint() }}) as quantity_reserved,
        cast(quantity_incoming as {{ dbt.type_bigint() }}) as quantity_incoming,
        {{ to_utc_timestamp('captured_at') }} as captured_at,
        cast(_source_file as {{ dbt.type_string() }}) as source_file,
        cast(_content_hash as {{ dbt.type_string() }}) as content_hash,
        cast(_record_number as {{ dbt.type_bigint() }}) as record_number,
        cast(_run_id as {{ dbt.type_string() }}) as run_id,
        {{ to_utc_timestamp('_loaded_at') }} as loaded_at

    from source

)

select * from renamed

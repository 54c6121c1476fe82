{#
    WMS inventory snapshots matched to the ERP's products by SKU. One row per (snapshot_date,
    warehouse_id, sku): nothing is dropped, snapshots of SKUs the ERP does not know stay with product_id
    null and is_product_known = false. The product id the WMS sent is kept as source_product_id.
#}
with

snapshots as (

    select * from {{ ref('stg_gcs__inventory_snapshots') }}

),

products as (

    select
        product_id,
        sku
    from {{ ref('stg_operational__products') }}

),

resolved as (

    select
        snapshots.inventory_snapshot_id,
        snapshots.snapshot_date,
        snapshots.warehouse_id,
        snapshots.sku,
        products.product_id,
        products.product_id is not null as is_product_known,
        snapshots.product_id as source_product_id,
        snapshots.quantity_available,
        snapshots.quantity_reserved,
        snapshots.quantity_incoming,
        snapshots.quantity_available - snapshots.quantity_reserved as quantity_free,
        snapshots.captured_at,
        snapshots.source_file,
        snapshots.loaded_at

    from snapshots
    left join products
        on snapshots.sku = products.sku

)

select * from resolved

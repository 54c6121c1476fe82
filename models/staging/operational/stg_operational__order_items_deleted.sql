-- Order lines hard-deleted at the source, with the order they belonged to (bronze keeps a deleted row's
-- last version). The other staging models drop deleted rows; an incremental model summing lines per order
-- needs to know which order lost a line, and when the deletion was first seen.
with

deletions as (

    select * from {{ source('operational', 'source_deletions') }}
    where table_name = 'order_items'

),

order_items as (

    select * from {{ source('operational', 'order_items') }}

),

joined as (

    select
        cast(order_items.id as {{ dbt.type_bigint() }}) as order_item_id,
        cast(order_items.order_id as {{ dbt.type_bigint() }}) as order_id,
        {{ to_utc_timestamp('min(deletions.detected_at)') }} as detected_at

    from deletions
    inner join order_items
        on deletions.id = order_items.id
    group by
        order_items.id,
        order_items.order_id

)

select * from joined

-- Nothing dropped between silver and gold: every interaction and every inventory snapshot of staging is
-- in its fact exactly once (unknown customers and SKUs included), and the fact holds nothing else.
-- Returns one row per missing or extra key.
{{ config(severity='error') }}

with

stg_interactions as (

    select interaction_id from {{ ref('stg_gcs__customer_interactions') }}

),

fact_interactions as (

    select interaction_id from {{ ref('fact_customer_interactions') }}

),

stg_snapshots as (

    select inventory_snapshot_id from {{ ref('stg_gcs__inventory_snapshots') }}

),

fact_snapshots as (

    select inventory_snapshot_id from {{ ref('fact_inventory_snapshots') }}

),

interaction_mismatches as (

    select
        'fact_customer_interactions' as fact_name,
        coalesce(stg_interactions.interaction_id, fact_interactions.interaction_id) as record_key,
        case when fact_interactions.interaction_id is null then 'missing' else 'extra' end as problem
    from stg_interactions
    full outer join fact_interactions
        on stg_interactions.interaction_id = fact_interactions.interaction_id
    where
        stg_interactions.interaction_id is null
        or fact_interactions.interaction_id is null

),

snapshot_mismatches as (

    select
        'fact_inventory_snapshots' as fact_name,
        coalesce(stg_snapshots.inventory_snapshot_id, fact_snapshots.inventory_snapshot_id) as record_key,
        case when fact_snapshots.inventory_snapshot_id is null then 'missing' else 'extra' end as problem
    from stg_snapshots
    full outer join fact_snapshots
        on stg_snapshots.inventory_snapshot_id = fact_snapshots.inventory_snapshot_id
    where
        stg_snapshots.inventory_snapshot_id is null
        or fact_snapshots.inventory_snapshot_id is null

),

final as (

    select * from interaction_mismatches
    union all
    select * from snapshot_mismatches

)

select * from final

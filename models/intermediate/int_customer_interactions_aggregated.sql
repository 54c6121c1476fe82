{#
    Customer-service metrics per known customer (customers with at least one interaction; interactions
    of unknown customers are not attributed to anyone). Unit-tested, see yml.

    share_resolved = resolved interactions / interactions, 0..1, rounded to 4 decimals.
    avg_resolution_time_minutes = mean resolution time of the resolved interactions that have one,
    rounded to 2 decimals; null when none has.
#}
with

interactions as (

    select * from {{ ref('int_customer_interactions_resolved') }}
    where is_customer_known

),

aggregated as (

    select
        customer_id,
        count(*) as total_interactions,
        sum(case when interaction_type = 'complaint' then 1 else 0 end) as complaint_count,
        sum(case when is_resolved then 1 else 0 end) as resolved_interactions,
        avg(case when is_resolved then resolution_time_minutes end) as avg_resolution_time_minutes,
        min(started_at) as first_interaction_at,
        max(started_at) as last_interaction_at

    from interactions
    group by customer_id

),

final as (

    select
        customer_id,
        total_interactions,
        complaint_count,
        resolved_interactions,
        round(
            cast(resolved_interactions as {{ dbt.type_numeric() }})
            / cast(total_interactions as {{ dbt.type_numeric() }}),
            4
        ) as share_resolved,
        round(cast(avg_resolution_time_minutes as {{ dbt.type_numeric() }}), 2) as avg_resolution_time_minutes,
        first_interaction_at,
        last_interaction_at

    from aggregated

)

select * from final

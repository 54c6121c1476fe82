-- RFM distribution: customers per RFM segment (customer_360), their share of customers and of revenue,
-- and the segment's typical recency, frequency, order value and estimated lifetime value. Segments are
-- defined in int_customers_rfm_scored (champions, loyal, new, needs_attention, at_risk, hibernating,
-- no_orders).
with

customer_360 as (

    select * from {{ ref('customer_360') }}

),

segments as (

    select
        rfm_segment,
        count(*) as customers,
        sum(total_revenue) as revenue,
        avg(days_since_last_order) as avg_days_since_last_order,
        avg(total_orders) as avg_orders,
        avg(avg_order_value) as avg_order_value,
        avg(estimated_clv) as avg_estimated_clv

    from customer_360
    group by rfm_segment

),

final as (

    select
        rfm_segment,
        customers,
        round(cast(customers as {{ dbt.type_numeric() }}) / sum(customers) over (), 4) as share_of_customers,
        revenue,
        round(revenue / nullif(sum(revenue) over (), 0), 4) as share_of_revenue,
        round(avg_days_since_last_order, 1) as avg_days_since_last_order,
        round(avg_orders, 1) as avg_orders,
        round(avg_order_value, 2) as avg_order_value,
        round(avg_estimated_clv, 2) as avg_estimated_clv

    from segments

)

select * from final
order by revenue desc

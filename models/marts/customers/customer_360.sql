-- One row per customer (customers without orders or interactions included): order history, RFM, CLV,
-- and customer-service metrics. Logic lives in int_customers_rfm_scored and
-- int_customer_interactions_aggregated (both unit-tested); this model only joins and exposes them.
-- Acquisition (utm_source / utm_campaign of the operational customer) with the Facebook campaign's name.
with

customers_scored as (

    select * from {{ ref('int_customers_rfm_scored') }}

),

customer_interactions as (

    select * from {{ ref('int_customer_interactions_aggregated') }}

),

customers as (

    select * from {{ ref('stg_operational__customers') }}

),

campaigns as (

    select * from {{ ref('dim_campaigns') }}

),

customer_acquisition as (

    select
        customers.customer_id,
        customers.utm_source as acquisition_source,
        customers.utm_campaign as acquisition_campaign_id,
        campaigns.campaign_name as acquisition_campaign_name
    from customers
    left join campaigns
        on
            customers.utm_source = 'facebook'
            and customers.utm_campaign = campaigns.campaign_id

),

joined as (

    select
        customers_scored.*,
        coalesce(customer_interactions.total_interactions, 0) as total_interactions,
        coalesce(customer_interactions.complaint_count, 0) as complaint_count,
        customer_interactions.share_resolved,
        customer_interactions.avg_resolution_time_minutes,
        customer_interactions.last_interaction_at,
        customer_acquisition.acquisition_source,
        customer_acquisition.acquisition_campaign_id,
        customer_acquisition.acquisition_campaign_name

    from customers_scored
    left join customer_interactions
        on customers_scored.customer_id = customer_interactions.customer_id
    left join customer_acquisition
        on customers_scored.customer_id = customer_acquisition.customer_id

),

final as (

    select
        cast(customer_id as {{ dbt.type_bigint() }}) as customer_id,
        cast(customer_name as {{ dbt.type_string() }}) as customer_name,
        cast(region as {{ dbt.type_string() }}) as region,
        cast(tier as {{ dbt.type_string() }}) as tier,
        cast(total_orders as {{ dbt.type_bigint() }}) as total_orders,
        cast(total_revenue as {{ dbt.type_numeric() }}) as total_revenue,
        cast(first_order_date as date) as first_order_date,
        cast(last_order_date as date) as last_order_date,
        cast(avg_order_value as {{ dbt.type_numeric() }}) as avg_order_value,
        cast(days_since_last_order as {{ dbt.type_int() }}) as days_since_last_order,
        cast(rfm_recency_score as {{ dbt.type_int() }}) as rfm_recency_score,
        cast(rfm_frequency_score as {{ dbt.type_int() }}) as rfm_frequency_score,
        cast(rfm_monetary_score as {{ dbt.type_int() }}) as rfm_monetary_score,
        cast(rfm_segment as {{ dbt.type_string() }}) as rfm_segment,
        cast(orders_per_year as {{ dbt.type_numeric() }}) as orders_per_year,
        cast(estimated_clv as {{ dbt.type_numeric() }}) as estimated_clv,
        cast(total_interactions as {{ dbt.type_bigint() }}) as total_interactions,
        cast(complaint_count as {{ dbt.type_bigint() }}) as complaint_count,
        cast(share_resolved as {{ dbt.type_numeric() }}) as share_resolved,
        cast(avg_resolution_time_minutes as {{ dbt.type_numeric() }}) as avg_resolution_time_minutes,
        cast(last_interaction_at as {{ dbt.type_timestamp() }}) as last_interaction_at,
        cast(acquisition_source as {{ dbt.type_string() }}) as acquisition_source,
        cast(acquisition_campaign_id as {{ dbt.type_string() }}) as acquisition_campaign_id,
        cast(acquisition_campaign_name as {{ dbt.type_string() }}) as acquisition_campaign_name

    from joined

)

select * from final

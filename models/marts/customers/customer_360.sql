-- One row per customer (customers without orders included): order history, RFM and CLV.
-- Logic lives in int_customers_rfm_scored (unit-tested); this model only exposes it.
with

customers_scored as (

    select * from {{ ref('int_customers_rfm_scored') }}

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
        cast(estimated_clv as {{ dbt.type_numeric() }}) as estimated_clv

    from customers_scored

)

select * from final

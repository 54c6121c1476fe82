{#
    Customer-level metrics, RFM scores and segment, and estimated CLV (unit-tested, see yml).

    RFM scores: 1-5 quintiles (ntile(5)) computed over customers with at least one non-cancelled order;
    5 = best (most recent / most orders / most revenue). Ties are broken by customer_id so that runs are
    deterministic. Customers without orders get null scores and the segment 'no_orders'.

    Segment (recency R x frequency F):
        R >= 4 and F >= 4   champions
        R >= 3 and F >= 3   loyal            (not champions)
        R >= 4 and F <= 2   new              (recent, few orders)
        R  = 3 and F <= 2   needs_attention
        R <= 2 and F >= 3   at_risk          (used to buy often, not recently)
        R <= 2 and F <= 2   hibernating
        no orders           no_orders

    CLV: estimated_clv = avg_order_value * orders_per_year * var('clv_expected_lifetime_years'), with
    orders_per_year = total_orders * 365 / greatest(days since first order + 1, var('clv_min_tenure_days')).
    0 for customers without orders.
#}
with

customers as (

    select * from {{ ref('int_customers_enriched') }}

),

customer_orders as (

    select * from {{ ref('int_customer_orders_aggregated') }}

),

reference_date as (

    select {{ as_of_date() }} as as_of_date

),

customer_metrics as (

    select
        customers.customer_id,
        customers.customer_name,
        customers.region,
        customers.tier,
        coalesce(customer_orders.total_orders, 0) as total_orders,
        coalesce(customer_orders.total_revenue, 0) as total_revenue,
        customer_orders.first_order_date,
        customer_orders.last_order_date,
        coalesce(customer_orders.total_orders, 0) > 0 as has_orders,
        {{ dbt.datediff('customer_orders.last_order_date', 'as_of_date', 'day') }} as days_since_last_order,  -- noqa: LT05
        {{ dbt.datediff('customer_orders.first_order_date', 'as_of_date', 'day') }} + 1 as customer_age_days  -- noqa: LT05

    from customers
    cross join reference_date
    left join customer_orders
        on customers.customer_id = customer_orders.customer_id

),

rfm_scores as (

    select
        *,
        case
            when has_orders
                then ntile(5) over (partition by has_orders order by days_since_last_order desc, customer_id asc)
        end as rfm_recency_score,
        case
            when has_orders
                then ntile(5) over (partition by has_orders order by total_orders asc, customer_id asc)
        end as rfm_frequency_score,
        case
            when has_orders
                then ntile(5) over (partition by has_orders order by total_revenue asc, customer_id asc)
        end as rfm_monetary_score

    from customer_metrics

),

segmented as (

    select
        *,
        case
            when not has_orders then 'no_orders'
            when rfm_recency_score >= 4 and rfm_frequency_score >= 4 then 'champions'
            when rfm_recency_score >= 3 and rfm_frequency_score >= 3 then 'loyal'
            when rfm_recency_score >= 4 then 'new'
            when rfm_recency_score = 3 then 'needs_attention'
            when rfm_frequency_score >= 3 then 'at_risk'
            else 'hibernating'
        end as rfm_segment

    from rfm_scores

),

clv as (

    select
        *,
        case
            when has_orders
                then round(total_revenue / total_orders, 2)
        end as avg_order_value,
        case
            when has_orders
                then
                    cast(total_orders as {{ dbt.type_numeric() }}) * 365
                    / cast(
                        greatest(customer_age_days, {{ var('clv_min_tenure_days') }})
                        as {{ dbt.type_numeric() }}
                    )
        end as orders_per_year

    from segmented

),

final as (

    select
        customer_id,
        customer_name,
        region,
        tier,
        total_orders,
        total_revenue,
        first_order_date,
        last_order_date,
        avg_order_value,
        days_since_last_order,
        rfm_recency_score,
        rfm_frequency_score,
        rfm_monetary_score,
        rfm_segment,
        round(orders_per_year, 4) as orders_per_year,
        coalesce(
            round(
                avg_order_value * orders_per_year
                * cast({{ var('clv_expected_lifetime_years') }} as {{ dbt.type_numeric() }}),
                2
            ),
            0
        ) as estimated_clv

    from clv

)

select * from final

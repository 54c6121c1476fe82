-- Monthly net revenue (non-cancelled order lines) by customer region. `dbt compile` renders it.
with

fact_orders as (

    select * from {{ ref('fact_orders') }}

),

dim_customers as (

    select * from {{ ref('dim_customers') }}

),

dim_time as (

    select * from {{ ref('dim_time') }}

),

final as (

    select
        dim_time.month_start_date,
        dim_customers.region,
        count(distinct fact_orders.order_id) as orders,
        sum(fact_orders.total_amount) as revenue

    from fact_orders
    inner join dim_customers
        on fact_orders.customer_id = dim_customers.customer_id
    inner join dim_time
        on fact_orders.order_date = dim_time.date_day
    where not fact_orders.is_cancelled
    group by
        dim_time.month_start_date,
        dim_customers.region

)

select * from final
order by month_start_date, region

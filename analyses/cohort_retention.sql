-- Monthly cohort retention. A customer's cohort is the month of their first non-cancelled order; for
-- every later month, how many customers of the cohort ordered again (active_customers) and which share of
-- the cohort that is (retention_rate, 0..1). Month 0 is the cohort itself (retention 1).
with

fact_orders as (

    -- every day of history: says so explicitly, as BigQuery's fact_orders requires a partition filter
    select * from {{ ref('fact_orders') }}
    where {{ all_partitions('order_date') }}

),

dim_time as (

    select * from {{ ref('dim_time') }}

),

customer_months as (

    select distinct
        fact_orders.customer_id,
        dim_time.month_start_date as order_month

    from fact_orders
    inner join dim_time
        on fact_orders.order_date = dim_time.date_day
    where not fact_orders.is_cancelled

),

cohorts as (

    select
        customer_id,
        min(order_month) as cohort_month

    from customer_months
    group by customer_id

),

cohort_sizes as (

    select
        cohort_month,
        count(*) as cohort_customers

    from cohorts
    group by cohort_month

),

customer_activity as (

    select
        cohorts.cohort_month,
        customer_months.customer_id,
        {{ dbt.datediff('cohorts.cohort_month', 'customer_months.order_month', 'month') }}
            as months_since_first_order

    from customer_months
    inner join cohorts
        on customer_months.customer_id = cohorts.customer_id

),

retention as (

    select
        cohort_month,
        months_since_first_order,
        count(distinct customer_id) as active_customers

    from customer_activity
    group by
        cohort_month,
        months_since_first_order

),

final as (

    select
        retention.cohort_month,
        retention.months_since_first_order,
        cohort_sizes.cohort_customers,
        retention.active_customers,
        round(
            cast(retention.active_customers as {{ dbt.type_numeric() }}) / cohort_sizes.cohort_customers, 4
        ) as retention_rate

    from retention
    inner join cohort_sizes
        on retention.cohort_month = cohort_sizes.cohort_month

)

select * from final
order by cohort_month, months_since_first_order

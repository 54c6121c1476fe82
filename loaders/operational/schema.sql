-- Operational database of the pharmacy distributor (the source system).
-- Table and column names follow the architecture document; every table has a surrogate
-- primary key `id`, foreign keys, and created_at / updated_at maintained by the application.

create table if not exists suppliers (
    id bigint primary key,
    name text not null,
    cnpj char(14) not null unique,
    type text not null check (type in ('manufacturer', 'distributor')),
    contact_name text,
    contact_email text,
    contact_phone text,
    payment_terms text not null,
    uf char(2) not null,
    region text not null,
    status text not null check (status in ('active', 'inactive')),
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create table if not exists customers (
    id bigint primary key,
    name text not null,
    cnpj char(14) not null unique,
    contact_name text,
    email text,
    phone text,
    address text,
    city text not null,
    uf char(2) not null,
    region text not null,
    tier text not null check (tier in ('bronze', 'silver', 'gold', 'platinum')),
    credit_limit numeric(14, 2) not null check (credit_limit >= 0),
    payment_terms text not null,
    status text not null check (status in ('active', 'inactive', 'suspended')),
    created_at timestamptz not null,
    updated_at timestamptz not null,
    -- acquisition channel; utm_campaign is the Facebook campaign id for facebook-acquired pharmacies
    utm_source text check (utm_source in ('facebook', 'google', 'organic', 'referral')),
    utm_campaign text
);

-- databases created before the acquisition columns existed
alter table customers add column if not exists utm_source text
    check (utm_source in ('facebook', 'google', 'organic', 'referral'));
alter table customers add column if not exists utm_campaign text;

create table if not exists products (
    id bigint primary key,
    sku text not null unique,
    name text not null,
    description text,
    category text not null,
    subcategory text not null,
    manufacturer text not null,
    supplier_id bigint not null references suppliers (id),
    active_ingredient text not null,
    dosage text not null,
    package_size text not null,
    regulatory_code char(13) not null,
    is_generic boolean not null,
    status text not null check (status in ('active', 'discontinued')),
    created_at timestamptz not null,
    updated_at timestamptz not null
);

-- customer_tier null = list price for every tier without a tier-specific price.
create table if not exists pricing (
    id bigint primary key,
    product_id bigint not null references products (id),
    customer_tier text check (customer_tier in ('bronze', 'silver', 'gold', 'platinum')),
    price numeric(12, 2) not null check (price > 0),
    effective_from date not null,
    effective_to date,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create table if not exists inventory (
    id bigint primary key,
    product_id bigint not null references products (id),
    warehouse_id text not null,
    quantity_available integer not null,
    quantity_reserved integer not null,
    quantity_incoming integer not null,
    reorder_point integer not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    unique (product_id, warehouse_id)
);

create table if not exists orders (
    id bigint primary key,
    customer_id bigint not null references customers (id),
    order_date date not null,
    status text not null
        check (status in ('pending', 'confirmed', 'processing', 'shipped', 'delivered', 'cancelled')),
    subtotal numeric(14, 2) not null,
    discount numeric(14, 2) not null,
    tax numeric(14, 2) not null,
    shipping_cost numeric(12, 2) not null,
    total numeric(14, 2) not null,
    payment_method text not null,
    payment_status text not null,
    shipping_address text,
    notes text,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create table if not exists order_items (
    id bigint primary key,
    order_id bigint not null references orders (id) on delete cascade,
    product_id bigint not null references products (id),
    quantity integer not null check (quantity > 0),
    unit_price numeric(12, 2) not null,
    discount numeric(12, 2) not null,
    tax numeric(12, 2) not null,
    total numeric(14, 2) not null,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

create index if not exists ix_orders_updated_at on orders (updated_at);
create index if not exists ix_orders_customer_id on orders (customer_id);
create index if not exists ix_order_items_order_id on order_items (order_id);
create index if not exists ix_order_items_updated_at on order_items (updated_at);
create index if not exists ix_customers_updated_at on customers (updated_at);
create index if not exists ix_products_updated_at on products (updated_at);
create index if not exists ix_pricing_updated_at on pricing (updated_at);
create index if not exists ix_inventory_updated_at on inventory (updated_at);
create index if not exists ix_suppliers_updated_at on suppliers (updated_at);

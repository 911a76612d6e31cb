-- Stored orders. The primary key is the order id that the gateway gave the order and put in
-- the message, so a redelivered message cannot be stored twice.
CREATE TABLE orders (
    id              UUID PRIMARY KEY,
    user_id         BIGINT NOT NULL CHECK (user_id >= 1),
    number_of_items INTEGER NOT NULL CHECK (number_of_items >= 1),
    total_amount    NUMERIC(12, 2) NOT NULL CHECK (total_amount >= 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX orders_by_user ON orders (user_id, created_at DESC);

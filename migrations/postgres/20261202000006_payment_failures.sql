-- The operators' dashboard counts a sale's failed payments once a second.
CREATE INDEX payments_failed_by_sale ON payments (sale_id) WHERE status = 'failed';

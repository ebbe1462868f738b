-- Uploads (contract section 11): photos a buyer attaches to an after-sales
-- claim. The bytes sit in the row: at most 2 MiB each, a few per claim,
-- read rarely. Only `UploadStore` knows this, so an object store can take
-- the bytes later.
CREATE TABLE uploads (
    id           UUID PRIMARY KEY,
    -- The user who sent it: the claim's buyer.
    owner        TEXT NOT NULL,
    -- Decided from the bytes when uploaded, never from the client; what the
    -- file is served as.
    content_type TEXT NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    -- The bounds the upload check enforces, kept by the table too, so no
    -- other path can store what the check would refuse.
    bytes        INTEGER NOT NULL CHECK (bytes BETWEEN 1 AND 2097152),
    width        INTEGER NOT NULL CHECK (width BETWEEN 1 AND 8192),
    height       INTEGER NOT NULL CHECK (height BETWEEN 1 AND 8192),
    data         BYTEA NOT NULL CHECK (octet_length(data) = bytes),
    created_at   TIMESTAMPTZ NOT NULL,
    -- The claim it is on and that claim's sale, whose host may then read
    -- it; set together, once. No foreign key: claims are a later table.
    claim_id     UUID,
    sale_id      UUID,
    CONSTRAINT uploads_attached_whole CHECK ((claim_id IS NULL) = (sale_id IS NULL))
);
-- JPEG, PNG and WebP are compressed already: TOAST would try to compress
-- them again on every insert, for nothing.
ALTER TABLE uploads ALTER COLUMN data SET STORAGE EXTERNAL;
-- The per-user bounds read at each upload: uploads in the last hour...
CREATE INDEX uploads_by_owner ON uploads (owner, created_at);
-- ...and those on no claim yet.
CREATE INDEX uploads_unattached ON uploads (owner) WHERE claim_id IS NULL;
-- A claim's photos.
CREATE INDEX uploads_by_claim ON uploads (claim_id) WHERE claim_id IS NOT NULL;

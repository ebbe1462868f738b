-- The buyer's address book (contract section 10): at most 20 addresses per
-- user, at most one of them the default. The CHECKs repeat the service's
-- validation so a bug cannot store what the contract forbids.

-- One row per user who ever kept an address: the lock of that user's book.
-- Every change takes it first (an upsert, which row-locks until commit), so
-- two adds on two nodes cannot both count 19 and both insert, and the
-- default moves in one piece. A count kept here could drift from the rows;
-- the lock alone cannot.
CREATE TABLE address_books (
    user_id    TEXT PRIMARY KEY,
    -- When the book last changed: what the locking upsert writes.
    changed_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE addresses (
    id         UUID PRIMARY KEY,
    -- Order of insertion: "newest" in the listing, and the default's
    -- successor when the default is deleted. The clock can repeat a value
    -- (or be moved by tests); the sequence cannot.
    seq        BIGINT GENERATED ALWAYS AS IDENTITY,
    user_id    TEXT NOT NULL REFERENCES address_books (user_id),
    name       TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 40),
    -- An 11-digit mainland mobile number or E.164.
    phone      TEXT NOT NULL CHECK (phone ~ '^(1[3-9][0-9]{9}|\+[1-9][0-9]{7,14})$'),
    -- GB/T 2260 province level; the exact list lives in the code.
    province   TEXT NOT NULL CHECK (province ~ '^[0-9]{2}0000$'),
    city       TEXT NOT NULL CHECK (char_length(city) BETWEEN 1 AND 40),
    district   TEXT CHECK (char_length(district) BETWEEN 1 AND 40),
    line       TEXT NOT NULL CHECK (char_length(line) BETWEEN 1 AND 200),
    postcode   TEXT CHECK (postcode ~ '^[0-9]{6}$'),
    is_default BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL
);
-- The listing and the count, per user, without a scan of everyone's books.
CREATE INDEX addresses_by_user ON addresses (user_id, seq DESC);
-- At most one default per user, whatever a bug might try.
CREATE UNIQUE INDEX addresses_one_default ON addresses (user_id) WHERE is_default;

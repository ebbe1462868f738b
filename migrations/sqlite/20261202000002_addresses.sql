-- The buyer's address book (contract section 10): at most 20 addresses per
-- user, at most one of them the default. The same schema as PostgreSQL's,
-- with text uuids and times, and GLOB for PostgreSQL's regular expressions.
-- The CHECKs repeat the service's validation so a bug cannot store what
-- the contract forbids.

-- One row per user who ever kept an address. Every change writes it first:
-- a SQLite transaction that reads before it writes can fail to upgrade its
-- lock, and writing first takes the database's write lock (waiting out the
-- busy timeout) before the count is read, as PostgreSQL's row lock does.
CREATE TABLE address_books (
    user_id    TEXT PRIMARY KEY,
    -- When the book last changed: what the locking upsert writes.
    changed_at TEXT NOT NULL
);

CREATE TABLE addresses (
    -- Order of insertion: "newest" in the listing, and the default's
    -- successor when the default is deleted. AUTOINCREMENT: a deleted
    -- newest row's number is never given again.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL REFERENCES address_books (user_id),
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 40),
    -- An 11-digit mainland mobile number or E.164.
    phone      TEXT NOT NULL CHECK (
        phone GLOB '1[3-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]'
        OR (phone GLOB '+[1-9]*' AND length(phone) BETWEEN 9 AND 16
            AND substr(phone, 2) NOT GLOB '*[^0-9]*')
    ),
    -- GB/T 2260 province level; the exact list lives in the code.
    province   TEXT NOT NULL CHECK (province GLOB '[0-9][0-9]0000'),
    city       TEXT NOT NULL CHECK (length(city) BETWEEN 1 AND 40),
    district   TEXT CHECK (length(district) BETWEEN 1 AND 40),
    line       TEXT NOT NULL CHECK (length(line) BETWEEN 1 AND 200),
    postcode   TEXT CHECK (postcode GLOB '[0-9][0-9][0-9][0-9][0-9][0-9]'),
    is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at TEXT NOT NULL
);
-- The listing and the count, per user, without a scan of everyone's books.
CREATE INDEX addresses_by_user ON addresses (user_id, seq DESC);
-- At most one default per user, whatever a bug might try.
CREATE UNIQUE INDEX addresses_one_default ON addresses (user_id) WHERE is_default;

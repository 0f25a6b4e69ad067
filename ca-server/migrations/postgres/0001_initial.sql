-- The PostgreSQL store: the same tables as SQLite's after its migration 0004, for a new
-- database (there is no earlier PostgreSQL schema to upgrade). Times are BIGINT
-- milliseconds since the Unix epoch (UTC), as in SQLite, so both stores share their row
-- types and comparisons stay numeric.

CREATE TABLE devices (
    udid            TEXT PRIMARY KEY,                -- canonical: uppercase
    serial_number   TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    os_version      TEXT NOT NULL,
    platform        TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

CREATE TABLE certificates (
    serial           TEXT PRIMARY KEY,               -- lowercase hex
    -- Insertion order, for listing a device's certificates oldest first when several were
    -- issued within one millisecond (SQLite uses its rowid).
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    device_udid      TEXT NOT NULL REFERENCES devices (udid),
    user_name        TEXT NOT NULL,                  -- the enrolling user
    bound_user       TEXT,                           -- set at first use at the cert-auth domain
    spki_sha256      TEXT NOT NULL,                  -- lowercase hex
    fingerprint      TEXT NOT NULL,                  -- lowercase hex SHA-256 of the DER
    state            TEXT NOT NULL CHECK (state IN ('unbound', 'bound', 'superseded', 'revoked')),
    not_before_ms    BIGINT NOT NULL,
    not_after_ms     BIGINT NOT NULL,
    issued_at_ms     BIGINT NOT NULL,
    revoked_at_ms    BIGINT,
    renewed_from     TEXT REFERENCES certificates (serial),
    superseded_by    TEXT REFERENCES certificates (serial),
    superseded_at_ms BIGINT,
    lineage          TEXT NOT NULL,                  -- the serial of the enrollment it descends from
    certificate_pem  TEXT NOT NULL
);

-- As in SQLite, few indexes: each is a page write per issuance.
CREATE INDEX certificates_by_device ON certificates (device_udid);
CREATE INDEX certificates_by_user ON certificates (user_name);
CREATE INDEX certificates_by_bound_user ON certificates (bound_user) WHERE bound_user IS NOT NULL;
-- The CRL: revoked and superseded certificates that have not expired.
CREATE INDEX certificates_revoked ON certificates (not_after_ms) WHERE state IN ('revoked', 'superseded');

-- Event ids are not a sequence: an id is the writing transaction's id (pg_current_xact_id())
-- times 2^20 plus the event's ordinal in it, so that a reader that only lists events of
-- finished transactions never skips one that commits later (ca-server/src/store/postgres.rs).
CREATE TABLE events (
    id              BIGINT PRIMARY KEY,
    published_ms    BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('SUCCESS', 'FAILURE')),
    user_name       TEXT,
    device_udid     TEXT,
    serial          TEXT,
    reason          TEXT,
    client_id       TEXT
);
CREATE INDEX events_published ON events (published_ms);

-- OpenID Connect authorization codes, by their SHA-256 (see SQLite's 0003_oidc.sql).
CREATE TABLE oidc_codes (
    code_sha256     TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    nonce           TEXT,
    login_hint      TEXT,
    serial          TEXT NOT NULL,
    auth_time_ms    BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    purge_after_ms  BIGINT NOT NULL,
    redeemed_at_ms  BIGINT,
    replayed_at_ms  BIGINT
);
CREATE INDEX oidc_codes_by_purge ON oidc_codes (purge_after_ms);

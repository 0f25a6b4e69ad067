-- Devices, the certificates issued to them, and the system log.
-- Times are INTEGER milliseconds since the Unix epoch (UTC), so that comparisons are numeric.

CREATE TABLE devices (
    udid            TEXT PRIMARY KEY NOT NULL,
    serial_number   TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    os_version      TEXT NOT NULL,
    platform        TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE TABLE certificates (
    serial          TEXT PRIMARY KEY NOT NULL,       -- lowercase hex
    device_udid     TEXT NOT NULL REFERENCES devices (udid),
    user_name       TEXT NOT NULL,                   -- the enrolling user
    bound_user      TEXT,                            -- set at first use at the cert-auth domain
    spki_sha256     TEXT NOT NULL,                   -- lowercase hex
    fingerprint     TEXT NOT NULL,                   -- lowercase hex SHA-256 of the DER
    state           TEXT NOT NULL CHECK (state IN ('unbound', 'bound', 'superseded', 'revoked')),
    not_before_ms   INTEGER NOT NULL,
    not_after_ms    INTEGER NOT NULL,
    issued_at_ms    INTEGER NOT NULL,
    revoked_at_ms   INTEGER,
    renewed_from    TEXT REFERENCES certificates (serial),
    superseded_by   TEXT REFERENCES certificates (serial),
    certificate_pem TEXT NOT NULL
);

-- Every index costs a random page write per issuance, so there are few: a device holds a
-- handful of certificates, so one index by device serves both the idempotency lookup and
-- the unbound count; presented certificates are found by serial (the primary key) and
-- their fingerprint compared.
CREATE INDEX certificates_by_device ON certificates (device_udid);
-- Revocation by user (enrolling or bound); most certificates are never bound to anyone else.
CREATE INDEX certificates_by_user ON certificates (user_name);
CREATE INDEX certificates_by_bound_user ON certificates (bound_user) WHERE bound_user IS NOT NULL;
-- The CRL.
CREATE INDEX certificates_revoked ON certificates (not_after_ms) WHERE state = 'revoked';

CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    published_ms    INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('SUCCESS', 'FAILURE')),
    user_name       TEXT,
    device_udid     TEXT,
    serial          TEXT,
    reason          TEXT
);

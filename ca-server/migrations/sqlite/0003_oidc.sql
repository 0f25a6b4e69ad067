-- The OpenID Connect provider.
--
-- 1. `oidc_codes`: authorization codes, in the store so that every CA replica can redeem
--    what another issued. Only the SHA-256 of a code is kept: a copy of the database
--    redeems nothing. A row lives until `purge_after_ms` (its expiry plus the lifetime of
--    the access token issued for it), so that a replayed code can still revoke that token;
--    each insertion deletes a bounded number of rows past that time.
-- 2. `events.client_id`: the OpenID Connect client an authentication was for.

CREATE TABLE oidc_codes (
    code_sha256     TEXT PRIMARY KEY NOT NULL,  -- lowercase hex
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,              -- PKCE S256
    nonce           TEXT,
    login_hint      TEXT,
    serial          TEXT NOT NULL,              -- the certificate the browser presented
    auth_time_ms    INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    purge_after_ms  INTEGER NOT NULL,
    redeemed_at_ms  INTEGER,
    replayed_at_ms  INTEGER
);
CREATE INDEX oidc_codes_by_purge ON oidc_codes (purge_after_ms);

ALTER TABLE events ADD COLUMN client_id TEXT;

-- CRL numbers, shared by the replicas: RFC 5280 wants them to increase for each issuer,
-- and every replica signs CRLs, so the last number given out lives here, one row per
-- issuer (by the lowercase hex SHA-256 of its public key).
CREATE TABLE crl_numbers (
    issuer_key_sha256 TEXT PRIMARY KEY,
    last_number       BIGINT NOT NULL
);

-- Event ids that survive a move to another PostgreSQL cluster.
--
-- An event's id is its transaction's id times 2^20 plus its ordinal (0001). Transaction ids
-- belong to the cluster: restored into a new cluster (pg_dump and pg_restore, a logical
-- replication move), the database would hand out ids below the ones it holds, hide the
-- restored events from the log, and collide with them. So ids count from a base:
-- (transaction id + base) * 2^20 + ordinal, where the store raises `base` at start, when
-- the events already stored are at or above what the cluster's transaction ids would give
-- (ca-server/src/store/postgres.rs, `PostgresStore::open`). In the cluster that wrote them
-- the base stays 0.
CREATE TABLE event_id_base (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    base     BIGINT NOT NULL
);
INSERT INTO event_id_base (base) VALUES (0);

-- Enrollment in one round trip. An enrollment is the hot path when a fleet enrolls (a
-- policy pushed to every Mac at once); as a transaction of separate statements it took five
-- round trips (BEGIN, the device lock, the probe, the write, COMMIT), and each round trip
-- costs CPU and, on a busy machine, scheduling latency on both sides. This function does the
-- same in one call, in the caller's implicit transaction, with the same rules as
-- ca-server/src/store/postgres.rs and SQLite's store (the store suite runs both):
--
-- 1. take the device's advisory lock (the same key as every other write on the device);
-- 2. then (each statement of a VOLATILE function sees what committed before it started, so
--    after the lock: everything the previous holder wrote) an active certificate of the
--    device for this key answers the enrollment (idempotency), with its success event;
-- 3. else the unbound limit refuses it;
-- 4. else the device, the certificate and both success events are written.
--
-- Event ids follow the store's rule: the transaction's id plus the base below, times
-- events_per_transaction, plus the event's ordinal.
CREATE FUNCTION devicetrust_enroll(
    lock_class integer,
    events_per_transaction bigint,
    max_unbound bigint,
    now_ms bigint,
    p_udid text,
    p_serial_number text,
    p_display_name text,
    p_os_version text,
    p_platform text,
    p_user text,
    p_serial text,
    p_spki_sha256 text,
    p_fingerprint text,
    p_not_before_ms bigint,
    p_not_after_ms bigint,
    p_certificate_pem text
) RETURNS TABLE (outcome text, serial text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_serial text;
    unbound bigint;
    first_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, hashtext(p_udid));
    first_id := (pg_current_xact_id()::text::bigint + (SELECT base FROM event_id_base)) * events_per_transaction;
    SELECT c.serial INTO found_serial FROM certificates c
     WHERE c.device_udid = p_udid AND c.spki_sha256 = p_spki_sha256
       AND c.state IN ('unbound', 'bound') AND c.not_after_ms > now_ms
     ORDER BY c.issued_at_ms DESC, c.seq DESC LIMIT 1;
    IF found_serial IS NOT NULL THEN
        INSERT INTO events (id, published_ms, event_type, outcome, user_name, device_udid, serial)
        VALUES (first_id, now_ms, 'user.credential.enroll', 'SUCCESS', p_user, p_udid, found_serial);
        RETURN QUERY SELECT 'existing'::text, found_serial;
        RETURN;
    END IF;
    SELECT COUNT(*) INTO unbound FROM certificates c
     WHERE c.device_udid = p_udid AND c.state = 'unbound' AND c.not_after_ms > now_ms;
    IF unbound >= max_unbound THEN
        RETURN QUERY SELECT 'limit_reached'::text, NULL::text;
        RETURN;
    END IF;
    INSERT INTO devices (udid, serial_number, display_name, os_version, platform, created_at_ms, updated_at_ms)
    VALUES (p_udid, p_serial_number, p_display_name, p_os_version, p_platform, now_ms, now_ms)
    ON CONFLICT (udid) DO UPDATE SET serial_number = excluded.serial_number,
        display_name = excluded.display_name, os_version = excluded.os_version,
        platform = excluded.platform, updated_at_ms = excluded.updated_at_ms;
    INSERT INTO certificates (serial, device_udid, user_name, bound_user, spki_sha256, fingerprint, state,
        not_before_ms, not_after_ms, issued_at_ms, renewed_from, lineage, certificate_pem)
    VALUES (p_serial, p_udid, p_user, NULL, p_spki_sha256, p_fingerprint, 'unbound',
        p_not_before_ms, p_not_after_ms, now_ms, NULL, p_serial, p_certificate_pem);
    INSERT INTO events (id, published_ms, event_type, outcome, user_name, device_udid, serial)
    VALUES (first_id, now_ms, 'user.credential.enroll', 'SUCCESS', p_user, p_udid, p_serial),
           (first_id + 1, now_ms, 'pki.cert.issue', 'SUCCESS', p_user, p_udid, p_serial);
    RETURN QUERY SELECT 'issued'::text, p_serial;
END
$$;

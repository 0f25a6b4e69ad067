-- One device, one identity; one active certificate per renewal lineage.
--
-- 1. UDIDs are canonical (uppercase) from now on. Before, case variants of one UDID were
--    stored as different devices, each with its own unbound limit; they are merged here:
--    the most recently updated row keeps its details, the earliest creation time is kept,
--    and every certificate and event follows the uppercase UDID.
-- 2. `superseded_at_ms`: when a renewal replaced the certificate, for the grace period after
--    which a superseded certificate is no longer accepted.
-- 3. `lineage`: the serial of the enrollment a certificate descends from through renewals.
--    A renewal supersedes every active certificate of its lineage, so a device can never
--    fan one certificate out into several active successors; rows that fanned out before
--    keep only their newest active certificate.

-- Certificates reference devices; the keys change in place, so check at commit.
PRAGMA defer_foreign_keys = ON;

UPDATE devices SET created_at_ms = (
    SELECT MIN(d.created_at_ms) FROM devices d WHERE UPPER(d.udid) = UPPER(devices.udid)
);
DELETE FROM devices WHERE rowid NOT IN (
    SELECT rowid FROM (
        SELECT rowid, ROW_NUMBER() OVER (
            PARTITION BY UPPER(udid) ORDER BY updated_at_ms DESC, rowid DESC
        ) AS rank
        FROM devices
    ) WHERE rank = 1
);
UPDATE devices SET udid = UPPER(udid) WHERE udid != UPPER(udid);
UPDATE certificates SET device_udid = UPPER(device_udid) WHERE device_udid != UPPER(device_udid);
UPDATE events SET device_udid = UPPER(device_udid) WHERE device_udid != UPPER(device_udid);

ALTER TABLE certificates ADD COLUMN superseded_at_ms INTEGER;
ALTER TABLE certificates ADD COLUMN lineage TEXT;

UPDATE certificates SET superseded_at_ms = (
    SELECT n.issued_at_ms FROM certificates n WHERE n.serial = certificates.superseded_by
) WHERE superseded_by IS NOT NULL;

WITH RECURSIVE chain (serial, root) AS (
    SELECT serial, serial FROM certificates WHERE renewed_from IS NULL
    UNION ALL
    SELECT c.serial, chain.root FROM certificates c JOIN chain ON c.renewed_from = chain.serial
)
UPDATE certificates SET lineage = (SELECT root FROM chain WHERE chain.serial = certificates.serial);
-- A chain whose start is missing (cannot happen: renewed_from references a row) is its own.
UPDATE certificates SET lineage = serial WHERE lineage IS NULL;

-- Fan-out from before: in each lineage only the newest active certificate stays active.
UPDATE certificates SET
    state = 'superseded',
    superseded_by = (
        SELECT n.serial FROM certificates n
        WHERE n.lineage = certificates.lineage AND n.state IN ('unbound', 'bound')
        ORDER BY n.issued_at_ms DESC, n.rowid DESC LIMIT 1
    ),
    superseded_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE state IN ('unbound', 'bound') AND EXISTS (
    SELECT 1 FROM certificates n
    WHERE n.lineage = certificates.lineage AND n.state IN ('unbound', 'bound')
      AND (n.issued_at_ms > certificates.issued_at_ms
           OR (n.issued_at_ms = certificates.issued_at_ms AND n.rowid > certificates.rowid))
);

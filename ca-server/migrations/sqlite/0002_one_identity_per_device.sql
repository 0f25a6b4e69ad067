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

-- Every statement below is one pass over a table or an indexed lookup per row, so the
-- migration stays linear in the size of the database (it runs before the CA listens).
CREATE TEMP TABLE migration_merged (key TEXT PRIMARY KEY NOT NULL, created_at_ms INTEGER NOT NULL);
INSERT INTO migration_merged
    SELECT UPPER(udid), MIN(created_at_ms) FROM devices GROUP BY UPPER(udid) HAVING COUNT(*) > 1;
UPDATE devices SET created_at_ms = (
    SELECT m.created_at_ms FROM migration_merged m WHERE m.key = UPPER(devices.udid)
) WHERE UPPER(udid) IN (SELECT key FROM migration_merged);
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

CREATE INDEX migration_by_renewed_from ON certificates (renewed_from);
CREATE TEMP TABLE migration_lineage (serial TEXT PRIMARY KEY NOT NULL, root TEXT NOT NULL);
WITH RECURSIVE chain (serial, root) AS (
    SELECT serial, serial FROM certificates WHERE renewed_from IS NULL
    UNION ALL
    SELECT c.serial, chain.root FROM certificates c JOIN chain ON c.renewed_from = chain.serial
)
INSERT INTO migration_lineage SELECT serial, root FROM chain;
UPDATE certificates SET lineage = (
    SELECT m.root FROM migration_lineage m WHERE m.serial = certificates.serial
);
-- A chain whose start is missing (cannot happen: renewed_from references a row) is its own.
UPDATE certificates SET lineage = serial WHERE lineage IS NULL;

-- Fan-out from before: in each lineage only the newest active certificate stays active. The
-- others count as superseded when the one kept was issued, so the grace period does not
-- start again with the migration.
CREATE TEMP TABLE migration_kept (lineage TEXT PRIMARY KEY NOT NULL, serial TEXT NOT NULL, issued_at_ms INTEGER NOT NULL);
INSERT INTO migration_kept
    SELECT lineage, serial, issued_at_ms FROM (
        SELECT lineage, serial, issued_at_ms, ROW_NUMBER() OVER (
            PARTITION BY lineage ORDER BY issued_at_ms DESC, rowid DESC
        ) AS rank
        FROM certificates WHERE state IN ('unbound', 'bound')
    ) WHERE rank = 1;
UPDATE certificates SET
    state = 'superseded',
    superseded_by = (SELECT k.serial FROM migration_kept k WHERE k.lineage = certificates.lineage),
    superseded_at_ms = (SELECT k.issued_at_ms FROM migration_kept k WHERE k.lineage = certificates.lineage)
WHERE state IN ('unbound', 'bound') AND serial NOT IN (SELECT serial FROM migration_kept);

DROP INDEX migration_by_renewed_from;
DROP TABLE migration_merged;
DROP TABLE migration_lineage;
DROP TABLE migration_kept;

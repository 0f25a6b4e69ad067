-- `GET /api/v1/admin/events?since=` (and `devicetrust-ca admin events --since`) finds the
-- first event published at or after a time; without this index that is a scan of the
-- whole log.
CREATE INDEX events_published ON events (published_ms);

-- Scale: a record's text is stored once. A first sync used to write each user's record twice, in
-- its snapshot row and in its `created` change row (1.4 KB each, half of the store's bytes). Now
-- both point at one row of `records`:
-- - a created or updated user's snapshot row and change row share the new record;
-- - a deleted or retired user's change row keeps pointing at its last known record;
-- - a record no change row points at is rewritten in place when the user's row changes (only
--   last-used times moved, say); one a change row points at is left as the log knew it, and the
--   snapshot gets a new one;
-- - pruning the change log drops the records nothing points at any more.
CREATE TABLE records (
    id      INTEGER PRIMARY KEY,
    record  TEXT NOT NULL      -- the OCSF record without `time`
);

-- The snapshot and the change log are rebuilt rather than altered: SQLite's DROP COLUMN leaves
-- each page as full as it was (measured: not one page freed), while a rebuild frees the old
-- tables' pages for the store to reuse.

-- 1. Each snapshot row's record, under the row's own rowid.
INSERT INTO records (id, record) SELECT rowid, record FROM snapshot;
CREATE TABLE snapshot_v8 (
    uid           TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    path          TEXT NOT NULL,
    content_hash  TEXT NOT NULL,  -- sha256 of the record without volatile fields: what "changed" means
    record_hash   TEXT NOT NULL,  -- sha256 of what the record is built from: whether it must be rewritten
    record_id     INTEGER NOT NULL,  -- its record (without `time`) in `records`
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    last_changed  INTEGER NOT NULL,
    last_run_id   INTEGER NOT NULL
);
INSERT INTO snapshot_v8 (uid, account_id, user_name, path, content_hash, record_hash, record_id,
                         first_seen, last_seen, last_changed, last_run_id)
    SELECT uid, account_id, user_name, path, content_hash, record_hash, rowid,
           first_seen, last_seen, last_changed, last_run_id
    FROM snapshot;

-- 2. A change row whose record is the user's current one shares it (most `created` rows); the
--    others get their own, numbered after the snapshot's. Rows from before 0004 have none.
CREATE TABLE changes_v8 (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    account_id  TEXT NOT NULL,
    uid         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'deleted', 'retired')),
    fields      TEXT NOT NULL,   -- JSON array of {path, old, new}
    record_id   INTEGER,         -- the user's record at this change, in `records`
    actor       TEXT             -- who made it, when CloudTrail said (JSON)
);
INSERT INTO records (id, record)
    SELECT c.id + (SELECT COALESCE(MAX(rowid), 0) FROM snapshot), c.record FROM changes c
    WHERE c.record IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM snapshot s WHERE s.uid = c.uid AND s.record = c.record);
INSERT INTO changes_v8 (id, run_id, at, account_id, uid, user_name, kind, fields, record_id, actor)
    SELECT c.id, c.run_id, c.at, c.account_id, c.uid, c.user_name, c.kind, c.fields,
           CASE WHEN c.record IS NULL THEN NULL
                ELSE COALESCE(
                    (SELECT s.rowid FROM snapshot s WHERE s.uid = c.uid AND s.record = c.record),
                    c.id + (SELECT COALESCE(MAX(rowid), 0) FROM snapshot))
           END,
           c.actor
    FROM changes c;

DROP TABLE snapshot;
ALTER TABLE snapshot_v8 RENAME TO snapshot;
CREATE INDEX snapshot_account ON snapshot(account_id, last_run_id);

DROP TABLE changes;
ALTER TABLE changes_v8 RENAME TO changes;
CREATE INDEX changes_at ON changes(at);
CREATE INDEX changes_uid ON changes(uid);
CREATE INDEX changes_account ON changes(account_id, at);
-- Whether a record is still in the log (in place rewrites, pruning).
CREATE INDEX changes_record ON changes(record_id);

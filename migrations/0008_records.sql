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

ALTER TABLE snapshot ADD COLUMN record_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE changes ADD COLUMN record_id INTEGER;   -- NULL: rows from before 0004 had no record

-- 1. Each snapshot row's record, under the row's own rowid.
INSERT INTO records (id, record) SELECT rowid, record FROM snapshot;
UPDATE snapshot SET record_id = rowid;

-- 2. A change row whose record is the user's current one shares it (most `created` rows).
UPDATE changes SET record_id = (
    SELECT s.record_id FROM snapshot s WHERE s.uid = changes.uid AND s.record = changes.record
) WHERE record IS NOT NULL;

-- 3. The others get their own, numbered after the snapshot's.
INSERT INTO records (id, record)
    SELECT id + (SELECT COALESCE(MAX(rowid), 0) FROM snapshot), record FROM changes
    WHERE record IS NOT NULL AND record_id IS NULL;
UPDATE changes SET record_id = id + (SELECT COALESCE(MAX(rowid), 0) FROM snapshot)
    WHERE record IS NOT NULL AND record_id IS NULL;

ALTER TABLE snapshot DROP COLUMN record;
ALTER TABLE changes DROP COLUMN record;
-- Whether a record is still in the log (in place rewrites, pruning).
CREATE INDEX changes_record ON changes(record_id);

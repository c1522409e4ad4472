-- v2 hardening.
-- 1. A user who only left the collected scope (its account left the config, or it is outside a
--    narrower path_prefix) is `retired`, not `deleted`. SQLite cannot alter a CHECK constraint, so
--    the change log is rebuilt with the new kind allowed (ids kept: they order the log).
CREATE TABLE changes_v3 (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    account_id  TEXT NOT NULL,
    uid         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'deleted', 'retired')),
    fields      TEXT NOT NULL    -- JSON array of {path, old, new}
);
INSERT INTO changes_v3 (id, run_id, at, account_id, uid, user_name, kind, fields)
    SELECT id, run_id, at, account_id, uid, user_name, kind, fields FROM changes;
DROP TABLE changes;
ALTER TABLE changes_v3 RENAME TO changes;
CREATE INDEX changes_at ON changes(at);
CREATE INDEX changes_uid ON changes(uid);
CREATE INDEX changes_account ON changes(account_id, at);

-- 2. Records a sink rejected on their own (a 4xx for that record alone), in the content it rejected:
--    not sent again until the content changes (then the row no longer matches the snapshot's hash).
CREATE TABLE sink_rejects (
    sink          TEXT NOT NULL,
    uid           TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    reason        TEXT NOT NULL,
    rejected_at   INTEGER NOT NULL,
    PRIMARY KEY (sink, uid)
) WITHOUT ROWID;

-- iam-inventory store, version 1. Times are epoch milliseconds (UTC).

-- One row per sync (or dry run that was not written: those never reach the store).
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    -- running | ok | partial | failed | interrupted (a process that died mid-run, found at the next open)
    status       TEXT NOT NULL,
    summary      TEXT            -- JSON: the run report
);

-- The outcome of each account in each run.
CREATE TABLE run_accounts (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL,
    role_arn    TEXT,
    status      TEXT NOT NULL,   -- ok | failed
    error       TEXT,
    users       INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL DEFAULT 0,
    updated     INTEGER NOT NULL DEFAULT 0,
    deleted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, account_id)
);

-- The current snapshot: one row per IAM user (uid = ARN).
CREATE TABLE snapshot (
    uid           TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    path          TEXT NOT NULL,
    content_hash  TEXT NOT NULL,  -- sha256 of the record without volatile fields: what "changed" means
    record_hash   TEXT NOT NULL,  -- sha256 of the record without `time`: whether the row must be rewritten
    record        TEXT NOT NULL,  -- the OCSF record without `time` (time = last_seen when read)
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    last_changed  INTEGER NOT NULL,
    last_run_id   INTEGER NOT NULL  -- the last run whose collection of this account saw the user
);
CREATE INDEX snapshot_account ON snapshot(account_id, last_run_id);

-- The change log that `changes` prints.
CREATE TABLE changes (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    account_id  TEXT NOT NULL,
    uid         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    fields      TEXT NOT NULL    -- JSON array of {path, old, new}
);
CREATE INDEX changes_at ON changes(at);
CREATE INDEX changes_uid ON changes(uid);
CREATE INDEX changes_account ON changes(account_id, at);

-- Per sink and user, the content the sink last acknowledged (2xx, or written for file/stdout sinks).
CREATE TABLE sink_acks (
    sink          TEXT NOT NULL,
    uid           TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    acked_at      INTEGER NOT NULL,
    PRIMARY KEY (sink, uid)
) WITHOUT ROWID;

-- Scale: a sync no longer rewrites `snapshot.last_seen` on every unchanged row. Instead, each
-- account's successful full collection is recorded once here; a record's time (the collection
-- that last saw it) is the later of its row's `last_seen` (written when the row changes, or when
-- an incremental refresh read it) and its account's `collected_at`.
CREATE TABLE account_seen (
    account_id    TEXT PRIMARY KEY,
    collected_at  INTEGER NOT NULL,
    run_id        INTEGER NOT NULL
) WITHOUT ROWID;

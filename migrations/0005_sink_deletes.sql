-- v2 deletions at the destination (`on_delete = "delete"`): when a user is deleted from IAM, every
-- sink that had acknowledged it gets a row here, removed once the sink confirms the deletion. Sinks
-- that keep deleted users (the default) drop their rows at their next delivery. Retired users
-- (out of scope, not deleted) get none.
CREATE TABLE sink_deletes (
    sink        TEXT NOT NULL,
    uid         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    deleted_at  INTEGER NOT NULL,
    PRIMARY KEY (sink, uid)
) WITHOUT ROWID;

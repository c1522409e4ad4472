-- v2 change events (OCSF 3001).
-- 1. Each change row keeps the user's record at that change (without `time`): the new one, or for a
--    deletion or retirement the last known one, so a Delete event can carry the user as last known.
--    Rows written before this migration have none; their events carry what the row says.
ALTER TABLE changes ADD COLUMN record TEXT;

-- 2. Per sink that takes change events, the id of the last change row whose every event it has
--    acknowledged: what it still needs is the log after that row, in order, nothing merged away.
CREATE TABLE sink_event_cursors (
    sink        TEXT PRIMARY KEY,
    change_id   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

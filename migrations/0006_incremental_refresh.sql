-- v2 incremental refresh ([events_source]).
-- 1. Who made a change, when CloudTrail told (SQS/EventBridge or LookupEvents): the event's
--    userIdentity as JSON {arn, type, access_key_id, account_id, principal_id, event_name, event_id,
--    event_time}. NULL for changes a full sync found (it cannot know who).
ALTER TABLE changes ADD COLUMN actor TEXT;

-- 2. What wrote a run: a full `sync`, or a `refresh` of the users that events named.
ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'sync';

-- 3. Where a polled events source is (CloudTrail LookupEvents, per account): the newest event time
--    (ms) whose refresh is stored. A restart resumes from here (minus the overlap for late events).
CREATE TABLE event_cursors (
    source      TEXT PRIMARY KEY,   -- e.g. cloudtrail:123456789012
    position    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- 4. Events already acted on, so the overlap re-read does not refresh twice. Pruned past the overlap.
CREATE TABLE seen_events (
    event_id  TEXT PRIMARY KEY,
    at        INTEGER NOT NULL      -- the event's time (ms)
) WITHOUT ROWID;
CREATE INDEX seen_events_at ON seen_events(at);

//! State of a polled events source (`[events_source] type = "cloudtrail"`): a cursor per account
//! and the events already acted on, so a restart resumes where it was and the overlap re-read
//! refreshes nothing twice.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

impl Store {
    /// The newest event time (ms) of `source` whose refresh is stored.
    pub fn event_source_cursor(&self, source: &str) -> Result<Option<i64>> {
        self.lock()
            .query_row(
                "SELECT position FROM event_cursors WHERE source = ?1",
                params![source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql_err("cannot read the events cursor", e))
    }

    /// Moves `source`'s cursor forward (never back) and records the events acted on, in one
    /// transaction: both or neither.
    pub fn advance_event_source(
        &self,
        source: &str,
        position: i64,
        acted_on: &[(String, i64)],
        now_ms: i64,
    ) -> Result<()> {
        let mut conn = self.lock();
        let e = |err| self.sql_err("cannot write the events cursor", err);
        let tx = conn.transaction().map_err(e)?;
        tx.execute(
            "INSERT INTO event_cursors (source, position, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (source) DO UPDATE SET position = MAX(position, excluded.position),
               updated_at = excluded.updated_at",
            params![source, position, now_ms],
        )
        .map_err(e)?;
        {
            let mut seen = tx
                .prepare_cached("INSERT OR IGNORE INTO seen_events (event_id, at) VALUES (?1, ?2)")
                .map_err(e)?;
            for (id, at) in acted_on {
                seen.execute(params![id, at]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Which of `ids` were already acted on.
    pub fn seen_events(&self, ids: &[&str]) -> Result<HashSet<String>> {
        let conn = self.lock();
        let e = |err| self.sql_err("cannot read the events cursor", err);
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let mut stmt = conn
            .prepare_cached(
                "SELECT event_id FROM seen_events WHERE event_id IN (SELECT value FROM json_each(?1))",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map(params![list], |r| r.get::<_, String>(0))
            .map_err(e)?;
        rows.collect::<rusqlite::Result<HashSet<_>>>().map_err(e)
    }

    /// Forgets events older than `before_ms` (past every overlap window).
    pub fn prune_seen_events(&self, before_ms: i64) -> Result<usize> {
        self.lock()
            .execute("DELETE FROM seen_events WHERE at < ?1", params![before_ms])
            .map_err(|e| self.sql_err("cannot prune the events cursor", e))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{OpenMode, Store};

    #[test]
    fn cursor_moves_forward_only_and_remembers_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), OpenMode::ReadWrite).unwrap();
        assert_eq!(store.event_source_cursor("cloudtrail:1").unwrap(), None);
        store
            .advance_event_source(
                "cloudtrail:1",
                200,
                &[("a".into(), 150), ("b".into(), 200)],
                1,
            )
            .unwrap();
        store
            .advance_event_source("cloudtrail:1", 100, &[], 2)
            .unwrap();
        assert_eq!(
            store.event_source_cursor("cloudtrail:1").unwrap(),
            Some(200)
        );
        let seen = store.seen_events(&["a", "c"]).unwrap();
        assert!(seen.contains("a") && !seen.contains("c"));
        assert_eq!(store.prune_seen_events(160).unwrap(), 1);
        assert!(store.seen_events(&["a"]).unwrap().is_empty());
    }
}

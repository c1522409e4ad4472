//! Per-sink acknowledged state: what each sink has confirmed, and therefore what it still needs.

use rusqlite::params;

use super::{Result, Store, with_time};
use crate::config::SinkMode;

/// A record a sink has not acknowledged in its current content.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub uid: String,
    pub content_hash: String,
    /// The full OCSF record (with `time`), as JSON text.
    pub record: String,
    /// `false` = a create (never acknowledged by this sink), `true` = an update.
    pub is_update: bool,
    /// When the content last changed (epoch ms): tells apart two changes back to the same content.
    pub last_changed: i64,
}

impl Store {
    /// Up to `limit` records that `sink` still needs under `mode`, ARN order, after `after_uid`
    /// (keyset paging, so acknowledgements made between pages do not shift the window).
    pub fn pending(
        &self,
        sink: &str,
        mode: SinkMode,
        after_uid: &str,
        limit: usize,
    ) -> Result<Vec<PendingRecord>> {
        let filter = match mode {
            SinkMode::CreateUpdate => "(a.uid IS NULL OR a.content_hash != s.content_hash)",
            SinkMode::CreateOnly => "a.uid IS NULL",
            SinkMode::UpdateOnly => "(a.uid IS NOT NULL AND a.content_hash != s.content_hash)",
        };
        let sql = format!(
            "SELECT s.uid, s.content_hash, s.record, s.last_seen, a.uid IS NOT NULL, s.last_changed
             FROM snapshot s LEFT JOIN sink_acks a ON a.sink = ?1 AND a.uid = s.uid
             WHERE s.uid > ?2 AND {filter}
             ORDER BY s.uid LIMIT ?3"
        );
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        let rows = stmt
            .query_map(params![sink, after_uid, limit as i64], |r| {
                let record: String = r.get(2)?;
                let seen: i64 = r.get(3)?;
                Ok(PendingRecord {
                    uid: r.get(0)?,
                    content_hash: r.get(1)?,
                    record: with_time(&record, seen),
                    is_update: r.get(4)?,
                    last_changed: r.get(5)?,
                })
            })
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql_err("cannot read sink state", e))
    }

    /// How many records `sink` still needs under `mode`.
    pub fn pending_count(&self, sink: &str, mode: SinkMode) -> Result<u64> {
        let filter = match mode {
            SinkMode::CreateUpdate => "(a.uid IS NULL OR a.content_hash != s.content_hash)",
            SinkMode::CreateOnly => "a.uid IS NULL",
            SinkMode::UpdateOnly => "(a.uid IS NOT NULL AND a.content_hash != s.content_hash)",
        };
        let sql = format!(
            "SELECT COUNT(*) FROM snapshot s LEFT JOIN sink_acks a ON a.sink = ?1 AND a.uid = s.uid WHERE {filter}"
        );
        self.lock()
            .query_row(&sql, params![sink], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql_err("cannot read sink state", e))
    }

    /// Marks records as acknowledged by `sink` in the given content, in one transaction.
    pub fn ack(&self, sink: &str, records: &[(&str, &str)], now_ms: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(|e| self.sql_err("cannot record acknowledgements", e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO sink_acks (sink, uid, content_hash, acked_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (sink, uid) DO UPDATE SET content_hash = excluded.content_hash,
                       acked_at = excluded.acked_at",
                )
                .map_err(|e| self.sql_err("cannot record acknowledgements", e))?;
            for (uid, hash) in records {
                stmt.execute(params![sink, uid, hash, now_ms])
                    .map_err(|e| self.sql_err("cannot record acknowledgements", e))?;
            }
        }
        tx.commit()
            .map_err(|e| self.sql_err("cannot record acknowledgements", e))
    }
}

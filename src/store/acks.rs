//! Per-sink acknowledged state: what each sink has confirmed, and therefore what it still needs.

use rusqlite::params;

use super::{Result, SEEN_AT, Store, with_time};
use crate::config::SinkMode;

/// A record a sink has not acknowledged in its current content.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub uid: String,
    pub user_name: String,
    pub content_hash: String,
    /// The full OCSF record (with `time`), as JSON text.
    pub record: String,
    /// The record's `time`: the last collection that saw it (epoch ms).
    pub time_ms: i64,
    /// `false` = a create (never acknowledged by this sink), `true` = an update.
    pub is_update: bool,
    /// When the content last changed (epoch ms): tells apart two changes back to the same content.
    pub last_changed: i64,
}

/// The SQL condition "this sink still needs this snapshot row" under `mode` (`s` = snapshot,
/// `a` = this sink's acknowledgement, `?1` = the sink, `view` = the parameter holding the sink's
/// view suffix): not acknowledged in the current content, and not rejected in exactly this content.
///
/// What a sink acknowledges is the content it received: the record's content hash, plus for a sink
/// with `[sinks.fields]` the mapping's fingerprint (`<hash>:<fingerprint>`). A mapping change thus
/// makes every record pending again for that sink alone; a sink without a mapping has the empty
/// suffix, so its state is the plain content hash, as before mappings existed.
fn needs(mode: SinkMode, view: &str) -> String {
    let acked = format!("a.content_hash = s.content_hash || {view}");
    let wanted = match mode {
        SinkMode::CreateUpdate => format!("(a.uid IS NULL OR NOT ({acked}))"),
        SinkMode::CreateOnly => "a.uid IS NULL".to_string(),
        SinkMode::UpdateOnly => format!("(a.uid IS NOT NULL AND NOT ({acked}))"),
    };
    // A user deleted and re-created under the same ARN waits until the sink has confirmed the
    // deletion: a delete sent after the new record would remove it.
    format!(
        "{wanted} AND NOT EXISTS (SELECT 1 FROM sink_rejects r
           WHERE r.sink = ?1 AND r.uid = s.uid AND r.content_hash = s.content_hash || {view})
         AND NOT EXISTS (SELECT 1 FROM sink_deletes d WHERE d.sink = ?1 AND d.uid = s.uid)"
    )
}

impl Store {
    /// Up to `limit` records that `sink` still needs under `mode` and its `view` suffix (see
    /// [`needs`]), ARN order, after `after_uid` (keyset paging, so acknowledgements made between
    /// pages do not shift the window). Their `content_hash` carries the suffix: acknowledge it as is.
    pub fn pending(
        &self,
        sink: &str,
        mode: SinkMode,
        view: &str,
        after_uid: &str,
        limit: usize,
    ) -> Result<Vec<PendingRecord>> {
        let filter = needs(mode, "?4");
        let sql = format!(
            "SELECT s.uid, s.content_hash || ?4, r.record, {SEEN_AT}, a.uid IS NOT NULL, s.last_changed, s.user_name
             FROM snapshot s LEFT JOIN records r ON r.id = s.record_id
             LEFT JOIN sink_acks a ON a.sink = ?1 AND a.uid = s.uid
             LEFT JOIN account_seen seen ON seen.account_id = s.account_id
             WHERE s.uid > ?2 AND {filter}
             ORDER BY s.uid LIMIT ?3"
        );
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        let rows = stmt
            .query_map(params![sink, after_uid, limit as i64, view], |r| {
                let record: Option<String> = r.get(2)?;
                let seen: i64 = r.get(3)?;
                Ok((
                    record,
                    PendingRecord {
                        uid: r.get(0)?,
                        content_hash: r.get(1)?,
                        record: String::new(),
                        time_ms: seen,
                        is_update: r.get(4)?,
                        last_changed: r.get(5)?,
                        user_name: r.get(6)?,
                    },
                ))
            })
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        rows.map(|row| {
            let (record, mut pending) =
                row.map_err(|e| self.sql_err("cannot read sink state", e))?;
            let record = record.ok_or_else(|| self.missing_record(&pending.uid))?;
            pending.record = with_time(&record, pending.time_ms);
            Ok(pending)
        })
        .collect()
    }

    /// How many records `sink` still needs under `mode` and its `view` suffix.
    pub fn pending_count(&self, sink: &str, mode: SinkMode, view: &str) -> Result<u64> {
        let filter = needs(mode, "?2");
        let sql = format!(
            "SELECT COUNT(*) FROM snapshot s LEFT JOIN sink_acks a ON a.sink = ?1 AND a.uid = s.uid WHERE {filter}"
        );
        self.lock()
            .query_row(&sql, params![sink, view], |r| r.get::<_, i64>(0))
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
            let mut unreject = tx
                .prepare_cached("DELETE FROM sink_rejects WHERE sink = ?1 AND uid = ?2")
                .map_err(|e| self.sql_err("cannot record acknowledgements", e))?;
            for (uid, hash) in records {
                stmt.execute(params![sink, uid, hash, now_ms])
                    .map_err(|e| self.sql_err("cannot record acknowledgements", e))?;
                unreject
                    .execute(params![sink, uid])
                    .map_err(|e| self.sql_err("cannot record acknowledgements", e))?;
            }
        }
        tx.commit()
            .map_err(|e| self.sql_err("cannot record acknowledgements", e))
    }
}

/// A record a sink refused on its own, with the sink's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub uid: String,
    pub user_name: String,
    pub reason: String,
}

impl Store {
    /// Records that `sink` refused these records in this content: they are not offered to it again
    /// until their content changes.
    pub fn reject(&self, sink: &str, records: &[(&str, &str, &str)], now_ms: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(|e| self.sql_err("cannot record rejections", e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO sink_rejects (sink, uid, content_hash, reason, rejected_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (sink, uid) DO UPDATE SET content_hash = excluded.content_hash,
                       reason = excluded.reason, rejected_at = excluded.rejected_at",
                )
                .map_err(|e| self.sql_err("cannot record rejections", e))?;
            for (uid, hash, reason) in records {
                stmt.execute(params![sink, uid, hash, reason, now_ms])
                    .map_err(|e| self.sql_err("cannot record rejections", e))?;
            }
        }
        tx.commit()
            .map_err(|e| self.sql_err("cannot record rejections", e))
    }

    /// The records `sink` rejected in their current content and view (still held back), by ARN.
    pub fn rejected(&self, sink: &str, view: &str) -> Result<Vec<Rejection>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT r.uid, s.user_name, r.reason FROM sink_rejects r
                 JOIN snapshot s ON s.uid = r.uid AND s.content_hash || ?2 = r.content_hash
                 WHERE r.sink = ?1 ORDER BY r.uid",
            )
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        let rows = stmt
            .query_map(params![sink, view], |r| {
                Ok(Rejection {
                    uid: r.get(0)?,
                    user_name: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql_err("cannot read sink state", e))
    }
}

impl Store {
    /// Up to `limit` users deleted from IAM that `sink` has not yet confirmed deleting (as pending
    /// records with an empty record and content hash), by ARN.
    pub fn pending_deletes(&self, sink: &str, limit: usize) -> Result<Vec<PendingRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT uid, user_name, deleted_at FROM sink_deletes WHERE sink = ?1
                 ORDER BY uid LIMIT ?2",
            )
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        let rows = stmt
            .query_map(params![sink, limit as i64], |r| {
                let at: i64 = r.get(2)?;
                Ok(PendingRecord {
                    uid: r.get(0)?,
                    user_name: r.get(1)?,
                    content_hash: String::new(),
                    record: String::new(),
                    time_ms: at,
                    is_update: false,
                    last_changed: at,
                })
            })
            .map_err(|e| self.sql_err("cannot read sink state", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql_err("cannot read sink state", e))
    }

    /// Forgets deletions: `sink` confirmed them (`Some(uids)`), or keeps deleted users (`None`: all).
    pub fn forget_deletes(&self, sink: &str, uids: Option<&[&str]>) -> Result<()> {
        let mut conn = self.lock();
        let e = |err| self.sql_err("cannot write sink state", err);
        let tx = conn.transaction().map_err(e)?;
        match uids {
            None => {
                tx.execute("DELETE FROM sink_deletes WHERE sink = ?1", params![sink])
                    .map_err(e)?;
            }
            Some(uids) => {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM sink_deletes WHERE sink = ?1 AND uid = ?2")
                    .map_err(e)?;
                for uid in uids {
                    stmt.execute(params![sink, uid]).map_err(e)?;
                }
            }
        }
        tx.commit().map_err(e)
    }

    /// How many deletions `sink` has not confirmed yet.
    pub fn deletes_pending(&self, sink: &str) -> Result<u64> {
        self.lock()
            .query_row(
                "SELECT COUNT(*) FROM sink_deletes WHERE sink = ?1",
                params![sink],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql_err("cannot read sink state", e))
    }
}

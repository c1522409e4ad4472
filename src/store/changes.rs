//! The change log: rows written by [`Store::apply_account`], read by `iam-inventory changes`.

use rusqlite::{OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::{Result, Store};

pub use crate::transform::change::{ChangeKind, FieldChange};

/// One row of the change log, as `changes --format json` prints it (times are RFC 3339 there).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// The row's id: its place in the log (`None` for a dry run, which writes nothing).
    pub id: Option<i64>,
    /// `None` for a dry run, which writes nothing.
    pub run_id: Option<i64>,
    pub at: i64,
    pub account_id: String,
    pub uid: String,
    pub user_name: String,
    pub kind: ChangeKind,
    pub fields: Vec<FieldChange>,
    /// The user's record at the change (without `time`): the new one, or for a deletion or
    /// retirement the last known one. Read from the log only when asked for (events).
    pub record: Option<Value>,
    /// Who made the change, when CloudTrail told (an incremental refresh); `None` for what a
    /// full sync found.
    pub actor: Option<crate::collect::events::Actor>,
}

impl ChangeRow {
    /// The row as the event builder sees it.
    pub fn as_change(&self) -> crate::transform::events::Change<'_> {
        crate::transform::events::Change {
            at: self.at,
            account_id: &self.account_id,
            uid: &self.uid,
            user_name: &self.user_name,
            kind: self.kind,
            fields: &self.fields,
            record: self.record.as_ref(),
            actor: self.actor.as_ref(),
        }
    }

    /// Its OCSF 3001 events.
    pub fn events(&self) -> Vec<Value> {
        crate::transform::events::events(&self.as_change())
    }
}

/// Filters of `iam-inventory changes`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub since_ms: Option<i64>,
    pub account: Option<String>,
    /// A user name or an ARN.
    pub user: Option<String>,
    /// Read each row's record too (for events).
    pub with_records: bool,
}

const COLUMNS: &str = "id, run_id, at, account_id, uid, user_name, kind, fields, actor";
/// Change rows pruned (and their records dropped) at a time; a few in unit tests, to go round.
const PRUNE_BATCH: i64 = if cfg!(test) { 2 } else { 10_000 };
/// A change row's record (kept once in `records`, shared with the snapshot while it is current).
const RECORD: &str = ", (SELECT r.record FROM records r WHERE r.id = changes.record_id)";

fn row(r: &rusqlite::Row<'_>, with_record: bool) -> rusqlite::Result<ChangeRow> {
    let kind: String = r.get(6)?;
    let fields: String = r.get(7)?;
    let actor = r
        .get::<_, Option<String>>(8)?
        .and_then(|t| serde_json::from_str(&t).ok());
    let record = if with_record {
        r.get::<_, Option<String>>(9)?
            .and_then(|t| serde_json::from_str(&t).ok())
    } else {
        None
    };
    Ok(ChangeRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        at: r.get(2)?,
        account_id: r.get(3)?,
        uid: r.get(4)?,
        user_name: r.get(5)?,
        kind: ChangeKind::parse(&kind),
        fields: serde_json::from_str(&fields).unwrap_or_default(),
        record,
        actor,
    })
}

impl Store {
    /// Change rows matching the filter, oldest first.
    pub fn changes(&self, f: &ChangeFilter) -> Result<Vec<ChangeRow>> {
        let record = if f.with_records { RECORD } else { "" };
        let mut sql = format!("SELECT {COLUMNS}{record} FROM changes WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(since) = f.since_ms {
            sql.push_str(" AND at >= ?");
            args.push(since.into());
        }
        if let Some(account) = &f.account {
            sql.push_str(" AND account_id = ?");
            args.push(account.clone().into());
        }
        if let Some(user) = &f.user {
            sql.push_str(" AND (uid = ? OR user_name = ?)");
            args.push(user.clone().into());
            args.push(user.clone().into());
        }
        sql.push_str(" ORDER BY at, id");
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&sql)
            .map_err(|e| self.sql_err("cannot read the change log", e))?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| row(r, f.with_records))
            .map_err(|e| self.sql_err("cannot read the change log", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql_err("cannot read the change log", e))
    }

    /// Up to `limit` change rows after `after_id`, in log order, with their records.
    pub fn changes_after(&self, after_id: i64, limit: usize) -> Result<Vec<ChangeRow>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}{RECORD} FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))
            .map_err(|e| self.sql_err("cannot read the change log", e))?;
        let rows = stmt
            .query_map(params![after_id, limit as i64], |r| row(r, true))
            .map_err(|e| self.sql_err("cannot read the change log", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql_err("cannot read the change log", e))
    }

    /// Where `sink`'s change events stand: the id of the last change row it has every event of.
    /// A sink seen for the first time starts with the changes of run `run_id` (those of earlier
    /// runs are history it never subscribed to).
    pub fn event_cursor(&self, sink: &str, run_id: i64) -> Result<i64> {
        let conn = self.lock();
        let e = |err| self.sql_err("cannot read sink state", err);
        let found: Option<i64> = conn
            .query_row(
                "SELECT change_id FROM sink_event_cursors WHERE sink = ?1",
                params![sink],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?;
        if let Some(id) = found {
            return Ok(id);
        }
        let start: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(id), 0) FROM changes WHERE run_id < ?1",
                params![run_id],
                |r| r.get(0),
            )
            .map_err(e)?;
        conn.execute(
            "INSERT INTO sink_event_cursors (sink, change_id, updated_at) VALUES (?1, ?2, ?3)",
            params![sink, start, crate::clock::now_ms()],
        )
        .map_err(|err| self.sql_err("cannot write sink state", err))?;
        Ok(start)
    }

    /// Moves `sink`'s event cursor to `change_id` (every event up to that row is delivered).
    pub fn set_event_cursor(&self, sink: &str, change_id: i64, now_ms: i64) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO sink_event_cursors (sink, change_id, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sink) DO UPDATE SET change_id = excluded.change_id,
                   updated_at = excluded.updated_at",
                params![sink, change_id, now_ms],
            )
            .map_err(|e| self.sql_err("cannot write sink state", e))?;
        Ok(())
    }

    /// Change rows after `change_id`: what an events sink still has to deliver.
    pub fn changes_pending(&self, change_id: i64) -> Result<u64> {
        self.lock()
            .query_row(
                "SELECT COUNT(*) FROM changes WHERE id > ?1",
                params![change_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql_err("cannot read the change log", e))
    }

    /// Deletes change rows older than `before_ms`. Returns how many were deleted and, for each of
    /// `events_sinks` that had not delivered all of them yet, how many undelivered rows went.
    pub fn prune_changes(
        &self,
        before_ms: i64,
        events_sinks: &[&str],
    ) -> Result<(u64, Vec<(String, u64)>)> {
        let mut conn = self.lock();
        let e = |err| self.sql_err("cannot prune the change log", err);
        // Immediate: it reads before it writes, and a write between the two would end a deferred
        // transaction with a busy error the busy timeout does not wait out.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        let mut lost = Vec::new();
        for sink in events_sinks {
            let cursor: Option<i64> = tx
                .query_row(
                    "SELECT change_id FROM sink_event_cursors WHERE sink = ?1",
                    params![sink],
                    |r| r.get(0),
                )
                .optional()
                .map_err(e)?;
            let Some(cursor) = cursor else { continue };
            let n: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM changes WHERE at < ?1 AND id > ?2
                       AND id < (SELECT MAX(id) FROM changes)",
                    params![before_ms, cursor],
                    |r| r.get(0),
                )
                .map_err(e)?;
            if n > 0 {
                lost.push((sink.to_string(), n as u64));
            }
        }
        // The newest row is kept whatever its age: `changes.id` is a rowid, and SQLite would hand
        // out ids again from 1 after an emptied table, below the sinks' event cursors.
        let newest: Option<i64> = tx
            .query_row("SELECT MAX(id) FROM changes", [], |r| r.get(0))
            .map_err(e)?;
        let mut deleted = 0u64;
        if let Some(newest) = newest {
            // Oldest first, a batch at a time, in id order (`+at`: not by the `at` index, which
            // would sort every pruned row first): no temporary table, whose files could fill a
            // small /tmp when a year of a million users' changes goes at once.
            let mut select = tx
                .prepare_cached(
                    "SELECT id, uid, record_id FROM changes
                     WHERE +at < ?1 AND id < ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                )
                .map_err(e)?;
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM changes WHERE +at < ?1 AND id < ?2 AND id > ?3 AND id <= ?4",
                )
                .map_err(e)?;
            // A pruned row's record goes with it unless another change row points at it, or it is
            // still its user's current one (a record only ever belongs to the user it was written
            // for).
            let mut drop_record = tx
                .prepare_cached(
                    "DELETE FROM records WHERE id = ?1
                       AND NOT EXISTS (SELECT 1 FROM changes WHERE record_id = ?1)
                       AND NOT EXISTS (SELECT 1 FROM snapshot WHERE uid = ?2 AND record_id = ?1)",
                )
                .map_err(e)?;
            let mut after = 0i64;
            loop {
                let batch = select
                    .query_map(params![before_ms, newest, after, PRUNE_BATCH], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                    })
                    .map_err(e)?
                    .collect::<rusqlite::Result<Vec<(i64, String, Option<i64>)>>>()
                    .map_err(e)?;
                let Some(&(last, _, _)) = batch.last() else {
                    break;
                };
                deleted += delete
                    .execute(params![before_ms, newest, after, last])
                    .map_err(e)? as u64;
                let mut records: Vec<(i64, &str)> = batch
                    .iter()
                    .filter_map(|(_, uid, record)| record.map(|id| (id, uid.as_str())))
                    .collect();
                records.sort_unstable();
                records.dedup();
                for (id, uid) in records {
                    drop_record.execute(params![id, uid]).map_err(e)?;
                }
                after = last;
            }
        }
        tx.commit().map_err(e)?;
        Ok((deleted, lost))
    }
}

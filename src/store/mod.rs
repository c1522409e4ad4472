//! Store: owns the SQLite file. Migrations from `migrations/*.sql` run at open; the snapshot is
//! written one transaction per account ([`snapshot`]), so a crash at any point leaves the last good
//! snapshot; the diff is computed from content hashes ([`diff`]); the change log is a query ([`changes`]);
//! each sink's acknowledged state lives here too, so "what a sink still needs" is a query ([`acks`]).

pub mod acks;
pub mod changes;
mod checkpoint;
pub mod diff;
pub mod event_source;
pub mod lock;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

pub use changes::{ChangeFilter, ChangeKind, ChangeRow, FieldChange};
pub use lock::SyncLock;
pub use snapshot::{AccountOutcome, PreparedRecord};

/// The migrations, in order; `PRAGMA user_version` counts how many have been applied.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_run_owner",
        include_str!("../../migrations/0002_run_owner.sql"),
    ),
    (
        "0003_retired_rejects",
        include_str!("../../migrations/0003_retired_rejects.sql"),
    ),
    (
        "0004_change_events",
        include_str!("../../migrations/0004_change_events.sql"),
    ),
    (
        "0005_sink_deletes",
        include_str!("../../migrations/0005_sink_deletes.sql"),
    ),
    (
        "0006_incremental_refresh",
        include_str!("../../migrations/0006_incremental_refresh.sql"),
    ),
    (
        "0007_account_seen",
        include_str!("../../migrations/0007_account_seen.sql"),
    ),
    (
        "0008_records",
        include_str!("../../migrations/0008_records.sql"),
    ),
];

/// SQL for a snapshot row's time (the last collection that saw it), for a row aliased `s`
/// joined with `account_seen` aliased `seen`.
pub(crate) const SEEN_AT: &str = "MAX(s.last_seen, COALESCE(seen.collected_at, 0))";

/// Runs left `running` by another host (or where liveness cannot be checked) are declared dead
/// after this long.
const FOREIGN_RUN_TIMEOUT_MS: i64 = 24 * 3600 * 1000;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether a process of this host with that pid is alive (not us: we have only just started).
fn process_alive(pid: i64) -> bool {
    pid != i64::from(std::process::id()) && Path::new(&format!("/proc/{pid}")).exists()
}

/// A store error, phrased for the user and naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

pub type Result<T> = std::result::Result<T, StoreError>;

/// Why an export stopped: the store, or the writer (kept as the `io::Error` it is, so a closed
/// pipe can be told apart).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[source] std::io::Error),
}

pub struct Store {
    /// A writable store's WAL checkpoints, off the writer's path. Declared first, so it is dropped
    /// first: its thread and connection end before the writer's close does the last checkpoint,
    /// as SQLite does for the last connection.
    checkpointer: Option<checkpoint::Checkpointer>,
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create if missing, migrate, mark runs left `running` by a dead process as `interrupted`.
    ReadWrite,
    /// Must exist; nothing is written (`export`, `changes`).
    ReadOnly,
    /// `sync --dry-run`: an existing store is opened read-only and nothing is written; a missing one
    /// is replaced by an empty in-memory store, one of an older schema by a migrated in-memory copy.
    DryRun,
}

impl Store {
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store> {
        let shown = path.display().to_string();
        let err = |what: &str, e: &dyn std::fmt::Display| {
            StoreError(format!(
                "store {shown}: {what}: {}",
                crate::text::one_line(&e.to_string())
            ))
        };
        let exists = path.exists();
        let mut conn = match mode {
            OpenMode::ReadOnly | OpenMode::DryRun if !exists => {
                if mode == OpenMode::ReadOnly {
                    return Err(StoreError(format!(
                        "store {shown} does not exist yet: run `iam-inventory sync` first (or set store.path)"
                    )));
                }
                Connection::open_in_memory().map_err(|e| err("cannot open", &e))?
            }
            // A dry run on an existing store only reads it, so it never competes with a running
            // daemon for the write lock.
            OpenMode::ReadOnly | OpenMode::DryRun => {
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|e| err("cannot open", &e))?
            }
            OpenMode::ReadWrite => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        err(&format!("cannot create folder {}", parent.display()), &e)
                    })?;
                }
                Connection::open(path).map_err(|e| err("cannot open", &e))?
            }
        };
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| err("cannot configure", &e))?;
        // Reading user_version is the first real read: a file that is not SQLite fails here.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| {
                err(
                    "not a readable iam-inventory store (move it away or set store.path)",
                    &e,
                )
            })?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError(format!(
                "store {shown} was written by a newer iam-inventory (schema {version}, this build knows {known}); upgrade iam-inventory"
            )));
        }
        // A dry run against a store of an older schema works on an in-memory copy, migrated there:
        // the file itself is only read.
        if mode == OpenMode::DryRun && exists && version < known {
            let mut copy = Connection::open_in_memory().map_err(|e| err("cannot open", &e))?;
            rusqlite::backup::Backup::new(&conn, &mut copy)
                .and_then(|b| b.run_to_completion(1000, Duration::ZERO, None))
                .map_err(|e| err("cannot read for a dry run", &e))?;
            conn = copy;
        }
        let in_memory = mode == OpenMode::DryRun && (!exists || version < known);
        if mode == OpenMode::ReadWrite || in_memory {
            if !in_memory {
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| err("cannot enable WAL (is the folder writable?)", &e))?;
            }
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| err("cannot configure", &e))?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(|e| err("cannot configure", &e))?;
            // A migration that rebuilds tables (0008) needs free space about the store's size.
            migrate(&conn, version).map_err(|(name, e)| {
                err(
                    &format!(
                        "cannot apply migration {name} (is it writable, with free space about its size?)"
                    ),
                    &e,
                )
            })?;
        } else if version < known {
            return Err(StoreError(format!(
                "store {shown} has schema {version} and needs migrating to {known}: run `iam-inventory sync` once"
            )));
        }
        let mut checkpointer = None;
        if mode == OpenMode::ReadWrite {
            mark_dead_runs(&conn).map_err(|e| err("cannot write (is it read-only?)", &e))?;
            checkpointer = Some(
                checkpoint::Checkpointer::start(path, &mut conn)
                    .map_err(|e| err("cannot open for checkpoints", &e))?,
            );
        }
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            checkpointer,
        })
    }

    /// Before a large write: keeps the WAL bounded (see `checkpoint::BOUND_PAGES`).
    pub(crate) fn bound_wal(&self) {
        if let Some(c) = &self.checkpointer {
            c.bound();
        }
    }

    /// Waits for the background WAL checkpoints asked for so far (benchmarks use it to keep one
    /// phase's checkpoint out of the next phase's figure).
    pub fn settle(&self) {
        if let Some(c) = &self.checkpointer {
            c.settle();
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back on
        // drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A snapshot row whose record is gone from `records`: never written so, but said rather than
    /// skipped (a user left out of an export or a delivery would be silently lost).
    pub(crate) fn missing_record(&self, uid: &str) -> StoreError {
        StoreError(format!(
            "store {}: the snapshot row of {uid} has no record (the store is damaged; `sqlite3 <store> 'PRAGMA integrity_check'` tells more)",
            self.path.display()
        ))
    }

    pub(crate) fn sql_err(&self, what: &str, e: rusqlite::Error) -> StoreError {
        StoreError(format!(
            "store {}: {what}: {}",
            self.path.display(),
            crate::text::one_line(&e.to_string())
        ))
    }

    /// Starts a run (a full sync); returns its id.
    pub fn begin_run(&self, started_ms: i64) -> Result<i64> {
        self.begin(started_ms, "sync")
    }

    /// Starts an incremental refresh (users named by IAM events); returns its run id.
    pub fn begin_refresh(&self, started_ms: i64) -> Result<i64> {
        self.begin(started_ms, "refresh")
    }

    fn begin(&self, started_ms: i64, kind: &str) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO runs (started_at, status, pid, host, kind) VALUES (?1, 'running', ?2, ?3, ?4)",
            params![started_ms, i64::from(std::process::id()), hostname(), kind],
        )
        .map_err(|e| self.sql_err("cannot record the run", e))?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        run_id: i64,
        finished_ms: i64,
        status: &str,
        summary: &str,
    ) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, summary = ?4 WHERE id = ?1",
                params![run_id, finished_ms, status, summary],
            )
            .map_err(|e| self.sql_err("cannot record the run", e))?;
        Ok(())
    }

    /// Records a failed account in the run; its snapshot rows are not touched.
    pub fn record_failed_account(
        &self,
        run_id: i64,
        account_id: &str,
        role_arn: Option<&str>,
        error: &str,
    ) -> Result<()> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO run_accounts (run_id, account_id, role_arn, status, error)
                 VALUES (?1, ?2, ?3, 'failed', ?4)",
                params![run_id, account_id, role_arn, error],
            )
            .map_err(|e| self.sql_err("cannot record the account", e))?;
        Ok(())
    }

    /// Hands every snapshot record (OCSF JSON with its `time`) to `each`, ordered by account then
    /// ARN. A failure of `each` (a closed pipe) ends the export as [`ExportError::Write`].
    pub fn export(
        &self,
        each: &mut dyn FnMut(&str) -> std::io::Result<()>,
    ) -> std::result::Result<usize, ExportError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT r.record, {SEEN_AT}, s.uid FROM snapshot s
                 LEFT JOIN records r ON r.id = s.record_id
                 LEFT JOIN account_seen seen ON seen.account_id = s.account_id
                 ORDER BY s.account_id, s.uid"
            ))
            .map_err(|e| self.sql_err("cannot read the snapshot", e))?;
        let mut rows = stmt
            .query([])
            .map_err(|e| self.sql_err("cannot read the snapshot", e))?;
        let mut n = 0;
        while let Some(row) = rows
            .next()
            .map_err(|e| self.sql_err("cannot read the snapshot", e))?
        {
            let record: Option<String> = row.get(0).map_err(|e| self.sql_err("bad row", e))?;
            let uid: String = row.get(2).map_err(|e| self.sql_err("bad row", e))?;
            let record = record.ok_or_else(|| self.missing_record(&uid))?;
            let seen: i64 = row.get(1).map_err(|e| self.sql_err("bad row", e))?;
            each(&with_time(&record, seen)).map_err(ExportError::Write)?;
            n += 1;
        }
        Ok(n)
    }
}

/// Records are stored without `time`; it is the last time a collection saw the record unchanged.
pub(crate) fn with_time(record_without_time: &str, time_ms: i64) -> String {
    match record_without_time.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"time\":{time_ms}}}"),
        Some(rest) => format!("{{\"time\":{time_ms},{rest}"),
        None => record_without_time.to_string(),
    }
}

/// Runs left `running` whose process is gone (killed, crashed, host rebooted) become `interrupted`.
fn mark_dead_runs(conn: &Connection) -> rusqlite::Result<()> {
    let host = hostname();
    let now = crate::clock::now_ms();
    let running: Vec<(i64, Option<i64>, Option<String>, i64)> = {
        let mut stmt =
            conn.prepare("SELECT id, pid, host, started_at FROM runs WHERE status = 'running'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, pid, run_host, started) in running {
        // Without /proc (no host name, no pid check) fall back to the age alone; a pid reused by
        // an unrelated process is caught by the age too.
        let too_old = now - started > FOREIGN_RUN_TIMEOUT_MS;
        let dead = match (pid, run_host) {
            (Some(pid), Some(h)) if !h.is_empty() && h == host => !process_alive(pid) || too_old,
            (Some(_), Some(_)) => too_old,
            _ => true,
        };
        if dead {
            conn.execute(
                "UPDATE runs SET status = 'interrupted' WHERE id = ?1",
                params![id],
            )?;
        }
    }
    Ok(())
}

/// Applies the migrations after `from`, each in its own transaction; on failure, which one.
fn migrate(
    conn: &Connection,
    from: i64,
) -> std::result::Result<(), (&'static str, rusqlite::Error)> {
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let apply = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()
        };
        apply().map_err(|e| (*name, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0008 moves every record out of the snapshot and the change log into `records` without
    /// changing what either reads: a created row whose record is still current shares it, others
    /// (an older version, a deletion) keep their own text, and rows from before 0004 stay without.
    #[test]
    fn records_move_out_of_snapshot_and_log_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        // A schema-7 store, made by the migrations before 0008.
        let mut file = Connection::open(&path).unwrap();
        {
            let tx = file.transaction().unwrap();
            for (_, sql) in &MIGRATIONS[..7] {
                tx.execute_batch(sql).unwrap();
            }
            tx.commit().unwrap();
        }
        file.execute_batch(
            r#"PRAGMA user_version = 7;
            INSERT INTO snapshot (uid, account_id, user_name, path, content_hash, record_hash, record,
                first_seen, last_seen, last_changed, last_run_id)
              VALUES ('arn:a', '1', 'a', '/', 'c', 'h', '{"v":2}', 1, 1, 1, 1),
                     ('arn:b', '1', 'b', '/', 'c', 'h', '{"v":"b"}', 1, 1, 1, 1);
            INSERT INTO changes (id, run_id, at, account_id, uid, user_name, kind, fields, record)
              VALUES (1, 1, 1, '1', 'arn:a', 'a', 'created', '[]', NULL),
                     (2, 1, 1, '1', 'arn:a', 'a', 'updated', '[]', '{"v":1}'),
                     (3, 1, 1, '1', 'arn:a', 'a', 'updated', '[]', '{"v":2}'),
                     (4, 1, 1, '1', 'arn:b', 'b', 'created', '[]', '{"v":"b"}'),
                     (5, 1, 1, '1', 'arn:c', 'c', 'deleted', '[]', '{"v":"c"}');"#,
        )
        .unwrap();
        drop(file);

        let store = Store::open(&path, OpenMode::ReadWrite).unwrap();
        let version: i64 = store
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let log: Vec<(i64, Option<String>)> = store
            .changes(&ChangeFilter {
                with_records: true,
                ..ChangeFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|c| (c.id.unwrap(), c.record.map(|r| r["v"].to_string())))
            .collect();
        let v = |t: &str| Some(t.to_string());
        assert_eq!(
            log,
            [
                (1, None),
                (2, v("1")),
                (3, v("2")),
                (4, v("\"b\"")),
                (5, v("\"c\""))
            ]
        );
        let mut exported = Vec::new();
        store
            .export(&mut |t| {
                exported.push(serde_json::from_str::<serde_json::Value>(t).unwrap()["v"].clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(exported, [serde_json::json!(2), serde_json::json!("b")]);
        let records: i64 = store
            .lock()
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            records, 4,
            "two current records shared with the log, two of the log's own"
        );
    }
}

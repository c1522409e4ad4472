//! WAL checkpoints on a thread of their own.
//!
//! SQLite's default moves the write-ahead log into the database file right after the commit that
//! grew it past 1,000 pages, on the committing connection: a sync's writer stopped for the copy and
//! its fsync after every large account (1.3 s of a 100,000-user first sync's 4.3 s). Here a commit
//! only wakes a thread; its own connection copies (a PASSIVE checkpoint, which never blocks the
//! writer or readers) while the writer goes on with the next account. Nothing about durability or
//! crash safety changes: a checkpoint only copies committed pages, and an interrupted one is
//! redone from the log.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, wal::CheckpointMode};

/// How many log pages a commit may leave before the checkpointer is woken (SQLite's default
/// auto-checkpoint threshold).
const WAKE_AT_PAGES: i32 = 1000;

/// How large the log may grow before the writer waits for the checkpointer before its next
/// transaction (64 MiB of 4 KiB pages). The log restarts from its beginning only when a write
/// transaction begins after a checkpoint that copied all of it: a writer that never waits would
/// always begin while a checkpoint is still copying, and the log would grow for a whole sync
/// (measured: 4.3 GB after a million users in 1,000 accounts).
const BOUND_PAGES: i32 = 16_384;

/// Commits that asked for a checkpoint vs those covered by one: the thread works while they
/// differ, `settle` waits until they meet.
#[derive(Default)]
struct Progress {
    asked: u64,
    done: u64,
    stop: bool,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// Dropping it stops the thread after the checkpoint it is running.
pub(crate) struct Checkpointer {
    /// Pages in the log after the last commit (what the hook was told).
    log_pages: Arc<AtomicI32>,
    progress: Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to `path` and hands `writer` the hook that wakes it
    /// (replacing SQLite's auto-checkpoint, which is itself a WAL hook).
    pub(crate) fn start(path: &Path, writer: &mut Connection) -> Result<Checkpointer, String> {
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        // A connection knows the file is in WAL mode only once it has read it: until then a
        // checkpoint does nothing and says (-1, -1).
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("the store is in {mode} mode, not WAL"));
        }
        let progress: Shared = Arc::default();
        let thread = {
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || checkpoint_loop(&conn, &progress))
                .map_err(|e| format!("cannot start a thread: {e}"))?
        };
        let log_pages: Arc<AtomicI32> = Arc::default();
        let (hook_progress, hook_pages) = (progress.clone(), log_pages.clone());
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                hook_pages.store(pages, Ordering::Relaxed);
                if pages >= WAKE_AT_PAGES {
                    lock(&hook_progress.0).asked += 1;
                    hook_progress.1.notify_all();
                }
                Ok(())
            }))
            .map_err(|e| e.to_string())?;
        Ok(Checkpointer {
            log_pages,
            progress,
            thread: Some(thread),
        })
    }

    /// Waits until every commit so far that asked for a checkpoint has had one.
    pub(crate) fn settle(&self) {
        let (m, cv) = &*self.progress;
        let mut p = lock(m);
        while p.done < p.asked {
            // A thread that is gone (it cannot be, short of a panic) never answers: the writer
            // goes on, and the log is checkpointed at the last close as SQLite does.
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return;
            }
            p = cv
                .wait_timeout(p, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Before a write transaction: with a log past [`BOUND_PAGES`], waits for the checkpoint to
    /// finish, so this transaction starts the log over.
    pub(crate) fn bound(&self) {
        if self.log_pages.load(Ordering::Relaxed) > BOUND_PAGES {
            self.settle();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&self.progress.0).stop = true;
        self.progress.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: one PASSIVE checkpoint whenever commits asked for one since the last, which covers
/// every commit made before it starts.
fn checkpoint_loop(conn: &Connection, progress: &Shared) {
    let (m, cv) = &**progress;
    loop {
        let asked = {
            let mut p = lock(m);
            while p.done == p.asked && !p.stop {
                p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.stop {
                return;
            }
            p.asked
        };
        if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            // Left for the next commit (or the last close) to finish: the log only grows
            // meanwhile.
            tracing::debug!(error = %e, "WAL checkpoint did not complete");
        }
        lock(m).done = asked;
        cv.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use crate::store::snapshot::tests::full_write;
    use crate::store::snapshot::{AccountWrite, PreparedRecord};
    use crate::store::{OpenMode, Store};
    use serde_json::json;

    /// A commit that grows the log past the threshold is copied into the database file (by the
    /// checkpoint thread, which replaces SQLite's own auto-checkpoint), and a later write starts
    /// the log over instead of growing it.
    #[test]
    fn large_commits_are_checkpointed_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path, OpenMode::ReadWrite).unwrap();
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = dir.path().join("s.db-wal");
        // Two writes of the same size: 1,500 users created in an account.
        let write = |account: &'static str| {
            let run_id = store.begin_run(1).unwrap();
            let w = AccountWrite {
                account_id: account,
                ..full_write(run_id, 1)
            };
            // About 6 MB with their change rows and indexes: past 1,000 pages.
            let records = (0..1500).map(|i| {
                PreparedRecord::from_record(json!({
                    "user": {"uid": format!("arn:aws:iam::{account}:user/u{i}"), "name": format!("u{i}")},
                    "unmapped": {"user": {"path": "/"}, "pad": "x".repeat(3000)}
                }))
            });
            store
                .apply_account(&w, records.collect::<Vec<_>>())
                .unwrap();
        };
        write("1");
        let log_after_first = size(&wal);
        assert!(log_after_first > 4_000_000, "log {log_after_first}");
        store.settle();
        assert!(
            size(&path) > 4_000_000,
            "the checkpoint thread copied the log into the database file ({} bytes)",
            size(&path)
        );
        write("2");
        store.settle();
        // Restarted from its beginning: the second write reused the log instead of appending.
        assert!(
            size(&wal) < log_after_first * 3 / 2,
            "log {} after a second write of the same size (first {log_after_first})",
            size(&wal)
        );
    }
}

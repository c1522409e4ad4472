//! One sync at a time per store file: an advisory exclusive lock on `<store>.lock`, held for the
//! whole sync (collection, writes and delivery). A `sync` next to a running daemon waits a bounded
//! time for the daemon's sync to end, then gives up naming the process that holds the store.
//!
//! The lock is the operating system's (`flock` on Unix), so a process that dies — even by SIGKILL —
//! releases it; the pid written into the file is only there to name the holder in the error.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StoreError;

const POLL: Duration = Duration::from_millis(100);

/// Held while a sync runs; dropping it releases the store.
#[derive(Debug)]
pub struct SyncLock {
    file: File,
    path: PathBuf,
}

impl SyncLock {
    /// The lock file beside a store.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the store's sync lock, waiting up to `wait` for another process (or task) to release it.
    pub fn acquire(store: &Path, wait: Duration) -> Result<SyncLock, StoreError> {
        let path = Self::path_for(store);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError(format!(
                    "store {}: cannot create folder {}: {e}",
                    store.display(),
                    parent.display()
                ))
            })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                StoreError(format!(
                    "store {}: cannot open the lock file {}: {e}",
                    store.display(),
                    path.display()
                ))
            })?;
        let deadline = Instant::now() + wait;
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(StoreError(format!(
                            "store {} is in use by {} (another sync or the daemon); waited {}s (store.lock_wait_secs)",
                            store.display(),
                            holder(&file),
                            wait.as_secs()
                        )));
                    }
                    if !logged {
                        tracing::info!(holder = %holder(&file), "store in use; waiting for it");
                        logged = true;
                    }
                    std::thread::sleep(POLL);
                }
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError(format!(
                        "store {}: cannot lock {}: {e}",
                        store.display(),
                        path.display()
                    )));
                }
            }
        }
        let mut lock = SyncLock { file, path };
        lock.write_owner();
        Ok(lock)
    }

    /// Waits without blocking the async runtime.
    pub async fn acquire_async(store: &Path, wait: Duration) -> Result<SyncLock, StoreError> {
        let store = store.to_path_buf();
        tokio::task::spawn_blocking(move || SyncLock::acquire(&store, wait))
            .await
            .map_err(|e| StoreError(format!("store lock task failed: {e}")))?
    }

    fn write_owner(&mut self) {
        let owner = format!("pid {} on {}\n", std::process::id(), super::hostname());
        // Best effort: the lock itself is what excludes, the text only names the holder.
        let _ = self
            .file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(owner.as_bytes()))
            .and_then(|_| self.file.flush());
    }
}

impl Drop for SyncLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        tracing::trace!(path = %self.path.display(), "store lock released");
    }
}

/// "pid N on host" as the holder wrote it, or a neutral phrase.
fn holder(file: &File) -> String {
    let mut text = String::new();
    let mut f = file;
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_string(&mut text);
    let text = text.trim();
    if text.starts_with("pid ") {
        text.to_string()
    } else {
        "another process".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let first = SyncLock::acquire(&store, Duration::ZERO).unwrap();
        let err = SyncLock::acquire(&store, Duration::from_millis(300)).unwrap_err();
        assert!(
            err.0
                .contains(&format!("is in use by pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        SyncLock::acquire(&store, Duration::ZERO).expect("free again once dropped");
    }
}

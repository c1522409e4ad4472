//! `[store]`: the SQLite file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file; created with its migrations, parent folder included.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// How long a sync waits for another process's sync on the same store (seconds) before it
    /// gives up with "store in use".
    #[serde(default = "default_lock_wait_secs")]
    pub lock_wait_secs: u64,
    /// Change-log rows older than this many days are pruned after each sync (0 = keep forever).
    #[serde(default = "default_changes_retention_days")]
    pub changes_retention_days: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            lock_wait_secs: default_lock_wait_secs(),
            changes_retention_days: default_changes_retention_days(),
        }
    }
}

fn default_lock_wait_secs() -> u64 {
    60
}
fn default_changes_retention_days() -> u64 {
    90
}
fn default_store_path() -> PathBuf {
    PathBuf::from("data/iam-inventory.db")
}

impl StoreConfig {
    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.lock_wait_secs > 86_400 {
            return Err(format!(
                "store.lock_wait_secs: {} is out of range (0 to 86400)",
                self.lock_wait_secs
            ));
        }
        if self.changes_retention_days > 36_500 {
            return Err(format!(
                "store.changes_retention_days: {} is out of range (0 to 36500; 0 keeps every change)",
                self.changes_retention_days
            ));
        }
        if self.path.as_os_str().is_empty() {
            return Err("store.path: must not be empty".into());
        }
        Ok(())
    }
}

//! What a change is: its kind and its field-level detail. Written by the store's diff, read by the
//! change log and turned into OCSF 3001 events by [`super::events`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    /// Left the collected scope (account no longer configured, outside a narrower `path_prefix`):
    /// removed from the snapshot, but not an IAM deletion.
    Retired,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Retired => "retired",
        }
    }
    pub fn parse(s: &str) -> ChangeKind {
        match s {
            "created" => ChangeKind::Created,
            "deleted" => ChangeKind::Deleted,
            "retired" => ChangeKind::Retired,
            _ => ChangeKind::Updated,
        }
    }
}

/// One changed field: `old`/`new` are `null` where the field (or list element) did not exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    pub old: Value,
    pub new: Value,
}

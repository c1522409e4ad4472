//! The change log: rows written by [`Store::apply_account`], read by `iam-inventory changes`.

use rusqlite::params_from_iter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, Store};

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
    fn parse(s: &str) -> ChangeKind {
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

/// One row of the change log, as `changes --format json` prints it (times are RFC 3339 there).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// `None` for a dry run, which writes nothing.
    pub run_id: Option<i64>,
    pub at: i64,
    pub account_id: String,
    pub uid: String,
    pub user_name: String,
    pub kind: ChangeKind,
    pub fields: Vec<FieldChange>,
}

/// Filters of `iam-inventory changes`; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub since_ms: Option<i64>,
    pub account: Option<String>,
    /// A user name or an ARN.
    pub user: Option<String>,
}

impl Store {
    /// Change rows matching the filter, oldest first.
    pub fn changes(&self, f: &ChangeFilter) -> Result<Vec<ChangeRow>> {
        let mut sql = String::from(
            "SELECT run_id, at, account_id, uid, user_name, kind, fields FROM changes WHERE 1 = 1",
        );
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
            .query_map(params_from_iter(args), |r| {
                let kind: String = r.get(5)?;
                let fields: String = r.get(6)?;
                Ok(ChangeRow {
                    run_id: r.get(0)?,
                    at: r.get(1)?,
                    account_id: r.get(2)?,
                    uid: r.get(3)?,
                    user_name: r.get(4)?,
                    kind: ChangeKind::parse(&kind),
                    fields: serde_json::from_str(&fields).unwrap_or_default(),
                })
            })
            .map_err(|e| self.sql_err("cannot read the change log", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql_err("cannot read the change log", e))
    }
}

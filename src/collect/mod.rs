//! Collect: talks to AWS IAM/STS and nothing else.
//!
//! Input: the configured accounts (the caller's and one per assumed role) and a path prefix.
//! Output: per account, the users as [`IamUser`] domain values, or an [`AccountError`]. A call that
//! fails after the SDK's retries fails its whole account: it never turns into `false`, an empty list
//! or a missing user (see `../shared/contract.md`, "never a false no").

pub mod accounts;
pub mod bulk;
pub mod calls;
pub mod credentials;
pub mod enrich;
pub mod error;
pub mod events;
pub mod extras;
pub mod permissions;
pub mod probe;
pub mod report;
pub mod single;
pub mod users;

pub use accounts::{AccountTarget, build_base_config, resolve_accounts};
pub use calls::CallStats;
pub use error::CollectError;

use serde::{Deserialize, Serialize};

/// One IAM user with everything the record needs. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamUser {
    pub arn: String,
    pub user_id: String,
    pub user_name: String,
    pub path: String,
    pub create_date: i64,
    pub password_last_used: Option<i64>,
    pub access_keys: Vec<AccessKey>,
    pub mfa_devices: Vec<MfaDevice>,
    /// Console password. `false` only because IAM said so (GetLoginProfile's NoSuchEntity, or the
    /// credential report's `password_enabled = false`).
    pub console_password: bool,
    pub tags: Vec<Tag>,
    pub groups: Vec<Group>,
    /// Policies that reach the user, its boundary, and whether it is an administrator.
    pub permissions: permissions::Permissions,
    /// SSH keys, signing certificates, service-specific credentials (per `credential_types`),
    /// sorted by kind and id.
    pub credentials: Vec<credentials::Credential>,
}

/// The root user of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootUser {
    /// `arn:<partition>:iam::<account>:root`.
    pub arn: String,
    pub has_mfa: bool,
    /// Whether the root user has access keys (it should not).
    pub access_keys_present: bool,
    /// From the credential report only (bulk): the key slots, and the last console sign-in.
    pub access_keys: Vec<RootKey>,
    pub password_last_used: Option<i64>,
    pub created: Option<i64>,
}

/// A root access key slot from the credential report (the report does not give key ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKey {
    pub slot: u8,
    pub active: Option<bool>,
    pub last_rotated: i64,
    pub last_used: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub id: String,
    /// `Active` or `Inactive`, as IAM says.
    pub status: String,
    pub created: Option<i64>,
    pub last_used: Option<KeyLastUsed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLastUsed {
    pub date: i64,
    pub service: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaDevice {
    pub serial: String,
    pub enabled: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub arn: Option<String>,
}

/// Where a record came from: kept in the record so an asset database can map
/// "credentials / IAM role / path prefix" as the seed integrations do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub account_id: String,
    /// The assumed role that reached the account; `None` for the caller's own account.
    pub role_arn: Option<String>,
    pub path_prefix: String,
}

/// Everything one account yielded.
#[derive(Debug)]
pub struct AccountUsers {
    pub provenance: Provenance,
    pub users: Vec<IamUser>,
    /// Users that vanished between ListUsers and their enrichment (deleted mid-sync).
    pub vanished: usize,
    /// `per-user` or `bulk`: what collected this account.
    pub strategy: &'static str,
    /// Why `auto` fell back from bulk to per-user calls, if it did.
    pub fallback: Option<String>,
    /// bulk: the credential report's age in seconds.
    pub report_age_secs: Option<i64>,
    /// bulk: per-user calls made because the report was stale.
    pub fresh_checks: usize,
    /// The account's root user (`collect.root_user`).
    pub root: Option<RootUser>,
}

/// An account that could not be collected; its snapshot is left exactly as it was.
#[derive(Debug, Clone)]
pub struct AccountError {
    /// The account id when known (from the role ARN or GetCallerIdentity), else `caller`.
    pub account_id: String,
    pub role_arn: Option<String>,
    pub error: CollectError,
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.role_arn {
            Some(role) => write!(
                f,
                "account {} (role {role}): {}",
                self.account_id, self.error
            ),
            None => write!(f, "account {} (caller): {}", self.account_id, self.error),
        }
    }
}

pub(crate) fn millis(dt: &aws_sdk_iam::primitives::DateTime) -> i64 {
    dt.to_millis().unwrap_or(i64::MAX)
}

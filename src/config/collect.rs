//! `[collect]`: how the collector spreads its calls and which strategy it uses.

use serde::{Deserialize, Serialize};

use super::default_true;

/// Everything but SSH keys, which cost one call per user even in bulk (see the README's table).
fn default_credential_types() -> Vec<CredentialKind> {
    vec![
        CredentialKind::SigningCertificates,
        CredentialKind::ServiceSpecific,
    ]
}

/// How users are enriched (see the README, "Collection strategies").
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// per-user up to 100 users under the prefix, bulk above.
    #[default]
    Auto,
    /// Account-wide calls (GAAD, credential report) plus per-user calls only where needed.
    Bulk,
    /// Five calls per user plus one per key: exact and fresh, expensive at scale.
    PerUser,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// `auto`, `bulk` or `per-user`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Accounts collected at the same time.
    #[serde(default = "default_account_concurrency")]
    pub account_concurrency: usize,
    /// IAM calls in flight per account (IAM rate limits are per account).
    #[serde(default = "default_user_concurrency")]
    pub user_concurrency: usize,
    /// bulk: a credential report older than this (seconds) may predate a user's first access key,
    /// so every user's keys are listed. IAM regenerates a report older than 4 hours when asked.
    #[serde(default = "default_report_max_age_secs")]
    pub report_max_age_secs: u64,
    /// bulk: how long to wait for IAM to generate the credential report (seconds). In `auto` a
    /// report not ready in time falls back to per-user calls for that account; in `bulk` it fails it.
    #[serde(default = "default_report_wait_secs")]
    pub report_wait_secs: u64,
    /// Credentials collected besides access keys: `ssh_keys` (one call per user in either strategy:
    /// IAM has no account-wide call), `signing_certificates`, `service_specific`.
    #[serde(default = "default_credential_types")]
    pub credential_types: Vec<CredentialKind>,
    /// One more record per account: its root user (MFA, access keys).
    #[serde(default = "default_true")]
    pub root_user: bool,
    /// auto: per-user calls up to this many users under the prefix (≈5 calls each, exact and
    /// fresh), bulk above it (a handful of account-wide calls plus about one per user).
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: usize,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            strategy: Strategy::default(),
            account_concurrency: default_account_concurrency(),
            user_concurrency: default_user_concurrency(),
            report_max_age_secs: default_report_max_age_secs(),
            report_wait_secs: default_report_wait_secs(),
            bulk_threshold: default_bulk_threshold(),
            credential_types: default_credential_types(),
            root_user: true,
        }
    }
}

fn default_account_concurrency() -> usize {
    4
}
/// A report IAM generates for the sync's own request is a few seconds old when it is read.
fn default_report_max_age_secs() -> u64 {
    60
}
fn default_report_wait_secs() -> u64 {
    120
}
fn default_bulk_threshold() -> usize {
    100
}
fn default_user_concurrency() -> usize {
    8
}

impl CollectConfig {
    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        if !(1..=64).contains(&c.account_concurrency) {
            return Err(format!(
                "collect.account_concurrency: {} is out of range (1 to 64)",
                c.account_concurrency
            ));
        }
        if !(1..=64).contains(&c.user_concurrency) {
            return Err(format!(
                "collect.user_concurrency: {} is out of range (1 to 64)",
                c.user_concurrency
            ));
        }
        if !(1..=3600).contains(&c.report_wait_secs) {
            return Err(format!(
                "collect.report_wait_secs: {} is out of range (1 to 3600)",
                c.report_wait_secs
            ));
        }
        Ok(())
    }
}

/// The credential types `[collect] credential_types` can name (access keys are always collected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    SshKeys,
    SigningCertificates,
    ServiceSpecific,
}

impl CredentialKind {
    /// The `type` of the credential in `user.programmatic_credentials[]`.
    pub fn ocsf_type(self) -> &'static str {
        match self {
            CredentialKind::SshKeys => "SSH Public Key",
            CredentialKind::SigningCertificates => "X.509 Signing Certificate",
            CredentialKind::ServiceSpecific => "Service-Specific Credential",
        }
    }
}

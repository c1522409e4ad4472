//! `[aws]`: where and how to read IAM — credentials, accounts (roles, organization), retries.

use serde::{Deserialize, Serialize};

use super::default_true;
use super::secret::{Secret, check_http_url};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Region for the STS and IAM clients (IAM itself is global). Falls back to `AWS_REGION`, then us-east-1.
    pub region: Option<String>,
    /// Custom endpoint (moto, a proxy, a VPC endpoint). `AWS_ENDPOINT_URL` is honoured too.
    pub endpoint_url: Option<String>,
    /// IAM `ListUsers` PathPrefix: only users whose path starts with it. Must start with `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Collect the account of the base credentials too.
    #[serde(default = "default_true")]
    pub include_caller_account: bool,
    /// Each assumed role is one more account.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
    /// Discover accounts from AWS Organizations and assume one role name in each.
    pub organization: Option<OrganizationConfig>,
    /// SDK attempts per call (first try included). IAM throttles per account; large estates want 10.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `adaptive` (client-side rate limiting after throttles) or `standard`.
    #[serde(default)]
    pub retry_mode: RetryMode,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            endpoint_url: None,
            path_prefix: default_path_prefix(),
            include_caller_account: true,
            roles: Vec::new(),
            organization: None,
            max_attempts: default_max_attempts(),
            retry_mode: RetryMode::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetryMode {
    #[default]
    Adaptive,
    Standard,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// `arn:<partition>:iam::<account>:role/<name>` (any partition: aws, aws-cn, aws-us-gov…).
    pub arn: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<Secret>,
    /// STS session name (shows in CloudTrail). Default `iam-inventory`.
    pub session_name: Option<String>,
    /// Session length in seconds (900–43200). The credentials are refreshed before they expire.
    pub duration_seconds: Option<u32>,
}

/// `[aws.organization]`: every ACTIVE account that Organizations ListAccounts returns (called with
/// the base credentials: the management account or a delegated administrator) becomes one more
/// account, reached through `role_name`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    /// The reader role's name (with its path, if any) in every member account.
    pub role_name: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<Secret>,
    /// STS session name. Default `iam-inventory`.
    pub session_name: Option<String>,
    /// Session length in seconds (900–43200).
    pub duration_seconds: Option<u32>,
    /// Account ids to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl OrganizationConfig {
    /// The role to assume in `account_id` (`partition` from the organization's ARNs, e.g. `aws`).
    pub fn role_for(&self, partition: &str, account_id: &str) -> RoleConfig {
        RoleConfig {
            arn: format!("arn:{partition}:iam::{account_id}:role/{}", self.role_name),
            external_id: self.external_id.clone(),
            session_name: self.session_name.clone(),
            duration_seconds: self.duration_seconds,
        }
    }
}

impl RoleConfig {
    /// The account id named in the role ARN (validated at load time).
    pub fn account_id(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }
}

fn default_path_prefix() -> String {
    "/".into()
}
fn default_max_attempts() -> u32 {
    10
}

/// The AWS partitions (the second field of an ARN).
pub const PARTITIONS: &[&str] = &[
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
    "aws-eusc",
];

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && PARTITIONS.contains(&parts[1])
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > "role/".len()
}

impl AwsConfig {
    /// Checks that serde cannot express. Messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        let a = self;
        if !a.path_prefix.starts_with('/') {
            return Err(format!(
                "aws.path_prefix: {:?} must start with \"/\" (\"/\" selects all users; \"/contractors/\" one folder)",
                a.path_prefix
            ));
        }
        if a.path_prefix.len() > 512 || a.path_prefix.chars().any(|c| !('!'..='~').contains(&c)) {
            return Err(format!(
                "aws.path_prefix: {:?} must be at most 512 printable ASCII characters without spaces",
                a.path_prefix
            ));
        }
        if a.region.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return Err("aws.region: must not be empty (e.g. \"us-east-1\")".into());
        }
        if let Some(u) = &a.endpoint_url {
            check_http_url(u).map_err(|m| format!("aws.endpoint_url: {m}"))?;
        }
        if !(1..=20).contains(&a.max_attempts) {
            return Err(format!(
                "aws.max_attempts: {} is out of range (1 to 20)",
                a.max_attempts
            ));
        }
        if !a.include_caller_account && a.roles.is_empty() && a.organization.is_none() {
            return Err(
                "aws.include_caller_account: false with no [[aws.roles]] and no [aws.organization] leaves no account to collect"
                    .into(),
            );
        }
        if let Some(org) = &a.organization {
            let name_ok = !org.role_name.is_empty()
                && org.role_name.len() <= 512
                && org
                    .role_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
                && !org.role_name.starts_with('/');
            if !name_ok {
                return Err(format!(
                    "aws.organization.role_name: {:?} is not a role name (letters, digits and +=,.@_-, optionally a path like team/Reader)",
                    org.role_name
                ));
            }
            if let Some(bad) = org
                .exclude
                .iter()
                .find(|id| id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "aws.organization.exclude: {bad:?} is not a 12-digit account id"
                ));
            }
            if let Some(d) = org.duration_seconds.filter(|d| !(900..=43200).contains(d)) {
                return Err(format!(
                    "aws.organization.duration_seconds: {d} is out of range (900 to 43200)"
                ));
            }
        }
        let mut seen_roles = std::collections::HashSet::new();
        for (i, role) in a.roles.iter().enumerate() {
            let key = format!("aws.roles[{i}]");
            if !is_role_arn(&role.arn) {
                return Err(format!(
                    "{key}.arn: {:?} is not a role ARN (expected arn:<partition>:iam::<12-digit account>:role/<name>, partition aws, aws-cn, aws-us-gov…)",
                    role.arn
                ));
            }
            if !seen_roles.insert(role.account_id().to_string()) {
                return Err(format!(
                    "{key}.arn: account {} is already reached by another role; one role per account",
                    role.account_id()
                ));
            }
            if let Some(d) = role.duration_seconds.filter(|d| !(900..=43200).contains(d)) {
                return Err(format!(
                    "{key}.duration_seconds: {d} is out of range (900 to 43200)"
                ));
            }
            if let Some(s) = &role.session_name {
                let ok = (2..=64).contains(&s.len())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c));
                if !ok {
                    return Err(format!(
                        "{key}.session_name: {s:?} must be 2-64 characters of letters, digits and =,.@-_"
                    ));
                }
            }
        }
        Ok(())
    }
}

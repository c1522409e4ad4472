//! Credentials and accounts: the base SDK config from the standard chain, the caller's account, and
//! one account per assumed role.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::config::SharedCredentialsProvider;

use super::calls::CallCounter;
use super::{AccountError, CollectError};
use crate::config::{AwsConfig, OrganizationConfig, RetryMode, RoleConfig, ShardConfig};

const DEFAULT_SESSION_NAME: &str = "iam-inventory";

/// One account to collect: the caller's own, or one reached through a role.
#[derive(Debug, Clone)]
pub struct AccountTarget {
    pub role: Option<RoleConfig>,
}

impl AccountTarget {
    /// The label used before the account id is known.
    pub fn label(&self) -> String {
        match &self.role {
            Some(r) => r.account_id().to_string(),
            None => "caller".into(),
        }
    }
}

/// The accounts a sync covers, in config order: the caller's first when included.
pub fn resolve_accounts(aws: &AwsConfig) -> Vec<AccountTarget> {
    let mut out = Vec::new();
    if aws.include_caller_account {
        out.push(AccountTarget { role: None });
    }
    out.extend(aws.roles.iter().map(|r| AccountTarget {
        role: Some(r.clone()),
    }));
    out
}

/// Every account target of the configuration: the caller's and each `[[aws.roles]]`, plus, with
/// `[aws.organization]`, every account discovered (explicit roles win for their accounts). With
/// shards, only this shard's roles (a role's account is in its ARN; the caller's account is known,
/// and filtered, once connected). A failed discovery is returned beside the explicit targets.
pub async fn configured_targets(
    base: &SdkConfig,
    aws: &AwsConfig,
    shard: ShardConfig,
    counter: CallCounter,
) -> (Vec<AccountTarget>, Option<CollectError>) {
    let mut targets = resolve_accounts(aws);
    let mut failure = None;
    if let Some(org) = &aws.organization {
        match discover_organization(base, org, counter).await {
            Ok(found) => {
                tracing::info!(
                    accounts = found.len(),
                    "accounts discovered in the organization"
                );
                let explicit: std::collections::HashSet<String> =
                    targets.iter().map(AccountTarget::label).collect();
                targets.extend(found.into_iter().filter(|t| !explicit.contains(&t.label())));
            }
            Err(e) => failure = Some(e),
        }
    }
    targets.retain(|t| t.role.as_ref().is_none_or(|r| shard.owns(r.account_id())));
    (targets, failure)
}

/// `[aws.organization]`: every ACTIVE account of the organization (Organizations ListAccounts with
/// the base credentials), but those in `exclude`, as a role target. The partition of the role ARNs
/// comes from the organization's own ARNs.
pub async fn discover_organization(
    base: &SdkConfig,
    org: &OrganizationConfig,
    counter: CallCounter,
) -> Result<Vec<AccountTarget>, CollectError> {
    use aws_sdk_organizations::types::{AccountState, AccountStatus};
    let conf = aws_sdk_organizations::config::Builder::from(base)
        .interceptor(counter)
        .build();
    let client = aws_sdk_organizations::Client::from_conf(conf);
    let pages: Vec<_> = client
        .list_accounts()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("organizations:ListAccounts", e))?;
    let mut targets = Vec::new();
    for a in pages.iter().flat_map(|p| p.accounts()) {
        let active = match (a.state(), a.status()) {
            (Some(state), _) => *state == AccountState::Active,
            (None, Some(status)) => *status == AccountStatus::Active,
            (None, None) => false,
        };
        let Some(id) = a.id().filter(|_| active) else {
            continue;
        };
        if org.exclude.iter().any(|x| x == id) {
            continue;
        }
        let partition = a
            .arn()
            .and_then(|arn| arn.split(':').nth(1))
            .unwrap_or("aws");
        targets.push(AccountTarget {
            role: Some(org.role_for(partition, id)),
        });
    }
    Ok(targets)
}

/// Base SDK config: standard credential chain (env, profile, SSO, IMDS…), region from config, then
/// `AWS_REGION`, then us-east-1 (IAM is global; the region only picks the STS endpoint), and a retry
/// policy sized for IAM's per-account throttling.
pub async fn build_base_config(aws: &AwsConfig) -> SdkConfig {
    let region = RegionProviderChain::first_try(aws.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static("us-east-1"));
    let retry = match aws.retry_mode {
        RetryMode::Adaptive => RetryConfig::adaptive(),
        RetryMode::Standard => RetryConfig::standard(),
    }
    .with_max_attempts(aws.max_attempts)
    .with_initial_backoff(Duration::from_millis(200))
    .with_max_backoff(Duration::from_secs(20));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(retry);
    if let Some(url) = &aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Each account gets its own retry partition: the SDK's retry token bucket and adaptive rate limiter
/// are shared per partition (by default one per service and region, process-wide), and IAM throttles
/// per account, so one throttled account must not slow down the others.
fn partition(target: &AccountTarget) -> aws_sdk_iam::config::retry::RetryPartition {
    aws_sdk_iam::config::retry::RetryPartition::new(format!("iam-inventory-{}", target.label()))
}

/// The credentials of the AssumeRole call that proved the role works, used first; the
/// [`AssumeRoleProvider`] only when they are due for renewal. Without this every role was assumed
/// twice per sync (once to check it, once more by the provider for the first IAM call).
#[derive(Debug)]
struct Seeded {
    first: std::sync::Mutex<Option<aws_credential_types::Credentials>>,
    refresh: AssumeRoleProvider,
}

impl aws_credential_types::provider::ProvideCredentials for Seeded {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        match first {
            // The SDK's identity cache keeps them until shortly before they expire, then asks again.
            Some(creds) => {
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(creds))
            }
            None => self.refresh.provide_credentials(),
        }
    }
}

fn seed_credentials(c: &aws_sdk_sts::types::Credentials) -> aws_credential_types::Credentials {
    let expires = std::time::SystemTime::try_from(*c.expiration()).ok();
    aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        expires,
        "AssumeRole",
    )
}

/// An account ready to be read: its IAM client (calls counted) and who it is.
pub struct ConnectedAccount {
    pub iam: aws_sdk_iam::Client,
    pub account_id: String,
    /// `aws`, `aws-cn`, `aws-us-gov`…: from the caller's or the assumed role's ARN.
    pub partition: String,
    pub role_arn: Option<String>,
    pub counter: CallCounter,
    /// The SDK configuration with this account's credentials (the role's, refreshed), for the
    /// other services read in it (CloudTrail LookupEvents for `[events_source]`).
    pub sdk: SdkConfig,
}

/// Establishes the account's identity. For a role this calls AssumeRole once up front, so a denied
/// role fails here with STS's own error code; the IAM client then uses an [`AssumeRoleProvider`],
/// which refreshes the session before it expires during long collections.
pub async fn connect(
    base: &SdkConfig,
    target: &AccountTarget,
    counter: CallCounter,
) -> Result<ConnectedAccount, AccountError> {
    let fail = |account_id: String, error: CollectError| AccountError {
        account_id,
        role_arn: target.role.as_ref().map(|r| r.arn.clone()),
        error,
    };
    let sts_conf = aws_sdk_sts::config::Builder::from(base)
        .interceptor(counter.clone())
        .build();
    let sts = aws_sdk_sts::Client::from_conf(sts_conf);
    match &target.role {
        None => {
            let who = sts.get_caller_identity().send().await.map_err(|e| {
                fail(
                    "caller".into(),
                    CollectError::from_sdk("sts:GetCallerIdentity", e),
                )
            })?;
            // An empty account id would file the caller's users under "" and later mistake them
            // for another account's: without an id the account cannot be collected.
            let account_id = who
                .account()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    fail(
                        "caller".into(),
                        CollectError {
                            operation: "sts:GetCallerIdentity",
                            code: None,
                            message: "sts:GetCallerIdentity answered without an account id".into(),
                        },
                    )
                })?
                .to_string();
            let arn_partition = who
                .arn()
                .and_then(|a| a.split(':').nth(1))
                .unwrap_or("aws")
                .to_string();
            let iam_conf = aws_sdk_iam::config::Builder::from(base)
                .interceptor(counter.clone())
                .retry_partition(partition(target))
                .build();
            Ok(ConnectedAccount {
                iam: aws_sdk_iam::Client::from_conf(iam_conf),
                account_id,
                partition: arn_partition,
                role_arn: None,
                counter,
                sdk: base.clone(),
            })
        }
        Some(role) => {
            let session_name = role
                .session_name
                .clone()
                .unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
            let mut req = sts
                .assume_role()
                .role_arn(&role.arn)
                .role_session_name(&session_name);
            if let Some(ext) = &role.external_id {
                req = req.external_id(ext.expose());
            }
            if let Some(d) = role.duration_seconds {
                req = req.duration_seconds(d as i32);
            }
            let out = req.send().await.map_err(|e| {
                fail(
                    role.account_id().to_string(),
                    CollectError::from_sdk("sts:AssumeRole", e),
                )
            })?;
            // arn:aws:sts::<account>:assumed-role/<role>/<session>
            let account_id = out
                .assumed_role_user()
                .and_then(|u| u.arn().split(':').nth(4))
                .filter(|a| !a.is_empty())
                .unwrap_or(role.account_id())
                .to_string();
            let mut provider = AssumeRoleProvider::builder(&role.arn)
                .session_name(session_name)
                .configure(base);
            if let Some(ext) = &role.external_id {
                provider = provider.external_id(ext.expose());
            }
            if let Some(d) = role.duration_seconds {
                provider = provider.session_length(Duration::from_secs(u64::from(d)));
            }
            let provider = Seeded {
                first: std::sync::Mutex::new(out.credentials().map(seed_credentials)),
                refresh: provider.build().await,
            };
            let sdk = base
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
            let iam_conf = aws_sdk_iam::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .retry_partition(partition(target))
                .build();
            Ok(ConnectedAccount {
                iam: aws_sdk_iam::Client::from_conf(iam_conf),
                account_id,
                partition: role.arn.split(':').nth(1).unwrap_or("aws").to_string(),
                role_arn: Some(role.arn.clone()),
                counter,
                sdk,
            })
        }
    }
}

//! `check-config --connect`: the base credentials, each role, and a read of IAM through each, one
//! line per target, without collecting anything.

use super::accounts::{self, AccountTarget};
use super::calls::CallCounter;
use super::{CollectError, build_base_config, resolve_accounts};
use crate::config::AwsConfig;

/// `(target, Ok(what was found) | Err(what is wrong))`, in config order.
pub async fn probe_aws(aws: &AwsConfig) -> Vec<(String, Result<String, String>)> {
    let base = build_base_config(aws).await;
    let mut out = Vec::new();
    if let Some(org) = &aws.organization {
        let found = accounts::discover_organization(&base, org, CallCounter::default()).await;
        out.push((
            "aws organization".to_string(),
            found
                .map(|t| {
                    format!(
                        "{} accounts to collect through role {}",
                        t.len(),
                        org.role_name
                    )
                })
                .map_err(|e| e.message),
        ));
    }
    for target in resolve_accounts(aws) {
        let label = match &target.role {
            Some(r) => format!("aws role {}", r.arn),
            None => "aws caller".to_string(),
        };
        out.push((label, probe_target(&base, &target).await));
    }
    out
}

async fn probe_target(
    base: &aws_config::SdkConfig,
    target: &AccountTarget,
) -> Result<String, String> {
    let acc = accounts::connect(base, target, CallCounter::default())
        .await
        .map_err(|e| e.error.message)?;
    // One page of one user: proves the reader may list users in this account.
    acc.iam
        .list_users()
        .max_items(1)
        .send()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListUsers", e).message)?;
    Ok(format!("account {}, iam:ListUsers allowed", acc.account_id))
}

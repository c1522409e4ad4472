//! `check-config --connect`: the base credentials, each role, and a read of IAM through each, one
//! line per target, without collecting anything.

use super::accounts::{self, AccountTarget};
use super::calls::CallCounter;
use super::{CollectError, build_base_config, resolve_accounts};
use crate::config::{AwsConfig, EventsSourceConfig, EventsSourceType};

/// `(target, Ok(what was found) | Err(what is wrong))`, in config order. With an events source,
/// its queue (sqs) or LookupEvents through every target (cloudtrail) too.
pub async fn probe_aws(
    aws: &AwsConfig,
    events: Option<&EventsSourceConfig>,
) -> Vec<(String, Result<String, String>)> {
    let base = build_base_config(aws).await;
    let mut out = Vec::new();
    if let Some(e) = events.filter(|e| e.kind == EventsSourceType::Sqs) {
        let url = e.queue_url.clone().unwrap_or_default();
        let queue = super::events::sqs::Queue::new(
            &base,
            &url,
            &e.effective_region(),
            CallCounter::default(),
        );
        out.push((
            format!("events_source sqs {url}"),
            queue
                .probe()
                .await
                .map(|n| format!("sqs:GetQueueAttributes allowed, {n} messages waiting"))
                .map_err(|e| e.message),
        ));
    }
    let trail_region = events
        .filter(|e| e.kind == EventsSourceType::Cloudtrail)
        .map(EventsSourceConfig::effective_region);
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
        out.push((
            label,
            probe_target(&base, &target, trail_region.as_deref()).await,
        ));
    }
    out
}

async fn probe_target(
    base: &aws_config::SdkConfig,
    target: &AccountTarget,
    trail_region: Option<&str>,
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
    if let Some(region) = trail_region {
        // The last minute of IAM events: proves LookupEvents is allowed through this target.
        let now = crate::clock::now_ms();
        super::events::cloudtrail::Trail::new(&acc.sdk, region, CallCounter::default())
            .lookup(now - 60_000, now, std::time::Duration::ZERO)
            .await
            .map_err(|e| e.message)?;
        return Ok(format!(
            "account {}, iam:ListUsers and cloudtrail:LookupEvents allowed",
            acc.account_id
        ));
    }
    Ok(format!("account {}, iam:ListUsers allowed", acc.account_id))
}

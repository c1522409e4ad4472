//! The bulk strategy: answer most fields from account-wide calls instead of five calls per user.
//!
//! Per account: ListUsers pages (path prefix) + GetAccountAuthorizationDetails pages (tags, groups,
//! group ARNs) + the credential report (console password, MFA, key slots and last use) +
//! ListVirtualMFADevices pages; then, per user, only what those cannot answer: ListAccessKeys for
//! users whose report row shows keys (no bulk API returns key ids), ListMFADevices where the report
//! says MFA but no virtual device is assigned (hardware/FIDO), GetAccessKeyLastUsed for a key
//! younger than the report. A user missing from the report (created after it) or from GAAD gets the
//! full per-user treatment.
//!
//! Freshness: IAM regenerates the report at most every 4 hours and hands back an older one as it
//! is. A report older than `collect.report_max_age_secs` cannot vouch for what changed since it was
//! made, so for such a report the fields it answered are asked of IAM per user instead: every user's
//! access keys (ListAccessKeys), console access (GetLoginProfile), and MFA for users without an
//! assigned virtual device (ListMFADevices). Only key last-use still comes from the stale report
//! (it is a volatile field, not a change). These extra calls are counted as `fresh_checks`.

use std::collections::HashMap;

use aws_sdk_iam::Client;
use aws_sdk_iam::types::{AssignmentStatusType, EntityType, User};
use futures::{StreamExt, TryStreamExt};

use super::enrich::{
    assemble, enrich_user, has_login_profile, last_used_if_still_there, list_access_keys,
    list_mfa_devices,
};
use super::permissions::{AccountPolicies, GroupPolicies, PolicyRef};
use super::report::{self, CredentialReport};
use super::{AccessKey, CollectError, Group, IamUser, KeyLastUsed, MfaDevice, Tag, millis};

struct Detail {
    tags: Vec<Tag>,
    groups: Vec<String>,
}

/// A user's own policies as GAAD lists them: managed, inline (name, document), boundary.
pub type OwnPolicies = (Vec<PolicyRef>, Vec<(String, String)>, Option<PolicyRef>);

/// What a bulk collection of one account yielded.
#[derive(Debug)]
pub struct BulkOutcome {
    pub users: Vec<IamUser>,
    /// Users deleted between ListUsers and their enrichment.
    pub vanished: usize,
    /// Users missing from the report or GAAD, collected per user.
    pub fallbacks: usize,
    /// How old the credential report was, in seconds (`None`: IAM gave no generation time).
    pub report_age_secs: Option<i64>,
    /// Whether the report was older than `report_max_age_secs` (its fields were asked per user).
    pub report_stale: bool,
    /// With a stale report and an events source: the user names CloudTrail shows changed since
    /// the report (the only ones asked per user); `None` = everyone was asked.
    pub changed_since_report: Option<std::collections::HashSet<String>>,
    /// Per-user calls made because the report was stale (GetLoginProfile, ListMFADevices,
    /// ListAccessKeys beyond what a fresh report needs).
    pub fresh_checks: usize,
    /// From GAAD: every group's policies and every customer-managed policy's default document.
    pub policies: AccountPolicies,
    /// From GAAD: each user's own policies, by ARN.
    pub own_policies: HashMap<String, OwnPolicies>,
    /// Users whose report row shows a signing certificate (active or not), by ARN.
    pub cert_holders: std::collections::HashSet<String>,
    /// Users the report has a row for, by ARN.
    pub in_report: std::collections::HashSet<String>,
    /// The report's `<root_account>` row, when it has one.
    pub root: Option<report::RootRow>,
}

/// Where to ask which users changed since an older credential report: CloudTrail LookupEvents
/// in this account (`[events_source]` is configured, so an event CloudTrail has not shown yet is
/// refreshed when it arrives).
pub struct ChangedSince<'a> {
    pub sdk: &'a aws_config::SdkConfig,
    pub region: &'a str,
    pub counter: super::calls::CallCounter,
    /// The wait between two LookupEvents pages (`events_source.requests_per_sec`).
    pub pace: std::time::Duration,
}

/// How far before the report's generation time CloudTrail is asked (events are recorded with
/// the time of the call, which can precede the report by the call's duration).
const REPORT_SLACK_MS: i64 = 5 * 60 * 1000;
/// LookupEvents keeps 90 days.
const TRAIL_DAYS_MS: i64 = 90 * 86_400_000;

/// Bulk-collects `users` (from ListUsers).
pub async fn collect_bulk(
    iam: &Client,
    users: Vec<User>,
    concurrency: usize,
    report_max_age_ms: i64,
    report_wait: std::time::Duration,
    changed_since: Option<ChangedSince<'_>>,
) -> Result<BulkOutcome, CollectError> {
    let wanted: std::collections::HashSet<String> =
        users.iter().map(|u| u.arn().to_string()).collect();
    // The three account-wide reads are independent: run them at once.
    let ((details, group_arns, policies, own_policies), report, virtual_mfa) = tokio::try_join!(
        authorization_details(iam, &wanted),
        report::fetch(iam, report_wait),
        virtual_mfa_devices(iam)
    )?;
    tracing::debug!(
        users = users.len(),
        report_rows = report.rows.len(),
        report_generated = report
            .generated_ms
            .map(crate::clock::rfc3339)
            .unwrap_or_default(),
        "bulk data fetched"
    );
    // A report IAM generated for this request is seconds old. One generated earlier (IAM keeps a
    // report for 4 hours) cannot show what changed since: a user's first access key, a console
    // password, a hardware MFA device. Then those are asked per user (see the module docs).
    let age_ms = report
        .generated_ms
        .map_or(i64::MAX, |g| crate::clock::now_ms().saturating_sub(g));
    let stale = age_ms > report_max_age_ms;
    if stale {
        tracing::info!(
            report_age_secs = age_ms / 1000,
            max_age_secs = report_max_age_ms / 1000,
            "credential report older than collect.report_max_age_secs: asking IAM per user for access keys, console access and non-virtual MFA"
        );
    }
    // With an events source, only the users CloudTrail names since the report need the fresh
    // checks: the report still tells the truth about everyone else. If CloudTrail cannot answer,
    // everyone is checked (never a false "no").
    let named = match (&changed_since, stale) {
        (Some(c), true) => {
            let now = crate::clock::now_ms();
            let since = report
                .generated_ms
                .map_or(now - TRAIL_DAYS_MS, |g| g - REPORT_SLACK_MS)
                .max(now - TRAIL_DAYS_MS);
            let trail = super::events::cloudtrail::Trail::new(c.sdk, c.region, c.counter.clone());
            match trail.lookup(since, now, c.pace).await {
                Ok(found) => {
                    let names: std::collections::HashSet<String> = found
                        .records
                        .iter()
                        .filter_map(|r| match super::events::from_record(r) {
                            Ok(super::events::Parsed::Event(e)) => Some(e.targets),
                            _ => None,
                        })
                        .flatten()
                        .filter_map(|t| match t {
                            super::events::Target::User(n) => Some(n),
                            _ => None,
                        })
                        .collect();
                    tracing::info!(
                        users = names.len(),
                        "CloudTrail names the users changed since the credential report: only they are asked per user"
                    );
                    Some(names)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "CloudTrail LookupEvents failed: asking IAM per user for every user");
                    None
                }
            }
        }
        _ => None,
    };
    let ctx = Ctx {
        stale,
        named,
        fresh_checks: std::sync::atomic::AtomicUsize::new(0),
        iam,
        details: &details,
        group_arns: &group_arns,
        report: &report,
        virtual_mfa: &virtual_mfa,
    };
    let results: Vec<(Option<IamUser>, bool)> = futures::stream::iter(users)
        .map(|u| ctx.user(u))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let total = results.len();
    let fallbacks = results.iter().filter(|(_, fb)| *fb).count();
    let mut out: Vec<IamUser> = results.into_iter().filter_map(|(u, _)| u).collect();
    out.sort_by(|a, b| a.arn.cmp(&b.arn));
    let vanished = total - out.len();
    let fresh_checks = ctx.fresh_checks.into_inner();
    Ok(BulkOutcome {
        users: out,
        vanished,
        fallbacks,
        report_age_secs: report.generated_ms.map(|_| age_ms / 1000),
        report_stale: stale,
        changed_since_report: ctx.named,
        fresh_checks,
        policies,
        own_policies,
        cert_holders: report
            .rows
            .values()
            .filter(|r| r.has_certificate)
            .map(|r| r.arn.clone())
            .collect(),
        in_report: report.rows.keys().cloned().collect(),
        root: report.root,
    })
}

/// Whether a bulk failure is one that per-user collection does not share: a permission only bulk
/// needs (GAAD, the credential report, the virtual MFA list) or a report IAM did not produce in
/// time. Returns what to tell the user.
pub fn bulk_only_failure(e: &CollectError) -> Option<String> {
    let bulk_op = matches!(
        e.operation,
        "iam:GetAccountAuthorizationDetails"
            | "iam:GenerateCredentialReport"
            | "iam:GetCredentialReport"
            | "iam:ListVirtualMFADevices"
    );
    match e.code.as_deref() {
        Some("AccessDenied" | "AccessDeniedException") if bulk_op => {
            Some(format!("{} is not allowed", e.operation))
        }
        Some(report::NOT_READY) => Some("the credential report was not ready in time".into()),
        _ => None,
    }
}

struct Ctx<'a> {
    /// The report is older than `report_max_age_secs`: ask IAM per user for what it answered.
    stale: bool,
    /// With `stale`: the only users to ask (CloudTrail named them since the report); `None` = all.
    named: Option<std::collections::HashSet<String>>,
    fresh_checks: std::sync::atomic::AtomicUsize,
    iam: &'a Client,
    details: &'a HashMap<String, Detail>,
    group_arns: &'a HashMap<String, String>,
    report: &'a CredentialReport,
    virtual_mfa: &'a HashMap<String, Vec<MfaDevice>>,
}

impl Ctx<'_> {
    /// One user; the bool says whether it needed the full per-user fallback.
    async fn user(&self, user: User) -> Result<(Option<IamUser>, bool), CollectError> {
        let arn = user.arn().to_string();
        let (Some(detail), Some(row)) = (self.details.get(&arn), self.report.rows.get(&arn)) else {
            return Ok((enrich_user(self.iam, user).await?, true));
        };
        let (Some(report_console), Some(mfa_active)) = (row.password_enabled, row.mfa_active)
        else {
            return Ok((enrich_user(self.iam, user).await?, true));
        };
        let name = user.user_name().to_string();
        let stale = self.stale && self.named.as_ref().is_none_or(|n| n.contains(&name));
        let checked = |n: usize| {
            self.fresh_checks
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let vanished = |e: CollectError| -> Result<(Option<IamUser>, bool), CollectError> {
            if e.is_no_such_entity() {
                tracing::info!(user = %name, "user was deleted during the sync; skipped");
                Ok((None, false))
            } else {
                Err(e)
            }
        };

        // GetLoginProfile answers NoSuchEntity both for "no password" and for a user deleted since
        // ListUsers; the ListAccessKeys that follows tells the two apart (as in per-user mode).
        let console = if stale {
            checked(1);
            has_login_profile(self.iam, &name).await?
        } else {
            report_console
        };
        let mut access_keys = Vec::new();
        if stale || !row.keys.is_empty() {
            if row.keys.is_empty() {
                checked(1);
            }
            let keys = match list_access_keys(self.iam, &name).await {
                Ok(k) => k,
                Err(e) => return vanished(e),
            };
            for (id, status, created) in keys {
                let slot = created.and_then(|c| {
                    row.keys
                        .iter()
                        .find(|k| k.last_rotated_secs == c.div_euclid(1000))
                });
                let last_used = match slot {
                    Some(s) => s.last_used_ms.map(|date| KeyLastUsed {
                        date,
                        service: s.last_used_service.clone(),
                        region: s.last_used_region.clone(),
                    }),
                    // Younger than the report: ask for this key alone.
                    None => match last_used_if_still_there(self.iam, &id).await? {
                        Some(used) => used,
                        None => continue,
                    },
                };
                access_keys.push(AccessKey {
                    id,
                    status,
                    created,
                    last_used,
                });
            }
        }

        // The virtual-device list is fresh. Other devices (hardware, FIDO) are only hinted at by the
        // report's mfa_active: trusted when the report is fresh, asked of IAM when it is stale.
        let mfa_devices = match self.virtual_mfa.get(&arn) {
            Some(devices) => devices.clone(),
            None if mfa_active || stale => {
                if stale && !mfa_active {
                    checked(1);
                }
                match list_mfa_devices(self.iam, &name).await {
                    Ok(d) => d,
                    Err(e) => return vanished(e),
                }
            }
            None => Vec::new(),
        };

        let groups = detail
            .groups
            .iter()
            .map(|g| Group {
                name: g.clone(),
                arn: self.group_arns.get(g).cloned(),
            })
            .collect();
        Ok((
            Some(assemble(
                &user,
                access_keys,
                mfa_devices,
                console,
                detail.tags.clone(),
                groups,
            )),
            false,
        ))
    }
}

/// What GAAD tells about the wanted users and the account's groups and policies.
type Authorization = (
    HashMap<String, Detail>,
    HashMap<String, String>,
    AccountPolicies,
    HashMap<String, OwnPolicies>,
);

/// Tags, group names and policies of the wanted users, every group's ARN and policies, and every
/// customer-managed policy's default version: GAAD (User, Group, LocalManagedPolicy), page by page.
async fn authorization_details(
    iam: &Client,
    wanted: &std::collections::HashSet<String>,
) -> Result<Authorization, CollectError> {
    let mut details = HashMap::with_capacity(wanted.len());
    let mut own = HashMap::with_capacity(wanted.len());
    let mut group_arns = HashMap::new();
    let mut policies = AccountPolicies::default();
    let mut pages = iam
        .get_account_authorization_details()
        .filter(EntityType::User)
        .filter(EntityType::Group)
        .filter(EntityType::LocalManagedPolicy)
        .max_items(1000)
        .into_paginator()
        .send();
    let attached = |list: &[aws_sdk_iam::types::AttachedPolicy]| -> Vec<PolicyRef> {
        list.iter()
            .map(|p| PolicyRef {
                name: p.policy_name().unwrap_or_default().to_string(),
                arn: p.policy_arn().map(str::to_string),
            })
            .collect()
    };
    let inline = |list: &[aws_sdk_iam::types::PolicyDetail]| -> Vec<(String, String)> {
        list.iter()
            .map(|p| {
                (
                    p.policy_name().unwrap_or_default().to_string(),
                    p.policy_document().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| CollectError::from_sdk("iam:GetAccountAuthorizationDetails", e))?;
        for u in page.user_detail_list() {
            let Some(arn) = u.arn().filter(|a| wanted.contains(*a)) else {
                continue;
            };
            details.insert(
                arn.to_string(),
                Detail {
                    tags: u
                        .tags()
                        .iter()
                        .map(|t| Tag {
                            key: t.key().to_string(),
                            value: t.value().to_string(),
                        })
                        .collect(),
                    groups: u.group_list().to_vec(),
                },
            );
            let boundary = u
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(|arn| PolicyRef {
                    name: arn.rsplit('/').next().unwrap_or(arn).to_string(),
                    arn: Some(arn.to_string()),
                });
            own.insert(
                arn.to_string(),
                (
                    attached(u.attached_managed_policies()),
                    inline(u.user_policy_list()),
                    boundary,
                ),
            );
        }
        for g in page.group_detail_list() {
            if let (Some(name), Some(arn)) = (g.group_name(), g.arn()) {
                group_arns.insert(name.to_string(), arn.to_string());
                policies.groups.insert(
                    name.to_string(),
                    GroupPolicies {
                        attached: attached(g.attached_managed_policies()),
                        inline: inline(g.group_policy_list()),
                    },
                );
            }
        }
        for p in page.policies() {
            let default = p
                .policy_version_list()
                .iter()
                .find(|v| v.is_default_version())
                .and_then(|v| v.document());
            if let (Some(arn), Some(doc)) = (p.arn(), default) {
                policies.documents.insert(arn.to_string(), doc.to_string());
            }
        }
    }
    Ok((details, group_arns, policies, own))
}

/// Assigned virtual MFA devices, by user ARN.
async fn virtual_mfa_devices(
    iam: &Client,
) -> Result<HashMap<String, Vec<MfaDevice>>, CollectError> {
    let devices: Vec<_> = iam
        .list_virtual_mfa_devices()
        .assignment_status(AssignmentStatusType::Assigned)
        .max_items(1000)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListVirtualMFADevices", e))?;
    let mut by_user: HashMap<String, Vec<MfaDevice>> = HashMap::new();
    for d in devices {
        let (Some(user), Some(enabled)) = (d.user(), d.enable_date()) else {
            continue;
        };
        by_user
            .entry(user.arn().to_string())
            .or_default()
            .push(MfaDevice {
                serial: d.serial_number().to_string(),
                enabled: millis(enabled),
            });
    }
    Ok(by_user)
}

//! What a collection adds after the users themselves: the permission context of every user, the
//! credentials besides access keys (`[collect] credential_types`), and the account's root user
//! (`[collect] root_user`). Both strategies end here; bulk hands over what GAAD and the credential
//! report already told, so it makes no per-user permission calls.

use std::collections::{BTreeSet, HashMap, HashSet};

use aws_sdk_iam::Client;
use aws_sdk_iam::types::SummaryKeyType;
use futures::{StreamExt, TryStreamExt};

use super::bulk::OwnPolicies;
use super::credentials::{self, CredentialKind};
use super::permissions::{self, AccountPolicies};
use super::report::RootRow;
use super::{CollectError, IamUser, RootKey, RootUser};

/// What the account-wide bulk reads already know.
pub struct FromBulk {
    pub policies: AccountPolicies,
    pub own_policies: HashMap<String, OwnPolicies>,
    pub cert_holders: HashSet<String>,
    /// Users the report has a row for (others were created after it: their certificates are asked).
    pub in_report: HashSet<String>,
    pub root: Option<RootRow>,
    /// The report is older than `report_max_age_secs`: what only it tells (certificates, the root's
    /// MFA and keys) is asked of IAM instead.
    pub report_stale: bool,
    /// With a stale report: the users CloudTrail shows changed since it (see
    /// [`super::bulk::BulkOutcome::changed_since_report`]).
    pub changed_since_report: Option<HashSet<String>>,
}

#[derive(Clone, Copy)]
pub struct Extras<'a> {
    pub iam: &'a Client,
    /// `arn:<partition>:iam::<account>:root` is built from these.
    pub partition: &'a str,
    pub account_id: &'a str,
    pub credential_types: &'a [CredentialKind],
    pub root_user: bool,
    pub concurrency: usize,
    /// Boundaries GetUser already answered, by ARN (an incremental refresh reads each user with
    /// GetUser): those users' boundaries are not asked again.
    pub known_boundaries: Option<&'a HashMap<String, Option<permissions::PolicyRef>>>,
}

impl Extras<'_> {
    /// Completes the users (dropping any deleted meanwhile; their count is returned) and reads the
    /// root user. A failed call fails the account, as everywhere in collection.
    pub async fn complete(
        &self,
        users: Vec<IamUser>,
        bulk: Option<FromBulk>,
    ) -> Result<(Vec<IamUser>, usize, Option<RootUser>), CollectError> {
        let total = users.len();
        let (shared, own, cert_holders, in_report, root_row) = match bulk {
            Some(b) if b.report_stale => {
                // The report's certificate flags still hold for users CloudTrail shows unchanged
                // since it; the others are asked.
                let holders = b.changed_since_report.map(|changed| {
                    let mut h = b.cert_holders;
                    h.extend(
                        users
                            .iter()
                            .filter(|u| changed.contains(&u.user_name))
                            .map(|u| u.arn.clone()),
                    );
                    h
                });
                (Some(b.policies), b.own_policies, holders, b.in_report, None)
            }
            Some(b) => (
                Some(b.policies),
                b.own_policies,
                Some(b.cert_holders),
                b.in_report,
                b.root,
            ),
            None => (None, HashMap::new(), None, HashSet::new(), None),
        };
        // 1. Each user's own policies: from GAAD, or per user.
        let with_own: Vec<Option<(IamUser, OwnPolicies)>> = futures::stream::iter(users)
            .map(|u| {
                let known = own.get(&u.arn).cloned();
                let boundary = self.known_boundaries.and_then(|b| b.get(&u.arn).cloned());
                async move {
                    let policies = match known {
                        Some(p) => p,
                        None => match permissions::user_policies(self.iam, &u.user_name, boundary)
                            .await
                        {
                            Ok(p) => p,
                            Err(e) if e.is_no_such_entity() => return Ok(None),
                            Err(e) => return Err(e),
                        },
                    };
                    Ok(Some((u, policies)))
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        let mut users: Vec<(IamUser, OwnPolicies)> = with_own.into_iter().flatten().collect();
        // 2. Groups and customer-managed policies, once each.
        let shared = match shared {
            Some(s) => s,
            None => {
                let groups: BTreeSet<String> = users
                    .iter()
                    .flat_map(|(u, _)| u.groups.iter().map(|g| g.name.clone()))
                    .collect();
                let arns: BTreeSet<String> = users
                    .iter()
                    .flat_map(|(_, (attached, _, _))| attached.iter().filter_map(|p| p.arn.clone()))
                    .collect();
                permissions::fetch_shared(self.iam, groups, arns, self.concurrency).await?
            }
        };
        for (u, (attached, inline, boundary)) in &mut users {
            let groups: Vec<String> = u.groups.iter().map(|g| g.name.clone()).collect();
            u.permissions =
                shared.resolve(attached.clone(), inline.clone(), &groups, boundary.clone());
        }
        let mut users: Vec<IamUser> = users.into_iter().map(|(u, _)| u).collect();
        // 3. Credentials besides access keys.
        let wants = |k| self.credential_types.contains(&k);
        let mut service = if wants(CredentialKind::ServiceSpecific) {
            credentials::service_specific_all(self.iam).await?
        } else {
            HashMap::new()
        };
        let per_user: Vec<Option<IamUser>> = futures::stream::iter(users.drain(..))
            .map(|mut u| {
                let ask_certs = wants(CredentialKind::SigningCertificates)
                    && cert_holders
                        .as_ref()
                        .is_none_or(|h| h.contains(&u.arn) || !in_report.contains(&u.arn));
                let ssh = wants(CredentialKind::SshKeys);
                async move {
                    let mut creds = Vec::new();
                    if ssh {
                        match credentials::ssh_keys(self.iam, &u.user_name).await {
                            Ok(k) => creds.extend(k),
                            Err(e) if e.is_no_such_entity() => return Ok(None),
                            Err(e) => return Err(e),
                        }
                    }
                    if ask_certs {
                        match credentials::signing_certificates(self.iam, &u.user_name).await {
                            Ok(c) => creds.extend(c),
                            Err(e) if e.is_no_such_entity() => return Ok(None),
                            Err(e) => return Err(e),
                        }
                    }
                    u.credentials = creds;
                    Ok(Some(u))
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        let mut users: Vec<IamUser> = per_user.into_iter().flatten().collect();
        for u in &mut users {
            if let Some(c) = service.remove(&u.user_name) {
                u.credentials.extend(c);
            }
            u.credentials
                .sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        }
        users.sort_by(|a, b| a.arn.cmp(&b.arn));
        let vanished = total - users.len();
        // 4. The root user.
        let root = if !self.root_user {
            None
        } else {
            // A report that does not know the root's MFA is not read as "no": ask IAM.
            Some(match root_row.as_ref().and_then(root_from_report) {
                Some(root) => root,
                None => self.root_from_summary().await?,
            })
        };
        Ok((users, vanished, root))
    }

    /// Per-user strategy (or a report without a root row): GetAccountSummary.
    async fn root_from_summary(&self) -> Result<RootUser, CollectError> {
        let out = self
            .iam
            .get_account_summary()
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("iam:GetAccountSummary", e))?;
        let map = out.summary_map();
        let get = |k: SummaryKeyType| map.and_then(|m| m.get(&k)).copied();
        let (Some(mfa), Some(keys)) = (
            get(SummaryKeyType::AccountMfaEnabled),
            get(SummaryKeyType::AccountAccessKeysPresent),
        ) else {
            return Err(CollectError {
                operation: "iam:GetAccountSummary",
                code: None,
                message: "iam:GetAccountSummary answered without AccountMFAEnabled or AccountAccessKeysPresent".into(),
            });
        };
        Ok(RootUser {
            arn: format!("arn:{}:iam::{}:root", self.partition, self.account_id),
            has_mfa: mfa > 0,
            access_keys_present: keys > 0,
            access_keys: Vec::new(),
            password_last_used: None,
            created: None,
        })
    }
}

fn root_from_report(row: &RootRow) -> Option<RootUser> {
    let has_mfa = row.mfa_active?;
    let access_keys: Vec<RootKey> = row
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| RootKey {
            slot: (i + 1) as u8,
            active: k.active,
            last_rotated: k.last_rotated_secs * 1000,
            last_used: k.last_used_ms,
        })
        .collect();
    Some(RootUser {
        arn: row.arn.clone(),
        has_mfa,
        access_keys_present: !access_keys.is_empty(),
        access_keys,
        password_last_used: row.password_last_used_ms,
        created: row.created_ms,
    })
}

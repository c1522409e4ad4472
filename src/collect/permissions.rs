//! Who can do what: the managed and inline policies that reach a user (its own and through each
//! group), its permissions boundary, and whether it is an administrator.
//!
//! An administrator is a user reached by the AWS-managed `AdministratorAccess` (recognised by ARN,
//! any partition), or by any policy with an `Allow` of action `*` on resource `*` (inline, the
//! default version of a customer-managed policy, or through a group). Conditions are not evaluated:
//! an `Allow *` on `*` under a condition still counts, since it is one condition away from all.
//! AWS-managed policies other than AdministratorAccess are not read (their documents are AWS's, and
//! none but it allows `*` on `*`).
//!
//! Per-user strategy: ListAttachedUserPolicies, ListUserPolicies (+ GetUserPolicy per inline policy)
//! and GetUser (the boundary) per user; per group, once per sync, ListAttachedGroupPolicies and
//! ListGroupPolicies (+ GetGroupPolicy); per customer-managed policy, once per sync, GetPolicy and
//! GetPolicyVersion. Bulk: GetAccountAuthorizationDetails returns all of it (see `bulk`).

use std::collections::{BTreeSet, HashMap};

use aws_sdk_iam::Client;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::CollectError;

/// A managed policy (with its ARN) or an inline one (without).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PolicyRef {
    pub name: String,
    pub arn: Option<String>,
}

/// The policies of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPolicies {
    pub attached: Vec<PolicyRef>,
    /// (name, document) of each inline policy.
    pub inline: Vec<(String, String)>,
}

/// What reaches one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Permissions {
    /// The user's own managed policies.
    pub attached: Vec<PolicyRef>,
    /// The user's own inline policy names.
    pub inline: Vec<String>,
    /// Per group (by name): its managed and inline policies.
    pub groups: Vec<(String, Vec<PolicyRef>)>,
    pub boundary: Option<PolicyRef>,
    pub is_admin: bool,
    /// Why: e.g. `AdministratorAccess (group admins)`, `inline ops-all (user)`.
    pub admin_via: Vec<String>,
}

/// Whether an ARN is the AWS-managed AdministratorAccess, in any partition.
pub fn is_administrator_access(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && parts[4] == "aws"
        && parts[5] == "policy/AdministratorAccess"
}

/// Whether an ARN is an AWS-managed policy (its document is AWS's, not the account's).
pub fn is_aws_managed(arn: &str) -> bool {
    arn.split(':').nth(4) == Some("aws")
}

/// IAM returns policy documents URL-encoded (RFC 3986); moto sometimes returns them as they are.
pub fn decode_document(doc: &str) -> String {
    if doc.trim_start().starts_with('{') {
        return doc.to_string();
    }
    let bytes = doc.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn one_or_many(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Whether a policy document allows action `*` on resource `*` in one statement.
pub fn allows_everything(document: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(&decode_document(document)) else {
        return false;
    };
    one_or_many(&doc["Statement"]).into_iter().any(|s| {
        let star = |v: &Value| {
            one_or_many(v)
                .iter()
                .any(|x| x.as_str().is_some_and(|t| t == "*" || t == "*:*"))
        };
        s["Effect"] == "Allow" && star(&s["Action"]) && star(&s["Resource"])
    })
}

/// Everything needed to decide, per user, what reaches them: filled by either strategy.
#[derive(Debug, Default)]
pub struct AccountPolicies {
    /// Group name → its policies.
    pub groups: HashMap<String, GroupPolicies>,
    /// Customer-managed policy ARN → its default version's document.
    pub documents: HashMap<String, String>,
}

impl AccountPolicies {
    /// The permissions of a user with these own policies, in these groups.
    pub fn resolve(
        &self,
        attached: Vec<PolicyRef>,
        inline: Vec<(String, String)>,
        groups: &[String],
        boundary: Option<PolicyRef>,
    ) -> Permissions {
        let mut admin_via = BTreeSet::new();
        let admin = |p: &PolicyRef| {
            p.arn.as_ref().is_some_and(|arn| {
                is_administrator_access(arn)
                    || self
                        .documents
                        .get(arn)
                        .is_some_and(|d| allows_everything(d))
            })
        };
        for p in attached.iter().filter(|p| admin(p)) {
            admin_via.insert(format!("{} (user)", p.name));
        }
        for (name, doc) in &inline {
            if allows_everything(doc) {
                admin_via.insert(format!("inline {name} (user)"));
            }
        }
        let mut by_group = Vec::new();
        for g in groups {
            let Some(gp) = self.groups.get(g) else {
                by_group.push((g.clone(), Vec::new()));
                continue;
            };
            let whose = format!("group {g}");
            for p in gp.attached.iter().filter(|p| admin(p)) {
                admin_via.insert(format!("{} ({whose})", p.name));
            }
            for (name, doc) in &gp.inline {
                if allows_everything(doc) {
                    admin_via.insert(format!("inline {name} ({whose})"));
                }
            }
            let mut all: Vec<PolicyRef> = gp.attached.clone();
            all.extend(gp.inline.iter().map(|(n, _)| PolicyRef {
                name: n.clone(),
                arn: None,
            }));
            all.sort();
            by_group.push((g.clone(), all));
        }
        let mut attached = attached;
        attached.sort();
        let mut inline: Vec<String> = inline.into_iter().map(|(n, _)| n).collect();
        inline.sort();
        Permissions {
            attached,
            inline,
            groups: by_group,
            boundary,
            is_admin: !admin_via.is_empty(),
            admin_via: admin_via.into_iter().collect(),
        }
    }
}

fn policy_ref(name: Option<&str>, arn: Option<&str>) -> PolicyRef {
    PolicyRef {
        name: name.unwrap_or_default().to_string(),
        arn: arn.map(str::to_string),
    }
}

/// A user's own managed policies, inline policies (with documents) and boundary (per-user calls).
/// `known_boundary`: the boundary GetUser already answered (an incremental refresh), which saves
/// asking again.
pub async fn user_policies(
    iam: &Client,
    user: &str,
    known_boundary: Option<Option<PolicyRef>>,
) -> Result<(Vec<PolicyRef>, Vec<(String, String)>, Option<PolicyRef>), CollectError> {
    let attached: Vec<PolicyRef> = iam
        .list_attached_user_policies()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListAttachedUserPolicies", e))?
        .iter()
        .map(|p| policy_ref(p.policy_name(), p.policy_arn()))
        .collect();
    let names: Vec<String> = iam
        .list_user_policies()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListUserPolicies", e))?;
    let mut inline = Vec::with_capacity(names.len());
    for name in names {
        match iam
            .get_user_policy()
            .user_name(user)
            .policy_name(&name)
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("iam:GetUserPolicy", e))
        {
            Ok(out) => inline.push((name, out.policy_document().to_string())),
            // The policy was deleted since ListUserPolicies: it no longer reaches the user. (Only
            // the user-level calls' NoSuchEntity means the user itself is gone.)
            Err(e) if e.is_no_such_entity() => continue,
            Err(e) => return Err(e),
        }
    }
    let boundary = match known_boundary {
        Some(b) => b,
        None => iam
            .get_user()
            .user_name(user)
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("iam:GetUser", e))?
            .user()
            .and_then(boundary_of),
    };
    Ok((attached, inline, boundary))
}

/// The user's permissions boundary, as GetUser answers it (ListUsers does not).
pub fn boundary_of(user: &aws_sdk_iam::types::User) -> Option<PolicyRef> {
    user.permissions_boundary()
        .and_then(|b| b.permissions_boundary_arn())
        .map(|arn| PolicyRef {
            name: arn.rsplit('/').next().unwrap_or(arn).to_string(),
            arn: Some(arn.to_string()),
        })
}

/// One group's policies (per-user strategy; called once per group per sync).
async fn group_policies(iam: &Client, group: &str) -> Result<GroupPolicies, CollectError> {
    let attached: Vec<PolicyRef> = iam
        .list_attached_group_policies()
        .group_name(group)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListAttachedGroupPolicies", e))?
        .iter()
        .map(|p| policy_ref(p.policy_name(), p.policy_arn()))
        .collect();
    let names: Vec<String> = iam
        .list_group_policies()
        .group_name(group)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListGroupPolicies", e))?;
    let mut inline = Vec::with_capacity(names.len());
    for name in names {
        match iam
            .get_group_policy()
            .group_name(group)
            .policy_name(&name)
            .send()
            .await
            .map_err(|e| CollectError::from_sdk("iam:GetGroupPolicy", e))
        {
            Ok(out) => inline.push((name, out.policy_document().to_string())),
            Err(e) if e.is_no_such_entity() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(GroupPolicies { attached, inline })
}

/// The default version's document of a customer-managed policy (once per policy per sync).
async fn policy_document(iam: &Client, arn: &str) -> Result<String, CollectError> {
    let policy = iam
        .get_policy()
        .policy_arn(arn)
        .send()
        .await
        .map_err(|e| CollectError::from_sdk("iam:GetPolicy", e))?;
    let version = policy
        .policy()
        .and_then(|p| p.default_version_id())
        .unwrap_or("v1")
        .to_string();
    let out = iam
        .get_policy_version()
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
        .map_err(|e| CollectError::from_sdk("iam:GetPolicyVersion", e))?;
    Ok(out
        .policy_version()
        .and_then(|v| v.document())
        .unwrap_or_default()
        .to_string())
}

/// Per-user strategy: fetches each group's policies and each customer-managed policy's document
/// once, for the groups and policies these users reach.
pub async fn fetch_shared(
    iam: &Client,
    groups: BTreeSet<String>,
    user_policy_arns: BTreeSet<String>,
    concurrency: usize,
) -> Result<AccountPolicies, CollectError> {
    let fetched: Vec<(String, GroupPolicies)> = futures::stream::iter(groups)
        .map(|g| async move { group_policies(iam, &g).await.map(|p| (g, p)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut arns = user_policy_arns;
    for (_, gp) in &fetched {
        arns.extend(gp.attached.iter().filter_map(|p| p.arn.clone()));
    }
    let customer: Vec<String> = arns.into_iter().filter(|a| !is_aws_managed(a)).collect();
    let documents: Vec<(String, String)> = futures::stream::iter(customer)
        .map(|arn| async move { policy_document(iam, &arn).await.map(|d| (arn, d)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(AccountPolicies {
        groups: fetched.into_iter().collect(),
        documents: documents.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn administrator_access_in_any_partition() {
        assert!(is_administrator_access(
            "arn:aws:iam::aws:policy/AdministratorAccess"
        ));
        assert!(is_administrator_access(
            "arn:aws-us-gov:iam::aws:policy/AdministratorAccess"
        ));
        assert!(!is_administrator_access(
            "arn:aws:iam::123456789012:policy/AdministratorAccess"
        ));
        assert!(!is_administrator_access(
            "arn:aws:iam::aws:policy/ReadOnlyAccess"
        ));
    }

    #[test]
    fn documents_that_allow_everything() {
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
        assert!(allows_everything(enc), "URL-encoded, as IAM returns it");
        assert!(allows_everything(
            r#"{"Statement":{"Effect":"Allow","Action":["*"],"Resource":["*"]}}"#
        ));
        assert!(!allows_everything(
            r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#
        ));
        assert!(!allows_everything(
            r#"{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#
        ));
        assert!(!allows_everything("not json"));
    }

    #[test]
    fn admin_through_a_group_is_named() {
        let mut shared = AccountPolicies::default();
        shared.groups.insert(
            "ops".into(),
            GroupPolicies {
                attached: vec![PolicyRef {
                    name: "AdministratorAccess".into(),
                    arn: Some("arn:aws:iam::aws:policy/AdministratorAccess".into()),
                }],
                inline: vec![],
            },
        );
        let p = shared.resolve(vec![], vec![], &["ops".into(), "gone".into()], None);
        assert!(p.is_admin);
        assert_eq!(p.admin_via, ["AdministratorAccess (group ops)"]);
        assert_eq!(p.groups[1], ("gone".to_string(), vec![]));
        let plain = shared.resolve(
            vec![],
            vec![("x".into(), r#"{"Statement":[]}"#.into())],
            &[],
            None,
        );
        assert!(!plain.is_admin);
        assert_eq!(plain.inline, ["x"]);
    }
}

//! Collecting named users of one account, for an incremental refresh: GetUser (which also answers
//! tags and the permissions boundary), then the per-user calls, then permissions and credentials
//! as a sync would. Groups and managed policies named by events resolve to their member users.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_iam::Client;
use futures::{StreamExt, TryStreamExt};

use super::enrich::enrich_user_with;
use super::events::Target;
use super::extras::Extras;
use super::permissions::{PolicyRef, boundary_of};
use super::{CollectError, IamUser, Tag};

/// What a refresh of some names found.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// Users IAM knows, under the path prefix.
    pub users: Vec<IamUser>,
    /// Names IAM answered NoSuchEntity for: confirmed deleted (or renamed away).
    pub gone: Vec<String>,
    /// Names outside the configured path prefix (not collected).
    pub outside_prefix: Vec<String>,
}

/// The user names `targets` stand for: users as named, groups' current members, and the users a
/// managed policy reaches directly or through its groups. A group or policy that no longer
/// exists stands for nobody (its former members were named by their own events).
pub async fn resolve_targets(
    iam: &Client,
    targets: &BTreeSet<Target>,
) -> Result<BTreeSet<String>, CollectError> {
    let mut names = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for t in targets {
        match t {
            Target::User(n) => {
                names.insert(n.clone());
            }
            Target::Group(g) => {
                groups.insert(g.clone());
            }
            Target::Policy(arn) => {
                let mut marker = None;
                loop {
                    let out = match iam
                        .list_entities_for_policy()
                        .policy_arn(arn)
                        .set_marker(marker.clone())
                        .send()
                        .await
                        .map_err(|e| CollectError::from_sdk("iam:ListEntitiesForPolicy", e))
                    {
                        Ok(o) => o,
                        Err(e) if e.is_no_such_entity() => break,
                        Err(e) => return Err(e),
                    };
                    names.extend(
                        out.policy_users()
                            .iter()
                            .filter_map(|u| u.user_name().map(str::to_string)),
                    );
                    groups.extend(
                        out.policy_groups()
                            .iter()
                            .filter_map(|g| g.group_name().map(str::to_string)),
                    );
                    match out.marker().filter(|_| out.is_truncated()) {
                        Some(m) => marker = Some(m.to_string()),
                        None => break,
                    }
                }
            }
        }
    }
    for g in groups {
        let members: Result<Vec<_>, _> = iam
            .get_group()
            .group_name(&g)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await;
        match members.map_err(|e| CollectError::from_sdk("iam:GetGroup", e)) {
            Ok(members) => names.extend(members.iter().map(|u| u.user_name().to_string())),
            Err(e) if e.is_no_such_entity() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(names)
}

/// A user read afresh, with the permissions boundary GetUser answered.
type Found = (IamUser, Option<PolicyRef>);

/// Reads the named users afresh. Any failed call fails the whole refresh (never a false "no"),
/// except NoSuchEntity, which is IAM confirming the user is gone.
pub async fn refresh_users(
    extras: &Extras<'_>,
    names: &BTreeSet<String>,
    path_prefix: &str,
) -> Result<Refreshed, CollectError> {
    let iam = extras.iam;
    let read: Vec<(String, Option<Found>)> = futures::stream::iter(names.iter().cloned())
        .map(|name| async move {
            let got = iam
                .get_user()
                .user_name(&name)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk("iam:GetUser", e));
            let user = match got {
                Ok(out) => match out.user {
                    Some(u) => u,
                    None => return Ok((name, None)),
                },
                Err(e) if e.is_no_such_entity() => return Ok((name, None)),
                Err(e) => return Err(e),
            };
            let boundary = boundary_of(&user);
            let tags: Vec<Tag> = user
                .tags()
                .iter()
                .map(|t| Tag {
                    key: t.key().to_string(),
                    value: t.value().to_string(),
                })
                .collect();
            let enriched = enrich_user_with(iam, user, Some(tags)).await?;
            Ok((name, enriched.map(|u| (u, boundary))))
        })
        .buffer_unordered(extras.concurrency.max(1))
        .try_collect()
        .await?;
    let mut out = Refreshed::default();
    let mut found = Vec::new();
    let mut boundaries: HashMap<String, Option<PolicyRef>> = HashMap::new();
    for (name, user) in read {
        match user {
            None => out.gone.push(name),
            Some((u, _)) if !u.path.starts_with(path_prefix) => out.outside_prefix.push(name),
            Some((u, boundary)) => {
                boundaries.insert(u.arn.clone(), boundary);
                found.push(u);
            }
        }
    }
    let extras = Extras {
        known_boundaries: Some(&boundaries),
        root_user: false,
        ..*extras
    };
    let (users, _vanished, _root) = extras.complete(found, None).await?;
    // A user deleted between GetUser and the last call is gone too: the next event or sync
    // confirms it; here it is simply not written.
    out.users = users;
    out.gone.sort();
    out.outside_prefix.sort();
    Ok(out)
}

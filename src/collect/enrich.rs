//! Per-user enrichment: access keys (and their last use), MFA devices, login profile, tags, groups.
//! One small function per IAM call; each returns a [`CollectError`] that fails the account, except
//! for the NoSuchEntity answers that carry meaning (see [`enrich_user`]).

use aws_sdk_iam::Client;
use aws_sdk_iam::types::User;
use futures::{StreamExt, TryStreamExt};

use super::{AccessKey, CollectError, Group, IamUser, KeyLastUsed, MfaDevice, Tag, millis};

/// Enriches users with at most `concurrency` users in flight. Any failed call fails the whole set:
/// a partial answer must not be mistaken for "no keys" or "no MFA".
pub async fn enrich_all(
    iam: &Client,
    users: Vec<User>,
    concurrency: usize,
) -> Result<(Vec<IamUser>, usize), CollectError> {
    let results: Vec<Option<IamUser>> = futures::stream::iter(users)
        .map(|u| enrich_user(iam, u))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let total = results.len();
    let mut users: Vec<IamUser> = results.into_iter().flatten().collect();
    let vanished = total - users.len();
    users.sort_by(|a, b| a.arn.cmp(&b.arn));
    Ok((users, vanished))
}

/// `Ok(None)` when the user was deleted between ListUsers and now. GetLoginProfile goes first:
/// its NoSuchEntity means "no console password", but it is also what a just-deleted user returns;
/// the calls after it then answer NoSuchEntity too, which tells the two apart.
pub async fn enrich_user(iam: &Client, user: User) -> Result<Option<IamUser>, CollectError> {
    enrich_user_with(iam, user, None).await
}

/// [`enrich_user`] with the tags already known (GetUser answers them; ListUsers does not), which
/// saves ListUserTags.
pub async fn enrich_user_with(
    iam: &Client,
    user: User,
    known_tags: Option<Vec<Tag>>,
) -> Result<Option<IamUser>, CollectError> {
    let name = user.user_name().to_string();
    let vanished = |e: CollectError| -> Result<Option<IamUser>, CollectError> {
        if e.is_no_such_entity() {
            tracing::info!(user = %name, "user was deleted during the sync; skipped");
            Ok(None)
        } else {
            Err(e)
        }
    };
    let console = has_login_profile(iam, &name).await?;
    let keys = match list_access_keys(iam, &name).await {
        Ok(k) => k,
        Err(e) => return vanished(e),
    };
    let mut access_keys = Vec::with_capacity(keys.len());
    for (id, status, created) in keys {
        let Some(last_used) = last_used_if_still_there(iam, &id).await? else {
            continue;
        };
        access_keys.push(AccessKey {
            id,
            status,
            created,
            last_used,
        });
    }
    let mfa_devices = match list_mfa_devices(iam, &name).await {
        Ok(m) => m,
        Err(e) => return vanished(e),
    };
    let tags = match known_tags {
        Some(t) => t,
        None => match list_user_tags(iam, &name).await {
            Ok(t) => t,
            Err(e) => return vanished(e),
        },
    };
    let groups = match list_groups_for_user(iam, &name).await {
        Ok(g) => g,
        Err(e) => return vanished(e),
    };
    Ok(Some(assemble(
        &user,
        access_keys,
        mfa_devices,
        console,
        tags,
        groups,
    )))
}

/// Builds the domain value with every list in a stable order, so equal IAM state gives equal records.
pub fn assemble(
    user: &User,
    mut access_keys: Vec<AccessKey>,
    mut mfa_devices: Vec<MfaDevice>,
    console_password: bool,
    mut tags: Vec<Tag>,
    mut groups: Vec<Group>,
) -> IamUser {
    access_keys.sort_by(|a, b| a.id.cmp(&b.id));
    mfa_devices.sort_by(|a, b| a.serial.cmp(&b.serial));
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    IamUser {
        arn: user.arn().to_string(),
        user_id: user.user_id().to_string(),
        user_name: user.user_name().to_string(),
        path: user.path().to_string(),
        create_date: millis(user.create_date()),
        password_last_used: user.password_last_used().map(millis),
        access_keys,
        mfa_devices,
        console_password,
        tags,
        groups,
        permissions: Default::default(),
        credentials: Vec::new(),
    }
}

/// Whether the user has a console password. NoSuchEntity = no password (an answer, not an error).
pub async fn has_login_profile(iam: &Client, user: &str) -> Result<bool, CollectError> {
    match iam.get_login_profile().user_name(user).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = CollectError::from_sdk("iam:GetLoginProfile", e);
            if e.is_no_such_entity() {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// (key id, status, created) for every key, inactive ones included.
pub async fn list_access_keys(
    iam: &Client,
    user: &str,
) -> Result<Vec<(String, String, Option<i64>)>, CollectError> {
    let keys: Vec<_> = iam
        .list_access_keys()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListAccessKeys", e))?;
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let id = k.access_key_id()?.to_string();
            let status = k
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "Unknown".into());
            Some((id, status, k.create_date().map(millis)))
        })
        .collect())
}

/// Like [`get_access_key_last_used`], but `None` when the key was deleted since ListAccessKeys listed
/// it (a rotation): it is not a key of the user any more.
pub async fn last_used_if_still_there(
    iam: &Client,
    key_id: &str,
) -> Result<Option<Option<KeyLastUsed>>, CollectError> {
    match get_access_key_last_used(iam, key_id).await {
        Ok(used) => Ok(Some(used)),
        Err(e) if e.is_no_such_entity() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `None` when the key was never used (IAM answers no date and `N/A` for service and region).
pub async fn get_access_key_last_used(
    iam: &Client,
    key_id: &str,
) -> Result<Option<KeyLastUsed>, CollectError> {
    let out = iam
        .get_access_key_last_used()
        .access_key_id(key_id)
        .send()
        .await
        .map_err(|e| CollectError::from_sdk("iam:GetAccessKeyLastUsed", e))?;
    let Some(used) = out.access_key_last_used() else {
        return Ok(None);
    };
    let Some(date) = used.last_used_date() else {
        return Ok(None);
    };
    let known = |s: &str| (!s.is_empty() && s != "N/A").then(|| s.to_string());
    Ok(Some(KeyLastUsed {
        date: millis(date),
        service: known(used.service_name()),
        region: known(used.region()),
    }))
}

/// Every kind of MFA device (virtual, hardware, FIDO).
pub async fn list_mfa_devices(iam: &Client, user: &str) -> Result<Vec<MfaDevice>, CollectError> {
    let devices: Vec<_> = iam
        .list_mfa_devices()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListMFADevices", e))?;
    Ok(devices
        .into_iter()
        .map(|d| MfaDevice {
            serial: d.serial_number().to_string(),
            enabled: millis(d.enable_date()),
        })
        .collect())
}

pub async fn list_user_tags(iam: &Client, user: &str) -> Result<Vec<Tag>, CollectError> {
    let tags: Vec<_> = iam
        .list_user_tags()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListUserTags", e))?;
    Ok(tags
        .into_iter()
        .map(|t| Tag {
            key: t.key().to_string(),
            value: t.value().to_string(),
        })
        .collect())
}

pub async fn list_groups_for_user(iam: &Client, user: &str) -> Result<Vec<Group>, CollectError> {
    let groups: Vec<_> = iam
        .list_groups_for_user()
        .user_name(user)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| CollectError::from_sdk("iam:ListGroupsForUser", e))?;
    Ok(groups
        .into_iter()
        .map(|g| Group {
            name: g.group_name().to_string(),
            arn: Some(g.arn().to_string()).filter(|a| !a.is_empty()),
        })
        .collect())
}

//! IAM user → OCSF 1.6.0 User Inventory Info (class 5003), per the mapping in
//! `../shared/ocsf/README.md`. Every record must pass the strict schema; tests check that.
//!
//! OCSF corners worth knowing:
//! - nulls fail the schema's type checks, so absent values are omitted, never `null`, except inside
//!   `unmapped`, which is free-form (`password_last_used_time: null` = "never used", as in the mapping table);
//! - `programmatic_credential` only has `uid`, `type`, `last_used_time`: key status and creation time go
//!   to `unmapped.user.access_keys[]`;
//! - `cloud` is only allowed when `metadata.profiles` lists `"cloud"`, and is then required;
//! - every timestamp is epoch milliseconds (the strict schema rejects anything below 1e11).

use serde_json::{Map, Value, json};

use crate::collect::{IamUser, Provenance};

pub const OCSF_VERSION: &str = "1.6.0";
const ACCOUNT_TYPE_ID_AWS: u8 = 10;

/// Fields that change without the user changing: the collection time and "last used" times.
/// They are kept in the record but excluded from the content hash, so a key being used is not an
/// update (otherwise every active key would make its user "updated" on every sync).
/// `[]` marks "every element of this array".
pub const VOLATILE_FIELDS: &[&str] = &[
    "time",
    "metadata.processed_time",
    // iam-inventory's own version: an upgrade is not a change to every user.
    "metadata.product.feature.version",
    // The root record's details only the credential report gives (bulk): not a change when the
    // strategy changes (per-user collection cannot read them).
    "unmapped.user.report",
    "user.ldap_person.last_login_time",
    "user.programmatic_credentials[].last_used_time",
    "unmapped.user.password_last_used_time",
    "unmapped.user.access_keys[].last_used_time",
    "unmapped.user.access_keys[].last_used_service",
    "unmapped.user.access_keys[].last_used_region",
];

/// The OCSF record for one user, collected at `collected_ms` (epoch milliseconds).
pub fn to_ocsf(user: &IamUser, source: &Provenance, collected_ms: i64) -> Value {
    let account = json!({
        "uid": source.account_id,
        "type_id": ACCOUNT_TYPE_ID_AWS,
        "type": "AWS Account",
    });

    let tags: Vec<Value> = user
        .tags
        .iter()
        .map(|t| json!({"name": t.key, "value": t.value}))
        .collect();
    let mut ldap_person = Map::new();
    ldap_person.insert("created_time".into(), json!(user.create_date));
    if let Some(t) = user.password_last_used {
        ldap_person.insert("last_login_time".into(), json!(t));
    }
    ldap_person.insert("tags".into(), Value::Array(tags));

    let mut credentials: Vec<Value> = user
        .access_keys
        .iter()
        .map(|k| {
            let mut c = Map::new();
            c.insert("uid".into(), json!(k.id));
            c.insert("type".into(), json!("AWS Access Key"));
            if let Some(used) = &k.last_used {
                c.insert("last_used_time".into(), json!(used.date));
            }
            Value::Object(c)
        })
        .collect();
    credentials.extend(
        user.credentials
            .iter()
            .map(|c| json!({"uid": c.id, "type": c.kind.ocsf_type()})),
    );

    let p = &user.permissions;
    let groups: Vec<Value> = user
        .groups
        .iter()
        .map(|g| {
            let mut o = Map::new();
            o.insert("name".into(), json!(g.name));
            if let Some(arn) = &g.arn {
                o.insert("uid".into(), json!(arn));
            }
            // OCSF's place for what a group grants: the names of its policies.
            if let Some((_, policies)) = p.groups.iter().find(|(name, _)| *name == g.name) {
                let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
                o.insert("privileges".into(), json!(names));
            }
            Value::Object(o)
        })
        .collect();

    let access_keys: Vec<Value> = user
        .access_keys
        .iter()
        .map(|k| {
            let mut o = Map::new();
            o.insert("uid".into(), json!(k.id));
            o.insert("status".into(), json!(k.status));
            if let Some(c) = k.created {
                o.insert("created_time".into(), json!(c));
            }
            if let Some(used) = &k.last_used {
                o.insert("last_used_time".into(), json!(used.date));
                if let Some(s) = &used.service {
                    o.insert("last_used_service".into(), json!(s));
                }
                if let Some(r) = &used.region {
                    o.insert("last_used_region".into(), json!(r));
                }
            }
            Value::Object(o)
        })
        .collect();

    let mfa_devices: Vec<Value> = user
        .mfa_devices
        .iter()
        .map(|d| json!({"serial": d.serial, "enabled_time": d.enabled}))
        .collect();

    let mut unmapped_user = Map::new();
    unmapped_user.insert("path".into(), json!(user.path));
    unmapped_user.insert("is_console_user".into(), json!(user.console_password));
    if user.password_last_used.is_none() {
        unmapped_user.insert("password_last_used_time".into(), Value::Null);
    }
    unmapped_user.insert("access_keys".into(), Value::Array(access_keys));
    unmapped_user.insert("mfa_devices".into(), Value::Array(mfa_devices));
    let other_credentials: Vec<Value> = user
        .credentials
        .iter()
        .map(|c| {
            let mut o = Map::new();
            o.insert("uid".into(), json!(c.id));
            o.insert("type".into(), json!(c.kind.ocsf_type()));
            o.insert("status".into(), json!(c.status));
            if let Some(t) = c.created {
                o.insert("created_time".into(), json!(t));
            }
            if let Some(svc) = &c.service {
                o.insert("service".into(), json!(svc));
            }
            Value::Object(o)
        })
        .collect();
    unmapped_user.insert("credentials".into(), Value::Array(other_credentials));
    unmapped_user.insert("policies".into(), Value::Array(policies(p)));
    // Always present (null when none): an `update` that merges into an existing document
    // (Elasticsearch's update-only) must clear a boundary that was removed.
    unmapped_user.insert(
        "permissions_boundary".into(),
        p.boundary
            .as_ref()
            .map_or(Value::Null, |b| json!({"name": b.name, "arn": b.arn})),
    );
    unmapped_user.insert("is_admin".into(), json!(p.is_admin));
    unmapped_user.insert("admin_via".into(), json!(p.admin_via));

    let mut source_obj = Map::new();
    source_obj.insert("account_uid".into(), json!(source.account_id));
    if let Some(role) = &source.role_arn {
        source_obj.insert("assumed_role_arn".into(), json!(role));
    }
    source_obj.insert("path_prefix".into(), json!(source.path_prefix));

    let user_obj = json!({
        "uid": user.arn,
        "uid_alt": user.user_id,
        "name": user.user_name,
        "type_id": 1,
        "type": "User",
        "has_mfa": !user.mfa_devices.is_empty(),
        "account": account,
        "ldap_person": Value::Object(ldap_person),
        "programmatic_credentials": credentials,
        "groups": groups,
    });
    record(
        collected_ms,
        account,
        user_obj,
        Value::Object(unmapped_user),
        source_obj,
    )
}

/// The class 5003 envelope around a `user` object (shared by IAM users and the root user).
fn record(
    collected_ms: i64,
    account: Value,
    user: Value,
    unmapped_user: Value,
    source: Map<String, Value>,
) -> Value {
    json!({
        "activity_id": 2,
        "activity_name": "Collect",
        "category_uid": 5,
        "category_name": "Discovery",
        "class_uid": 5003,
        "class_name": "User Inventory Info",
        "type_uid": 500302,
        "type_name": "User Inventory Info: Collect",
        "severity_id": 1,
        "severity": "Informational",
        "time": collected_ms,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": ["cloud"],
            "product": {
                "name": "AWS IAM",
                "vendor_name": "AWS",
                "feature": {"name": "iam-inventory", "version": env!("CARGO_PKG_VERSION")},
            },
        },
        "cloud": {"provider": "AWS", "account": account},
        "user": user,
        "unmapped": {
            "user": unmapped_user,
            "source": Value::Object(source),
        },
    })
}

/// Every policy that reaches the user, one entry each, keyed by a `uid` that says how it reaches
/// them (`user/managed/<arn>`, `user/inline/<name>`, `group/<group>/managed/<arn>`,
/// `group/<group>/inline/<name>`), so a diff names each attach and detach.
fn policies(p: &crate::collect::permissions::Permissions) -> Vec<Value> {
    let entry = |via: &str, policy: &crate::collect::permissions::PolicyRef| {
        let (kind, key) = match &policy.arn {
            Some(arn) => ("managed", arn.as_str()),
            None => ("inline", policy.name.as_str()),
        };
        let mut o = Map::new();
        o.insert("uid".into(), json!(format!("{via}/{kind}/{key}")));
        o.insert("name".into(), json!(policy.name));
        if let Some(arn) = &policy.arn {
            o.insert("arn".into(), json!(arn));
        }
        o.insert("type".into(), json!(kind));
        o.insert("via".into(), json!(via));
        Value::Object(o)
    };
    let mut out: Vec<Value> = p.attached.iter().map(|x| entry("user", x)).collect();
    out.extend(p.inline.iter().map(|name| {
        entry(
            "user",
            &crate::collect::permissions::PolicyRef {
                name: name.clone(),
                arn: None,
            },
        )
    }));
    for (group, list) in &p.groups {
        let via = format!("group/{group}");
        out.extend(list.iter().map(|x| entry(&via, x)));
    }
    out
}

/// The root user of an account as one more record: `user.type_id` 2 Admin, its MFA and access
/// keys. The credential report (bulk) also gives the key slots and the last console sign-in; the
/// per-user strategy's GetAccountSummary only says whether MFA is on and keys are present.
pub fn root_to_ocsf(
    root: &crate::collect::RootUser,
    source: &Provenance,
    collected_ms: i64,
) -> Value {
    let account = json!({
        "uid": source.account_id,
        "type_id": ACCOUNT_TYPE_ID_AWS,
        "type": "AWS Account",
    });
    let mut ldap_person = Map::new();
    if let Some(t) = root.password_last_used {
        ldap_person.insert("last_login_time".into(), json!(t));
    }
    let keys: Vec<Value> = root
        .access_keys
        .iter()
        .map(|k| {
            let mut o = Map::new();
            o.insert("slot".into(), json!(k.slot));
            if let Some(a) = k.active {
                o.insert("active".into(), json!(a));
            }
            o.insert("created_time".into(), json!(k.last_rotated));
            if let Some(u) = k.last_used {
                o.insert("last_used_time".into(), json!(u));
            }
            Value::Object(o)
        })
        .collect();
    let mut user = json!({
        "uid": root.arn,
        "name": "<root_account>",
        "type_id": 2,
        "type": "Admin",
        "has_mfa": root.has_mfa,
        "account": account,
    });
    if !ldap_person.is_empty() {
        user["ldap_person"] = Value::Object(ldap_person);
    }
    let mut source_obj = Map::new();
    source_obj.insert("account_uid".into(), json!(source.account_id));
    if let Some(role) = &source.role_arn {
        source_obj.insert("assumed_role_arn".into(), json!(role));
    }
    let unmapped_user = json!({
        "is_root": true,
        "is_admin": true,
        "is_console_user": true,
        "access_keys_present": root.access_keys_present,
        // Only the credential report tells these (volatile: see VOLATILE_FIELDS).
        "report": {"created_time": root.created, "root_access_keys": keys},
    });
    // No `path`: the root is not under any path prefix, so it is never taken for a user deleted
    // from under the prefix (turning `root_user` off retires it instead).
    record(collected_ms, account, user, unmapped_user, source_obj)
}

/// A copy of the record without [`VOLATILE_FIELDS`]: what the content hash and the diff see.
pub fn strip_volatile(record: &Value) -> Value {
    let mut out = record.clone();
    for path in VOLATILE_FIELDS {
        let segments: Vec<&str> = path.split('.').collect();
        remove_path(&mut out, &segments);
    }
    out
}

fn remove_path(v: &mut Value, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let Value::Object(map) = v else { return };
    if let Some(array_key) = first.strip_suffix("[]") {
        if let Some(Value::Array(items)) = map.get_mut(array_key) {
            for item in items {
                remove_path(item, rest);
            }
        }
    } else if rest.is_empty() {
        map.remove(*first);
    } else if let Some(child) = map.get_mut(*first) {
        remove_path(child, rest);
    }
}

/// What a user's record is built from, hashed: the user, where it came from, and this transform's
/// own source (so any change to the mapping changes every hash, and records are rebuilt once).
/// Equal hashes mean equal records (`to_ocsf` is deterministic), so an unchanged user of a re-sync
/// is recognised without building its record. `time` is not an input: it is not part of the
/// stored record.
pub fn input_hash(user: &crate::collect::IamUser, source: &Provenance) -> String {
    use sha2::{Digest, Sha256};
    static REVISION: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(|| {
        let mut h = Sha256::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(include_str!("ocsf.rs").as_bytes());
        h.finalize().into()
    });
    // Serialized into a reused buffer and hashed at once: feeding the hasher token by token costs
    // more than the serialization.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let digest = BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        // Serializing plain structs cannot fail (no maps with non-string keys).
        let _ = serde_json::to_writer(&mut *buf, &(user, source));
        let mut h = Sha256::new();
        h.update(*REVISION);
        h.update(&buf[..]);
        h.finalize()
    });
    let mut out = String::with_capacity(67);
    out.push_str("in:");
    out.push_str(&hex::encode(digest));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collect::credentials::{Credential, CredentialKind};
    use crate::collect::permissions::{Permissions, PolicyRef};
    use crate::collect::{AccessKey, Group, KeyLastUsed, MfaDevice, RootKey, RootUser, Tag};

    pub(crate) fn sample_user() -> IamUser {
        IamUser {
            arn: "arn:aws:iam::123456789012:user/engineering/alice".into(),
            user_id: "AIDAEXAMPLEALICE0001".into(),
            user_name: "alice".into(),
            path: "/engineering/".into(),
            create_date: 1_600_000_000_000,
            password_last_used: Some(1_700_000_000_000),
            access_keys: vec![
                AccessKey {
                    id: "AKIAALICE1".into(),
                    status: "Active".into(),
                    created: Some(1_600_000_100_000),
                    last_used: Some(KeyLastUsed {
                        date: 1_700_000_500_000,
                        service: Some("s3".into()),
                        region: Some("eu-west-1".into()),
                    }),
                },
                AccessKey {
                    id: "AKIAALICE2".into(),
                    status: "Inactive".into(),
                    created: Some(1_600_000_200_000),
                    last_used: None,
                },
            ],
            mfa_devices: vec![MfaDevice {
                serial: "arn:aws:iam::123456789012:mfa/alice".into(),
                enabled: 1_600_000_300_000,
            }],
            console_password: true,
            tags: vec![Tag {
                key: "team".into(),
                value: "платформа ✓".into(),
            }],
            groups: vec![Group {
                name: "admins".into(),
                arn: Some("arn:aws:iam::123456789012:group/admins".into()),
            }],
            permissions: Permissions {
                attached: vec![PolicyRef {
                    name: "ReadOnlyAccess".into(),
                    arn: Some("arn:aws:iam::aws:policy/ReadOnlyAccess".into()),
                }],
                inline: vec!["deploy".into()],
                groups: vec![(
                    "admins".into(),
                    vec![PolicyRef {
                        name: "AdministratorAccess".into(),
                        arn: Some("arn:aws:iam::aws:policy/AdministratorAccess".into()),
                    }],
                )],
                boundary: Some(PolicyRef {
                    name: "engineers-boundary".into(),
                    arn: Some("arn:aws:iam::123456789012:policy/engineers-boundary".into()),
                }),
                is_admin: true,
                admin_via: vec!["AdministratorAccess (group admins)".into()],
            },
            credentials: vec![Credential {
                kind: CredentialKind::SshKeys,
                id: "APKAALICE1".into(),
                status: "Active".into(),
                created: Some(1_600_000_400_000),
                service: None,
            }],
        }
    }

    pub(crate) fn source() -> Provenance {
        Provenance {
            account_id: "123456789012".into(),
            role_arn: None,
            path_prefix: "/".into(),
        }
    }

    #[test]
    fn golden_alice() {
        let got = to_ocsf(&sample_user(), &source(), 1_750_000_000_000);
        let want: Value =
            serde_json::from_str(include_str!("../../tests/golden/alice.json")).unwrap();
        assert_eq!(got, want, "{}", serde_json::to_string_pretty(&got).unwrap());
    }

    #[test]
    fn the_root_record_is_an_admin_with_its_mfa_and_keys() {
        let root = RootUser {
            arn: "arn:aws:iam::123456789012:root".into(),
            has_mfa: false,
            access_keys_present: true,
            access_keys: vec![RootKey {
                slot: 1,
                active: Some(true),
                last_rotated: 1_600_000_000_000,
                last_used: None,
            }],
            password_last_used: Some(1_700_000_000_000),
            created: Some(1_500_000_000_000),
        };
        let r = root_to_ocsf(&root, &source(), 1_750_000_000_000);
        assert_eq!(r["user"]["type_id"], 2);
        assert_eq!(r["user"]["type"], "Admin");
        assert_eq!(r["user"]["has_mfa"], false);
        assert_eq!(r["unmapped"]["user"]["access_keys_present"], true);
        assert!(r["unmapped"]["user"].get("path").is_none());
        let schema: Value = serde_json::from_str(include_str!(
            "../../tests/ocsf/user_inventory_info_5003_strict.schema.json"
        ))
        .unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = v.iter_errors(&r).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let alice = to_ocsf(&sample_user(), &source(), 1_750_000_000_000);
        let errors: Vec<String> = v.iter_errors(&alice).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_user_without_anything_says_false_and_empty_explicitly() {
        let mut u = sample_user();
        u.access_keys.clear();
        u.mfa_devices.clear();
        u.console_password = false;
        u.password_last_used = None;
        u.groups.clear();
        u.tags.clear();
        u.credentials.clear();
        u.permissions = Default::default();
        let r = to_ocsf(&u, &source(), 1_750_000_000_000);
        assert_eq!(r["unmapped"]["user"]["is_admin"], json!(false));
        assert_eq!(r["unmapped"]["user"]["policies"], json!([]));
        assert_eq!(r["user"]["has_mfa"], json!(false));
        assert_eq!(r["unmapped"]["user"]["is_console_user"], json!(false));
        assert_eq!(r["user"]["programmatic_credentials"], json!([]));
        assert_eq!(
            r["unmapped"]["user"]["password_last_used_time"],
            Value::Null
        );
        assert!(r["user"]["ldap_person"].get("last_login_time").is_none());
    }

    #[test]
    fn strip_volatile_removes_times_but_keeps_identity() {
        let r = to_ocsf(&sample_user(), &source(), 1_750_000_000_000);
        let s = strip_volatile(&r);
        assert!(s.get("time").is_none());
        assert!(s["user"]["ldap_person"].get("last_login_time").is_none());
        assert!(
            s["user"]["programmatic_credentials"][0]
                .get("last_used_time")
                .is_none()
        );
        assert_eq!(
            s["user"]["programmatic_credentials"][0]["uid"],
            "AKIAALICE1"
        );
        assert!(
            s["unmapped"]["user"]["access_keys"][0]
                .get("last_used_service")
                .is_none()
        );
        assert_eq!(s["unmapped"]["user"]["access_keys"][0]["status"], "Active");
    }
}

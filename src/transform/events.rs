//! Change-log rows → OCSF 1.6.0 class 3001 Account Change events (pure: no IO, no clock).
//!
//! One change row can be several events: an update where a user lost MFA *and* got a new key is an
//! MFA Factor Disable and an Access Key Created. The activities, and the severity each one gets, are
//! the README's "Events" table:
//!
//! | change | activity | severity |
//! | --- | --- | --- |
//! | user appeared | 1 Create | Informational |
//! | user deleted from IAM | 6 Delete | Low |
//! | `user.has_mfa` false → true / true → false | 10 MFA Factor Enable / 11 MFA Factor Disable | Informational / Medium |
//! | an access key created (on a console user) | 99 Access Key Created | Low (Medium) |
//! | an access key deleted / deactivated / activated | 99 Access Key Deleted / Deactivated / Activated | Informational / Informational / Low |
//! | console password added / removed | 99 Console Access Enabled / Disabled | Low / Informational |
//! | added to / removed from a group | 99 Group Membership Added / Removed | Low / Informational |
//! | an MFA device added / removed (MFA stays on) | 99 MFA Device Added / Removed | Informational |
//! | tags, path, anything else | 99 Tags Changed / Path Changed / User Changed | Informational |
//! | left the collected scope (not an IAM change) | 99 Retired From Inventory | Informational |
//!
//! `metadata.uid` is a hash of the user, the change's time, the activity and the paths it covers: the
//! same on every re-send, so a receiver can drop duplicates.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::change::{ChangeKind, FieldChange};
use crate::collect::events::Actor;

/// One change-log row, as the event builder needs it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub at: i64,
    pub account_id: &'a str,
    pub uid: &'a str,
    pub user_name: &'a str,
    pub kind: ChangeKind,
    pub fields: &'a [FieldChange],
    /// The user's record at that change: the new one, or for a deletion the last known one
    /// (`None` for change rows written before records were kept).
    pub record: Option<&'a Value>,
    /// Who made the change, when CloudTrail told (an incremental refresh).
    pub actor: Option<&'a Actor>,
}

/// What one event is about.
struct Activity {
    id: u8,
    name: String,
    severity: u8,
    /// The part of the message after the user's name.
    what: String,
    fields: Vec<FieldChange>,
    /// Attach/Detach Policy: the policy (`name`, `uid` = its ARN when managed).
    policy: Option<Value>,
}

const SEVERITIES: [&str; 7] = [
    "Unknown",
    "Informational",
    "Low",
    "Medium",
    "High",
    "Critical",
    "Fatal",
];

/// The events of one change row, in a stable order.
pub fn events(c: &Change<'_>) -> Vec<Value> {
    activities(c).into_iter().map(|a| event(c, a)).collect()
}

fn activities(c: &Change<'_>) -> Vec<Activity> {
    let plain = |id: u8, name: &str, severity: u8, what: String| Activity {
        id,
        name: name.to_string(),
        severity,
        what,
        fields: c.fields.to_vec(),
        policy: None,
    };
    match c.kind {
        ChangeKind::Created => vec![plain(
            1,
            "Create",
            1,
            format!("was created in account {}", c.account_id),
        )],
        ChangeKind::Deleted => vec![plain(
            6,
            "Delete",
            2,
            format!("was deleted from account {}", c.account_id),
        )],
        ChangeKind::Retired => vec![plain(
            99,
            "Retired From Inventory",
            1,
            "left the collected scope (account no longer configured or outside the path prefix); not deleted from IAM".into(),
        )],
        ChangeKind::Updated => update_activities(c),
    }
}

/// The subject of a path: which topic it belongs to, and for keyed lists the element's id.
fn topic(path: &str) -> (&'static str, Option<&str>) {
    let keyed = |prefix: &str| -> Option<&str> {
        let rest = path.strip_prefix(prefix)?.strip_prefix('[')?;
        rest.split(']').next()
    };
    if path == "user.has_mfa" {
        return ("mfa", None);
    }
    if let Some(id) = keyed("user.programmatic_credentials")
        .or(keyed("unmapped.user.access_keys"))
        .or(keyed("unmapped.user.credentials"))
    {
        return ("key", Some(id));
    }
    if let Some(id) = keyed("unmapped.user.policies") {
        return ("policy", Some(id));
    }
    if path == "unmapped.user.is_admin" || path.starts_with("unmapped.user.admin_via") {
        return ("admin", None);
    }
    if path.starts_with("unmapped.user.permissions_boundary") {
        return ("boundary", None);
    }
    // A group's privileges are its policies: their changes are Attach/Detach Policy events.
    if path.starts_with("user.groups[") && path.ends_with("].privileges") {
        return ("policy", None);
    }
    if path.starts_with("unmapped.user.mfa_devices") {
        return ("mfa_device", keyed("unmapped.user.mfa_devices"));
    }
    if path == "unmapped.user.is_console_user" {
        return ("console", None);
    }
    if let Some(g) = keyed("user.groups") {
        return ("group", Some(g));
    }
    if path.starts_with("user.ldap_person.tags") {
        return ("tags", None);
    }
    if path == "unmapped.user.path" {
        return ("path", None);
    }
    ("other", None)
}

/// A topic and, for keyed lists (keys, groups, devices), the element.
type Subject = (&'static str, Option<String>);

fn update_activities(c: &Change<'_>) -> Vec<Activity> {
    // Group the changed fields by topic (and element), keeping first-seen order.
    let mut groups: Vec<(Subject, Vec<FieldChange>)> = Vec::new();
    let mfa_changed = c.fields.iter().any(|f| f.path == "user.has_mfa");
    for f in c.fields {
        let (t, id) = topic(&f.path);
        // Device changes that come with an MFA on/off belong to that event.
        let key = match t {
            "mfa_device" if mfa_changed => ("mfa", None),
            "mfa_device" => ("mfa_device", id.map(str::to_string)),
            // Privileges of a group: told by the policy entries of the same change.
            "policy" if id.is_none() => continue,
            _ => (t, id.map(str::to_string)),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(f.clone()),
            None => groups.push((key, vec![f.clone()])),
        }
    }
    let console_user = c
        .record
        .and_then(|r| r.pointer("/unmapped/user/is_console_user"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    groups
        .into_iter()
        .map(|((t, id), fields)| {
            let id = id.unwrap_or_default();
            let mut policy = None;
            let whole = |prefix: &str| {
                fields
                    .iter()
                    .find(|f| f.path.starts_with(prefix) && f.path.ends_with(']'))
            };
            let (aid, name, severity, what): (u8, String, u8, String) = match t {
                "mfa" => {
                    let on = fields
                        .iter()
                        .find(|f| f.path == "user.has_mfa")
                        .is_some_and(|f| f.new == Value::Bool(true));
                    if on {
                        (10, "MFA Factor Enable".into(), 1, "enabled MFA".into())
                    } else {
                        (
                            11,
                            "MFA Factor Disable".into(),
                            3,
                            "lost MFA (no MFA device left)".into(),
                        )
                    }
                }
                "key" => {
                    let element = whole("user.programmatic_credentials")
                        .or_else(|| whole("unmapped.user.access_keys"))
                        .or_else(|| whole("unmapped.user.credentials"));
                    let status = fields
                        .iter()
                        .find(|f| f.path.ends_with("].status"))
                        .and_then(|f| f.new.as_str());
                    // "Access Key", "SSH Public Key", "X.509 Signing Certificate"…
                    let typed = |e: &FieldChange| -> Option<String> {
                        e.new
                            .get("type")
                            .or_else(|| e.old.get("type"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    let kind = element
                        .and_then(typed)
                        .or_else(|| {
                            fields
                                .iter()
                                .find(|f| f.path.starts_with("unmapped.user.credentials"))
                                .map(|_| "Credential".to_string())
                        })
                        .unwrap_or_else(|| "AWS Access Key".to_string());
                    let kind = kind.strip_prefix("AWS ").unwrap_or(&kind).to_string();
                    let noun = kind.to_lowercase();
                    let key = kind == "Access Key";
                    match (element, status) {
                        (Some(e), _) if e.old.is_null() => {
                            let sev = if key && console_user { 3 } else { 2 };
                            let who = if key && console_user {
                                " (a console user)"
                            } else {
                                ""
                            };
                            (
                                99,
                                format!("{kind} Created"),
                                sev,
                                format!("got a new {noun} {id}{who}"),
                            )
                        }
                        (Some(e), _) if e.new.is_null() => (
                            99,
                            format!("{kind} Deleted"),
                            1,
                            format!("had {noun} {id} deleted"),
                        ),
                        (_, Some("Inactive")) => (
                            99,
                            format!("{kind} Deactivated"),
                            1,
                            format!("had {noun} {id} deactivated"),
                        ),
                        (_, Some("Active")) => (
                            99,
                            format!("{kind} Activated"),
                            2,
                            format!("had {noun} {id} activated again"),
                        ),
                        _ => (
                            99,
                            format!("{kind} Changed"),
                            1,
                            format!("had {noun} {id} changed"),
                        ),
                    }
                }
                "policy" => {
                    let element = whole("unmapped.user.policies");
                    let (attached, entry) = match element {
                        Some(e) if e.old.is_null() => (true, e.new.clone()),
                        Some(e) => (false, e.old.clone()),
                        None => (true, Value::Null),
                    };
                    let name = entry["name"].as_str().unwrap_or("a policy").to_string();
                    let via = match entry["via"].as_str() {
                        Some(v) if v.starts_with("group/") => {
                            format!(" through group {}", &v["group/".len()..])
                        }
                        _ => String::new(),
                    };
                    let mut p = Map::new();
                    p.insert("name".into(), json!(name));
                    if let Some(arn) = entry["arn"].as_str() {
                        p.insert("uid".into(), json!(arn));
                    }
                    policy = Some(Value::Object(p));
                    let admin = entry["arn"]
                        .as_str()
                        .is_some_and(crate::collect::permissions::is_administrator_access);
                    if attached {
                        let sev = if admin { 4 } else { 2 };
                        (
                            7,
                            "Attach Policy".into(),
                            sev,
                            format!("got policy {name}{via}"),
                        )
                    } else {
                        (
                            8,
                            "Detach Policy".into(),
                            1,
                            format!("lost policy {name}{via}"),
                        )
                    }
                }
                "admin" => {
                    let now = fields
                        .iter()
                        .find(|f| f.path == "unmapped.user.is_admin")
                        .map(|f| f.new == Value::Bool(true));
                    match now {
                        Some(true) => (
                            99,
                            "Administrator Access Granted".into(),
                            4,
                            "became an administrator".into(),
                        ),
                        Some(false) => (
                            99,
                            "Administrator Access Removed".into(),
                            1,
                            "is no longer an administrator".into(),
                        ),
                        None => (
                            99,
                            "Administrator Access Changed".into(),
                            2,
                            "is an administrator another way".into(),
                        ),
                    }
                }
                "boundary" => (
                    99,
                    "Permissions Boundary Changed".into(),
                    2,
                    "had its permissions boundary changed".into(),
                ),
                "console" => {
                    let on = fields.iter().any(|f| f.new == Value::Bool(true));
                    if on {
                        (
                            99,
                            "Console Access Enabled".into(),
                            2,
                            "got a console password".into(),
                        )
                    } else {
                        (
                            99,
                            "Console Access Disabled".into(),
                            1,
                            "lost console access".into(),
                        )
                    }
                }
                "group" => {
                    let element = whole("user.groups");
                    match element {
                        Some(e) if e.old.is_null() => (
                            99,
                            "Group Membership Added".into(),
                            2,
                            format!("was added to group {id}"),
                        ),
                        Some(e) if e.new.is_null() => (
                            99,
                            "Group Membership Removed".into(),
                            1,
                            format!("was removed from group {id}"),
                        ),
                        _ => (
                            99,
                            "Group Membership Changed".into(),
                            1,
                            format!("group {id} changed"),
                        ),
                    }
                }
                "mfa_device" => {
                    let element = whole("unmapped.user.mfa_devices");
                    match element {
                        Some(e) if e.old.is_null() => (
                            99,
                            "MFA Device Added".into(),
                            1,
                            format!("added MFA device {id}"),
                        ),
                        Some(e) if e.new.is_null() => (
                            99,
                            "MFA Device Removed".into(),
                            1,
                            format!("removed MFA device {id} (MFA stays on)"),
                        ),
                        _ => (
                            99,
                            "MFA Device Changed".into(),
                            1,
                            format!("MFA device {id} changed"),
                        ),
                    }
                }
                "tags" => (99, "Tags Changed".into(), 1, "had tags changed".into()),
                "path" => {
                    let new = fields.first().and_then(|f| f.new.as_str()).unwrap_or("?");
                    (99, "Path Changed".into(), 1, format!("moved to path {new}"))
                }
                _ => (99, "User Changed".into(), 1, "changed".into()),
            };
            Activity {
                id: aid,
                name,
                severity,
                what,
                fields,
                policy,
            }
        })
        .collect()
}

/// The `user` object as last known: the record's, or the little the change row itself says.
fn user_of(c: &Change<'_>) -> Value {
    match c.record.and_then(|r| r.get("user")) {
        Some(u) => u.clone(),
        None => json!({
            "uid": c.uid,
            "name": c.user_name,
            "type_id": 1,
            "type": "User",
            "account": {"uid": c.account_id, "type_id": 10, "type": "AWS Account"},
        }),
    }
}

/// The changed `user.*` attributes with their new values (whole top-level attributes, so a list
/// shows what it is now), plus who it is.
fn user_result(c: &Change<'_>, fields: &[FieldChange], user: &Value) -> Value {
    let mut out = Map::new();
    out.insert("uid".into(), json!(c.uid));
    out.insert("name".into(), json!(c.user_name));
    if c.kind == ChangeKind::Updated {
        for f in fields {
            let Some(rest) = f.path.strip_prefix("user.") else {
                continue;
            };
            let attr = rest
                .split(['.', '['])
                .next()
                .unwrap_or_default()
                .to_string();
            if let Some(v) = user.get(&attr) {
                out.insert(attr, v.clone());
            }
        }
    }
    Value::Object(out)
}

/// A stable id for one event of one change.
fn event_uid(c: &Change<'_>, a: &Activity) -> String {
    let mut h = Sha256::new();
    h.update(c.uid.as_bytes());
    h.update(format!("\n{}\n{}\n{}\n{}", c.at, c.kind.as_str(), a.id, a.name).as_bytes());
    for f in &a.fields {
        h.update(b"\n");
        h.update(f.path.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn event(c: &Change<'_>, mut a: Activity) -> Value {
    let policy = a.policy.take();
    let user = user_of(c);
    let product = c
        .record
        .and_then(|r| r.pointer("/metadata/product"))
        .cloned()
        .unwrap_or_else(|| json!({"name": "AWS IAM", "vendor_name": "AWS"}));
    let account = json!({"uid": c.account_id, "type_id": 10, "type": "AWS Account"});
    let changes: Vec<Value> = a
        .fields
        .iter()
        .map(|f| json!({"path": f.path, "old": f.old, "new": f.new}))
        .collect();
    // One scalar field changed: say how (objects and lists are in `unmapped.changes`).
    let scalar = |v: &Value| !v.is_object() && !v.is_array();
    let detail = match a.fields.as_slice() {
        [f] if scalar(&f.old) && scalar(&f.new) => format!(" ({} {} → {})", f.path, f.old, f.new),
        _ => String::new(),
    };
    let mut event = json!({
        "activity_id": a.id,
        "activity_name": a.name,
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "class_uid": 3001,
        "class_name": "Account Change",
        "type_uid": 300100 + u32::from(a.id),
        // The strict schema wants the class caption for 99; the precise name is `activity_name`.
        "type_name": if a.id == 99 {
            "Account Change: Other".to_string()
        } else {
            format!("Account Change: {}", a.name)
        },
        "severity_id": a.severity,
        "severity": SEVERITIES[usize::from(a.severity)],
        "status_id": 1,
        "status": "Success",
        "time": c.at,
        "message": format!("{} {}{detail}", c.user_name, a.what),
        "metadata": {
            "version": "1.6.0",
            "profiles": ["cloud"],
            "product": product,
            "uid": event_uid(c, &a),
        },
        "cloud": {"provider": "AWS", "account": account},
        "user_result": user_result(c, &a.fields, &user),
        "user": user,
        "unmapped": {
            "changes": changes,
            "change_kind": c.kind.as_str(),
        },
    });
    // OCSF 1.6.0 deprecates the single `policy`: the attached or detached one goes in `policies`.
    if let Some(p) = policy {
        event["policies"] = json!([p]);
    }
    if let Some(actor) = c.actor {
        event["actor"] = actor_object(actor);
        // The IAM call CloudTrail recorded (its event id is the request's uid).
        event["api"] = json!({
            "operation": actor.event_name,
            "service": {"name": "iam.amazonaws.com"},
            "request": {"uid": actor.event_id},
        });
        if let Some(m) = event["message"].as_str() {
            event["message"] = json!(format!("{m}, by {}", actor.label()));
        }
        // A burst refreshed once: every IAM call it covered, the credited (latest) one last.
        if !actor.coalesced.is_empty() {
            let mut calls = actor.coalesced.clone();
            calls.push(actor.event_name.clone());
            event["unmapped"]["cloudtrail_events"] = json!(calls);
        }
    }
    event
}

/// OCSF `actor` from CloudTrail's `userIdentity`: `user.uid` = the identity's ARN,
/// `user.credential_uid` = the access key it signed with.
fn actor_object(a: &Actor) -> Value {
    // OCSF user types: 1 User, 2 Admin, 4 Service, 99 Other (CloudTrail's type kept in `type`).
    let (type_id, type_name) = match a.kind.as_deref() {
        Some("IAMUser") => (1, "User".to_string()),
        Some("Root") => (2, "Admin".to_string()),
        Some("AWSService") => (4, "Service".to_string()),
        Some(other) => (99, other.to_string()),
        None => (0, "Unknown".to_string()),
    };
    let mut user = Map::new();
    user.insert("type_id".into(), json!(type_id));
    user.insert("type".into(), json!(type_name));
    if let Some(arn) = a.arn.as_ref().or(a.principal_id.as_ref()) {
        user.insert("uid".into(), json!(arn));
    }
    if let Some(name) = &a.name {
        user.insert("name".into(), json!(name));
    }
    // OCSF 1.6 deprecates `user.credential_uid`: the key is a programmatic credential of the
    // actor, and the credential its session signed with.
    if let Some(key) = &a.access_key_id {
        user.insert(
            "programmatic_credentials".into(),
            json!([{"uid": key, "type": "AWS Access Key"}]),
        );
    }
    if let Some(account) = &a.account_id {
        user.insert(
            "account".into(),
            json!({"uid": account, "type_id": 10, "type": "AWS Account"}),
        );
    }
    let mut actor = Map::new();
    actor.insert("user".into(), Value::Object(user));
    if let Some(key) = &a.access_key_id {
        actor.insert("session".into(), json!({"credential_uid": key}));
    }
    if let Some(by) = &a.invoked_by {
        actor.insert("app_name".into(), json!(by));
    }
    Value::Object(actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change<'a>(
        kind: ChangeKind,
        fields: &'a [FieldChange],
        record: Option<&'a Value>,
    ) -> Change<'a> {
        Change {
            at: 1_764_700_000_123,
            account_id: "123456789012",
            uid: "arn:aws:iam::123456789012:user/engineering/bob",
            user_name: "bob",
            kind,
            fields,
            record,
            actor: None,
        }
    }

    fn fc(path: &str, old: Value, new: Value) -> FieldChange {
        FieldChange {
            path: path.into(),
            old,
            new,
        }
    }

    #[test]
    fn one_update_can_be_several_events() {
        let fields = [
            fc("user.has_mfa", json!(true), json!(false)),
            fc(
                "unmapped.user.mfa_devices[arn:aws:iam::123456789012:mfa/bob]",
                json!({"serial": "x"}),
                Value::Null,
            ),
            fc(
                "user.programmatic_credentials[AKIANEW]",
                Value::Null,
                json!({"uid": "AKIANEW"}),
            ),
            fc(
                "unmapped.user.access_keys[AKIANEW]",
                Value::Null,
                json!({"uid": "AKIANEW"}),
            ),
            fc(
                "unmapped.user.access_keys[AKIAOLD].status",
                json!("Active"),
                json!("Inactive"),
            ),
        ];
        let record = json!({"user": {"uid": "u", "name": "bob", "has_mfa": false}, "unmapped": {"user": {"is_console_user": true}}});
        let ev = events(&change(ChangeKind::Updated, &fields, Some(&record)));
        let names: Vec<&str> = ev
            .iter()
            .map(|e| e["activity_name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "MFA Factor Disable",
                "Access Key Created",
                "Access Key Deactivated"
            ]
        );
        assert_eq!(ev[0]["activity_id"], 11);
        assert_eq!(ev[0]["severity_id"], 3);
        assert_eq!(ev[0]["unmapped"]["changes"].as_array().unwrap().len(), 2);
        assert_eq!(ev[0]["user_result"]["has_mfa"], false);
        assert_eq!(ev[1]["severity"], "Medium", "a new key on a console user");
        assert_eq!(ev[1]["type_uid"], 300199);
        // Stable ids, distinct per event.
        let again = events(&change(ChangeKind::Updated, &fields, Some(&record)));
        assert_eq!(ev[1]["metadata"]["uid"], again[1]["metadata"]["uid"]);
        assert_ne!(ev[0]["metadata"]["uid"], ev[1]["metadata"]["uid"]);
    }

    fn assert_strict(event: &Value) {
        let schema: Value = serde_json::from_str(include_str!(
            "../../tests/ocsf/account_change_3001_strict.schema.json"
        ))
        .unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = v.iter_errors(event).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{event}");
    }

    #[test]
    fn every_activity_passes_the_strict_3001_schema() {
        let record: Value =
            serde_json::from_str(include_str!("../../tests/golden/alice.json")).unwrap();
        let cases: Vec<(ChangeKind, Vec<FieldChange>)> = vec![
            (ChangeKind::Created, vec![]),
            (ChangeKind::Deleted, vec![]),
            (ChangeKind::Retired, vec![]),
            (
                ChangeKind::Updated,
                vec![fc("user.has_mfa", json!(false), json!(true))],
            ),
            (
                ChangeKind::Updated,
                vec![fc(
                    "user.programmatic_credentials[AKIAX]",
                    json!({"uid": "AKIAX"}),
                    Value::Null,
                )],
            ),
            (
                ChangeKind::Updated,
                vec![fc(
                    "unmapped.user.access_keys[AKIAX].status",
                    json!("Inactive"),
                    json!("Active"),
                )],
            ),
            (
                ChangeKind::Updated,
                vec![fc(
                    "unmapped.user.is_console_user",
                    json!(false),
                    json!(true),
                )],
            ),
            (
                ChangeKind::Updated,
                vec![fc(
                    "user.groups[admins]",
                    Value::Null,
                    json!({"name": "admins"}),
                )],
            ),
            (
                ChangeKind::Updated,
                vec![fc(
                    "user.ldap_person.tags[team]",
                    json!({"name": "team", "value": "a"}),
                    Value::Null,
                )],
            ),
            (
                ChangeKind::Updated,
                vec![fc("unmapped.user.path", json!("/a/"), json!("/b/"))],
            ),
            (
                ChangeKind::Updated,
                vec![fc(
                    "unmapped.user.mfa_devices[GAHT1]",
                    Value::Null,
                    json!({"serial": "GAHT1"}),
                )],
            ),
            (
                ChangeKind::Updated,
                vec![fc("user.uid_alt", json!("A"), json!("B"))],
            ),
        ];
        let mut names = Vec::new();
        for (kind, fields) in &cases {
            for with_record in [true, false] {
                let rec = with_record.then_some(&record);
                for e in events(&change(*kind, fields, rec)) {
                    assert_strict(&e);
                    names.push(e["activity_name"].as_str().unwrap().to_string());
                }
            }
        }
        names.dedup();
        assert_eq!(
            names,
            [
                "Create",
                "Delete",
                "Retired From Inventory",
                "MFA Factor Enable",
                "Access Key Deleted",
                "Access Key Activated",
                "Console Access Enabled",
                "Group Membership Added",
                "Tags Changed",
                "Path Changed",
                "MFA Device Added",
                "User Changed"
            ]
        );
    }

    #[test]
    fn policies_and_admin_changes_are_their_own_events() {
        let admin = json!({"uid": "group/ops/managed/arn:aws:iam::aws:policy/AdministratorAccess",
            "name": "AdministratorAccess", "arn": "arn:aws:iam::aws:policy/AdministratorAccess",
            "type": "managed", "via": "group/ops"});
        let fields = [
            fc(
                "unmapped.user.admin_via[AdministratorAccess (group ops)]",
                Value::Null,
                json!("AdministratorAccess (group ops)"),
            ),
            fc("unmapped.user.is_admin", json!(false), json!(true)),
            fc(
                "unmapped.user.policies[group/ops/managed/arn:aws:iam::aws:policy/AdministratorAccess]",
                Value::Null,
                admin,
            ),
            fc(
                "unmapped.user.policies[user/inline/old]",
                json!({"uid": "user/inline/old", "name": "old", "type": "inline", "via": "user"}),
                Value::Null,
            ),
            fc(
                "user.groups[ops]",
                Value::Null,
                json!({"name": "ops", "privileges": ["AdministratorAccess"]}),
            ),
            fc(
                "user.programmatic_credentials[APKA1]",
                Value::Null,
                json!({"uid": "APKA1", "type": "SSH Public Key"}),
            ),
        ];
        let ev = events(&change(ChangeKind::Updated, &fields, None));
        let names: Vec<&str> = ev
            .iter()
            .map(|e| e["activity_name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Administrator Access Granted",
                "Attach Policy",
                "Detach Policy",
                "Group Membership Added",
                "SSH Public Key Created"
            ]
        );
        assert_eq!(ev[0]["severity"], "High");
        assert_eq!(ev[1]["activity_id"], 7);
        assert_eq!(ev[1]["severity"], "High", "AdministratorAccess attached");
        assert_eq!(
            ev[1]["policies"][0]["uid"],
            "arn:aws:iam::aws:policy/AdministratorAccess"
        );
        assert_eq!(
            ev[1]["message"],
            "bob got policy AdministratorAccess through group ops"
        );
        assert_eq!(ev[2]["activity_id"], 8);
        assert_eq!(ev[2]["policies"], json!([{"name": "old"}]));
        ev.iter().for_each(assert_strict);
    }

    #[test]
    fn a_deletion_without_a_kept_record_still_names_the_user() {
        let ev = events(&change(ChangeKind::Deleted, &[], None));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["activity_id"], 6);
        assert_eq!(ev[0]["user"]["name"], "bob");
        assert_eq!(
            ev[0]["message"],
            "bob was deleted from account 123456789012"
        );
    }
}

//! IAM write events (CloudTrail records) → which users to refresh, and who did it.
//!
//! Both sources hand over the same CloudTrail record: SQS as the `detail` of an EventBridge
//! "AWS API Call via CloudTrail" event, LookupEvents as the `CloudTrailEvent` string. Parsing is
//! pure; the sources ([`sqs`], [`cloudtrail`]) only fetch.

pub mod cloudtrail;
pub mod sqs;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who made a change: the CloudTrail record's `userIdentity`, and which call it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `arn:aws:sts::…:assumed-role/Admin/jane`, `arn:aws:iam::…:user/bob`, `…:root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// CloudTrail's `userIdentity.type`: IAMUser, AssumedRole, Root, FederatedUser, AWSService…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// The IAM user's name, or the assumed role's session name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For AWS services acting on someone's behalf (`invokedBy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<String>,
    /// The IAM call (`CreateAccessKey`), its CloudTrail event id, and its time (ms).
    pub event_name: String,
    pub event_id: String,
    pub event_time: i64,
    /// The other IAM calls about the same user that one refresh covered (a burst is refreshed
    /// once; this event, the latest, is credited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coalesced: Vec<String>,
}

impl Actor {
    /// How `changes` names it: the ARN, else the principal, else the identity type.
    pub fn label(&self) -> String {
        self.arn
            .clone()
            .or_else(|| self.principal_id.clone())
            .or_else(|| self.invoked_by.clone())
            .or_else(|| self.kind.clone())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// What an event asks to refresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A user, by name.
    User(String),
    /// Every member of a group (its policies changed).
    Group(String),
    /// Every user the managed policy reaches, directly or through a group (its default version
    /// changed).
    Policy(String),
}

/// One IAM write that names something to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamEvent {
    pub id: String,
    pub name: String,
    /// The event's time (ms).
    pub time_ms: i64,
    /// The account the call was made in (`recipientAccountId`).
    pub account_id: String,
    pub actor: Actor,
    pub targets: Vec<Target>,
}

/// An event that is well formed but asks for nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub id: Option<String>,
    pub account_id: Option<String>,
    pub time_ms: Option<i64>,
    /// `read-only call`, `failed call`, `not about users`…: the `reason` label of the metric.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Event(Box<IamEvent>),
    Ignored(Ignored),
}

/// IAM writes that change one user's record, named by `requestParameters.userName`. The
/// contract's list, plus the other calls that change what the record shows (boundary,
/// SSH keys, certificates, service-specific credentials, MFA resync, password update).
pub const USER_EVENTS: &[&str] = &[
    "CreateUser",
    "DeleteUser",
    "UpdateUser",
    "CreateAccessKey",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "EnableMFADevice",
    "DeactivateMFADevice",
    "ResyncMFADevice",
    "CreateLoginProfile",
    "UpdateLoginProfile",
    "DeleteLoginProfile",
    "AttachUserPolicy",
    "DetachUserPolicy",
    "PutUserPolicy",
    "DeleteUserPolicy",
    "PutUserPermissionsBoundary",
    "DeleteUserPermissionsBoundary",
    "AddUserToGroup",
    "RemoveUserFromGroup",
    "TagUser",
    "UntagUser",
    "UploadSSHPublicKey",
    "UpdateSSHPublicKey",
    "DeleteSSHPublicKey",
    "UploadSigningCertificate",
    "UpdateSigningCertificate",
    "DeleteSigningCertificate",
    "CreateServiceSpecificCredential",
    "UpdateServiceSpecificCredential",
    "DeleteServiceSpecificCredential",
    "ResetServiceSpecificCredential",
];

/// IAM writes that change every member of a group.
pub const GROUP_EVENTS: &[&str] = &[
    "AttachGroupPolicy",
    "DetachGroupPolicy",
    "PutGroupPolicy",
    "DeleteGroupPolicy",
];

/// IAM writes that change every user a managed policy reaches (its default version).
pub const POLICY_EVENTS: &[&str] = &[
    "CreatePolicyVersion",
    "SetDefaultPolicyVersion",
    "DeletePolicyVersion",
];

/// Calls on keys, certificates and SSH keys may omit `userName`: the caller acts on itself.
const SELF_SERVICE: &[&str] = &[
    "CreateAccessKey",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "UploadSSHPublicKey",
    "UpdateSSHPublicKey",
    "DeleteSSHPublicKey",
    "UploadSigningCertificate",
    "UpdateSigningCertificate",
    "DeleteSigningCertificate",
    "CreateServiceSpecificCredential",
    "UpdateServiceSpecificCredential",
    "DeleteServiceSpecificCredential",
    "ResetServiceSpecificCredential",
    "EnableMFADevice",
    "DeactivateMFADevice",
    "ResyncMFADevice",
];

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Parses RFC 3339 (`2026-12-04T10:00:00Z`) into epoch ms.
pub fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// One CloudTrail record (the `detail` of an EventBridge event, or LookupEvents' `CloudTrailEvent`).
/// `Err` = not a CloudTrail record at all (malformed); `Ignored` = a record that asks for nothing.
pub fn from_record(r: &Value) -> Result<Parsed, String> {
    let name = text(r, "/eventName").ok_or("no eventName")?;
    let id = text(r, "/eventID").ok_or("no eventID")?.to_string();
    let time_ms = parse_time(text(r, "/eventTime").ok_or("no eventTime")?)
        .ok_or("eventTime is not an RFC 3339 time")?;
    let account_id = text(r, "/recipientAccountId")
        .or_else(|| text(r, "/userIdentity/accountId"))
        .ok_or("no recipientAccountId")?
        .to_string();
    let ignored = |reason| {
        Ok(Parsed::Ignored(Ignored {
            id: Some(id.clone()),
            account_id: Some(account_id.clone()),
            time_ms: Some(time_ms),
            reason,
        }))
    };
    if text(r, "/eventSource").is_some_and(|s| s != "iam.amazonaws.com") {
        return ignored("not IAM");
    }
    // A call IAM refused changed nothing.
    if text(r, "/errorCode").is_some() {
        return ignored("failed call");
    }
    if r.pointer("/readOnly").and_then(Value::as_bool) == Some(true) {
        return ignored("read-only call");
    }
    let params = r.pointer("/requestParameters").unwrap_or(&Value::Null);
    let identity = r.pointer("/userIdentity").unwrap_or(&Value::Null);
    let mut targets = Vec::new();
    if USER_EVENTS.contains(&name) {
        let named = text(params, "/userName")
            .or_else(|| text(r, "/responseElements/accessKey/userName"))
            .or_else(|| text(r, "/responseElements/user/userName"))
            .map(str::to_string)
            .or_else(|| {
                // Acting on oneself: only an IAM user has a user to refresh.
                (SELF_SERVICE.contains(&name) && text(identity, "/type") == Some("IAMUser"))
                    .then(|| text(identity, "/userName").map(str::to_string))
                    .flatten()
            });
        match named {
            Some(n) => targets.push(Target::User(n)),
            None => return ignored("no user named"),
        }
        // A rename or a move gives the user a new ARN: the new name is refreshed, the old one
        // is found gone.
        if name == "UpdateUser"
            && let Some(new) = text(params, "/newUserName")
        {
            targets.push(Target::User(new.to_string()));
        }
    } else if GROUP_EVENTS.contains(&name) {
        match text(params, "/groupName") {
            Some(g) => targets.push(Target::Group(g.to_string())),
            None => return ignored("no group named"),
        }
    } else if POLICY_EVENTS.contains(&name) {
        match text(params, "/policyArn") {
            Some(p) => targets.push(Target::Policy(p.to_string())),
            None => return ignored("no policy named"),
        }
    } else {
        return ignored("not about users");
    }
    let actor = Actor {
        arn: text(identity, "/arn").map(str::to_string),
        kind: text(identity, "/type").map(str::to_string),
        access_key_id: text(identity, "/accessKeyId").map(str::to_string),
        account_id: text(identity, "/accountId").map(str::to_string),
        principal_id: text(identity, "/principalId").map(str::to_string),
        // An IAM user's name; for a role session, the session's name (`…:jane`), which is who
        // the person was.
        name: text(identity, "/userName")
            .or_else(|| {
                text(identity, "/principalId")
                    .filter(|_| text(identity, "/type") == Some("AssumedRole"))
                    .and_then(|p| p.rsplit_once(':').map(|(_, s)| s))
            })
            .map(str::to_string),
        invoked_by: text(identity, "/invokedBy").map(str::to_string),
        event_name: name.to_string(),
        event_id: id.clone(),
        event_time: time_ms,
        coalesced: Vec::new(),
    };
    Ok(Parsed::Event(Box::new(IamEvent {
        id,
        name: name.to_string(),
        time_ms,
        account_id,
        actor,
        targets,
    })))
}

/// An SQS message body: an EventBridge event whose `detail` is the CloudTrail record.
pub fn from_eventbridge(body: &str) -> Result<Parsed, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let detail = v
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or("not an EventBridge event (no detail object)")?;
    if text(&v, "/source").is_some_and(|s| s != "aws.iam") {
        return Ok(Parsed::Ignored(Ignored {
            id: text(&v, "/id").map(str::to_string),
            account_id: text(&v, "/account").map(str::to_string),
            time_ms: text(&v, "/time").and_then(parse_time),
            reason: "not IAM",
        }));
    }
    // The envelope's account is where the event happened; a record forwarded from another
    // account's bus keeps its own recipientAccountId.
    if detail.get("recipientAccountId").is_none()
        && let Some(account) = text(&v, "/account")
    {
        let mut d = detail.clone();
        d["recipientAccountId"] = Value::String(account.to_string());
        return from_record(&d);
    }
    from_record(detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, params: Value) -> Value {
        json!({
            "eventVersion": "1.08",
            "userIdentity": {"type": "AssumedRole", "principalId": "AROAEXAMPLE:jane",
                "arn": "arn:aws:sts::123456789012:assumed-role/Admin/jane", "accountId": "123456789012",
                "accessKeyId": "ASIAEXAMPLE", "sessionContext": {"sessionIssuer": {"userName": "Admin"}}},
            "eventTime": "2026-12-04T10:00:00Z", "eventSource": "iam.amazonaws.com", "eventName": name,
            "awsRegion": "us-east-1", "requestParameters": params, "responseElements": null,
            "eventID": "e-1", "readOnly": false, "recipientAccountId": "123456789012"
        })
    }

    #[test]
    fn user_events_name_the_user_and_the_actor() {
        let Parsed::Event(e) =
            from_record(&record("CreateAccessKey", json!({"userName": "bob"}))).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.targets, [Target::User("bob".into())]);
        assert_eq!(e.account_id, "123456789012");
        assert_eq!(e.time_ms, 1_796_378_400_000);
        assert_eq!(
            e.actor.arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/Admin/jane")
        );
        assert_eq!(e.actor.access_key_id.as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(e.actor.kind.as_deref(), Some("AssumedRole"));
    }

    #[test]
    fn renames_groups_policies_and_self_service() {
        let Parsed::Event(e) = from_record(&record(
            "UpdateUser",
            json!({"userName": "a", "newUserName": "b"}),
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            e.targets,
            [Target::User("a".into()), Target::User("b".into())]
        );
        let Parsed::Event(e) = from_record(&record(
            "AttachGroupPolicy",
            json!({"groupName": "ops", "policyArn": "x"}),
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(e.targets, [Target::Group("ops".into())]);
        let Parsed::Event(e) = from_record(&record(
            "SetDefaultPolicyVersion",
            json!({"policyArn": "arn:aws:iam::1:policy/p", "versionId": "v2"}),
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            e.targets,
            [Target::Policy("arn:aws:iam::1:policy/p".into())]
        );
        let mut own = record("CreateAccessKey", json!({}));
        own["userIdentity"] = json!({"type": "IAMUser", "userName": "carol", "arn": "arn:aws:iam::123456789012:user/carol"});
        let Parsed::Event(e) = from_record(&own).unwrap() else {
            panic!()
        };
        assert_eq!(e.targets, [Target::User("carol".into())]);
    }

    #[test]
    fn reads_failures_and_others_are_ignored_not_malformed() {
        let mut failed = record("DeleteUser", json!({"userName": "bob"}));
        failed["errorCode"] = json!("DeleteConflict");
        let Parsed::Ignored(i) = from_record(&failed).unwrap() else {
            panic!()
        };
        assert_eq!(i.reason, "failed call");
        let Parsed::Ignored(i) =
            from_record(&record("CreateRole", json!({"roleName": "r"}))).unwrap()
        else {
            panic!()
        };
        assert_eq!(i.reason, "not about users");
        let mut ro = record("GetUser", json!({"userName": "bob"}));
        ro["readOnly"] = json!(true);
        assert!(matches!(from_record(&ro).unwrap(), Parsed::Ignored(_)));
        assert!(from_record(&json!({"eventName": "CreateUser"})).is_err());
        assert!(from_eventbridge("{not json").is_err());
        assert!(from_eventbridge("{\"detail\": 1}").is_err());
    }

    #[test]
    fn eventbridge_envelope() {
        let mut detail = record("TagUser", json!({"userName": "bob", "tags": []}));
        detail.as_object_mut().unwrap().remove("recipientAccountId");
        let body = json!({"version": "0", "id": "x", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.iam", "account": "210987654321", "time": "2026-12-04T10:00:01Z",
            "region": "us-east-1", "resources": [], "detail": detail})
        .to_string();
        let Parsed::Event(e) = from_eventbridge(&body).unwrap() else {
            panic!()
        };
        assert_eq!(e.account_id, "210987654321");
        assert_eq!(e.targets, [Target::User("bob".into())]);
    }
}

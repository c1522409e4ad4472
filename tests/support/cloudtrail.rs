//! A strict fake of CloudTrail `LookupEvents` (AWS JSON 1.1), for what moto does not serve. Tests
//! [`CloudTrail::record`] IAM management events the way CloudTrail records them, attach the fake
//! to a [`Proxy`](super::proxy::Proxy) with `attach_cloudtrail`, and point the daemon's CloudTrail
//! client at the proxy.
//!
//! Wire format (as the AWS SDKs speak it, see aws-sdk-cloudtrail's `shape_lookup_events_input`):
//! `POST /`, `Content-Type: application/x-amz-json-1.1`, `X-Amz-Target:
//! CloudTrail_20131101.LookupEvents` (the Rust SDK; botocore and the API reference write the long
//! form `com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents`: both are accepted),
//! timestamps as epoch seconds (numbers, possibly fractional). Errors are 400 with
//! `{"__type": "...", "message": "..."}`.
//!
//! Like CloudTrail, records keep whole seconds: `eventTime` and `EventTime` are the event's time
//! truncated to the second, and `StartTime`/`EndTime` (inclusive) are compared with that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

/// The targets CloudTrail answers `LookupEvents` for.
pub const TARGETS: &[&str] = &[
    "CloudTrail_20131101.LookupEvents",
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
];

/// The lookup attribute keys CloudTrail accepts.
pub const ATTRIBUTE_KEYS: &[&str] = &[
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
];

/// MaxResults' default and maximum.
const MAX_RESULTS: i64 = 50;

/// One IAM management event, as CloudTrail records it.
#[derive(Debug, Clone, Default)]
pub struct TrailEvent {
    pub event_name: String,
    /// Milliseconds since the epoch; CloudTrail keeps whole seconds (the fake truncates).
    pub event_time_ms: i64,
    /// The account the call was made in (`recipientAccountId`).
    pub account_id: String,
    /// The record's `userIdentity` object (see [`TrailEvent::by_role`], [`TrailEvent::by_user`]).
    pub user_identity: Value,
    pub request_parameters: Value,
    pub response_elements: Value,
    pub read_only: bool,
}

impl TrailEvent {
    /// A call made through an assumed role's session (`arn:aws:sts::<acct>:assumed-role/<role>/<session>`),
    /// at the current time. `readOnly` is guessed from the name (Get*, List*).
    pub fn by_role(
        account_id: &str,
        role: &str,
        session: &str,
        event_name: &str,
        params: Value,
    ) -> TrailEvent {
        let now = now_ms();
        let role_id = pseudo_id("AROA", &format!("{account_id}/{role}"), 17);
        let identity = json!({
            "type": "AssumedRole",
            "principalId": format!("{role_id}:{session}"),
            "arn": format!("arn:aws:sts::{account_id}:assumed-role/{role}/{session}"),
            "accountId": account_id,
            "accessKeyId": pseudo_id("ASIA", &format!("{account_id}/{role}/{session}"), 16),
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": format!("arn:aws:iam::{account_id}:role/{role}"),
                    "accountId": account_id,
                    "userName": role,
                },
                "attributes": {
                    "creationDate": session_start(now),
                    "mfaAuthenticated": "false",
                },
            },
        });
        TrailEvent::new(account_id, identity, event_name, params, now)
    }

    /// A call made with an IAM user's long-term access key, at the current time.
    pub fn by_user(account_id: &str, user: &str, event_name: &str, params: Value) -> TrailEvent {
        let identity = json!({
            "type": "IAMUser",
            "principalId": pseudo_id("AIDA", &format!("{account_id}/{user}"), 17),
            "arn": format!("arn:aws:iam::{account_id}:user/{user}"),
            "accountId": account_id,
            "accessKeyId": pseudo_id("AKIA", &format!("{account_id}/{user}"), 16),
            "userName": user,
        });
        TrailEvent::new(account_id, identity, event_name, params, now_ms())
    }

    fn new(account_id: &str, identity: Value, name: &str, params: Value, ms: i64) -> TrailEvent {
        TrailEvent {
            event_name: name.to_string(),
            event_time_ms: ms,
            account_id: account_id.to_string(),
            user_identity: identity,
            request_parameters: params,
            response_elements: Value::Null,
            read_only: name.starts_with("Get") || name.starts_with("List"),
        }
    }

    /// The same event at another time (the role session's creationDate follows).
    pub fn at_ms(mut self, ms: i64) -> TrailEvent {
        self.event_time_ms = ms;
        if let Some(attrs) = self
            .user_identity
            .pointer_mut("/sessionContext/attributes")
            .and_then(Value::as_object_mut)
        {
            attrs.insert("creationDate".into(), json!(session_start(ms)));
        }
        self
    }

    /// The same event with these `responseElements`.
    pub fn responding(mut self, elements: Value) -> TrailEvent {
        self.response_elements = elements;
        self
    }
}

/// A recorded event, with what LookupEvents filters on.
struct Stored {
    seq: u64,
    /// The event time truncated to the second, in milliseconds.
    time_ms: i64,
    id: String,
    name: String,
    read_only: bool,
    username: Option<String>,
    access_key_id: Option<String>,
    resources: Vec<(String, String)>,
    record: String,
}

impl Stored {
    fn order_key(&self) -> (i64, u64) {
        (self.time_ms, self.seq)
    }

    fn matches(&self, key: &str, value: &str) -> bool {
        match key {
            "EventId" => self.id == value,
            "EventName" => self.name == value,
            "ReadOnly" => value == if self.read_only { "true" } else { "false" },
            "Username" => self.username.as_deref() == Some(value),
            "ResourceType" => self.resources.iter().any(|(t, _)| t == value),
            "ResourceName" => self.resources.iter().any(|(_, n)| n == value),
            "EventSource" => value == "iam.amazonaws.com",
            "AccessKeyId" => self.access_key_id.as_deref() == Some(value),
            _ => false,
        }
    }

    fn to_json(&self) -> Value {
        let mut ev = Map::new();
        ev.insert("EventId".into(), json!(self.id));
        ev.insert("EventName".into(), json!(self.name));
        ev.insert("ReadOnly".into(), json!(self.read_only.to_string()));
        if let Some(k) = &self.access_key_id {
            ev.insert("AccessKeyId".into(), json!(k));
        }
        ev.insert(
            "EventTime".into(),
            json!(self.time_ms.div_euclid(1000) as f64),
        );
        ev.insert("EventSource".into(), json!("iam.amazonaws.com"));
        if let Some(u) = &self.username {
            ev.insert("Username".into(), json!(u));
        }
        let resources: Vec<Value> = self
            .resources
            .iter()
            .map(|(t, n)| json!({"ResourceType": t, "ResourceName": n}))
            .collect();
        ev.insert("Resources".into(), Value::Array(resources));
        ev.insert("CloudTrailEvent".into(), json!(self.record));
        Value::Object(ev)
    }
}

/// What a NextToken stands for: the request's filters, and the last event handed out.
struct Cursor {
    filters: Value,
    after: (i64, u64),
}

#[derive(Default)]
struct Inner {
    events: Vec<Stored>,
    seq: u64,
    page_size: Option<usize>,
    rate: Option<f64>,
    bucket: Option<(f64, Instant)>,
    requests: usize,
    throttled: usize,
    last_request: Option<Value>,
    tokens: HashMap<String, Cursor>,
}

/// The fake; clones share its state.
#[derive(Clone, Default)]
pub struct CloudTrail {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for CloudTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock().unwrap();
        f.debug_struct("CloudTrail")
            .field("events", &g.events.len())
            .field("page_size", &g.page_size)
            .field("rate", &g.rate)
            .field("requests", &g.requests)
            .field("throttled", &g.throttled)
            .finish()
    }
}

/// A LookupEvents error: 400, `{"__type", "message"}`.
struct Fault(&'static str, String);

impl CloudTrail {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an IAM management event as CloudTrail records it; returns its EventId.
    pub fn record(&self, ev: TrailEvent) -> String {
        let id = uuid();
        let time_ms = ev.event_time_ms.div_euclid(1000) * 1000;
        let identity = &ev.user_identity;
        let username = identity["userName"]
            .as_str()
            .map(str::to_string)
            .or_else(|| match identity["type"].as_str() {
                Some("AssumedRole" | "FederatedUser") => identity["arn"]
                    .as_str()
                    .and_then(|a| a.rsplit('/').next())
                    .map(str::to_string),
                Some("Root") => Some("root".into()),
                _ => None,
            });
        let access_key_id = identity["accessKeyId"].as_str().map(str::to_string);
        let mut resources = Vec::new();
        let params = &ev.request_parameters;
        for (field, kind) in [
            ("userName", "AWS::IAM::User"),
            ("groupName", "AWS::IAM::Group"),
            ("roleName", "AWS::IAM::Role"),
            ("policyArn", "AWS::IAM::Policy"),
        ] {
            if let Some(name) = params[field].as_str() {
                resources.push((kind.to_string(), name.to_string()));
            }
        }
        if let Some(key) = params["accessKeyId"].as_str().or_else(|| {
            ev.response_elements
                .pointer("/accessKey/accessKeyId")?
                .as_str()
        }) {
            resources.push(("AWS::IAM::AccessKey".into(), key.to_string()));
        }
        let record = json!({
            "eventVersion": "1.08",
            "userIdentity": identity,
            "eventTime": iso_seconds(time_ms),
            "eventSource": "iam.amazonaws.com",
            "eventName": ev.event_name,
            "awsRegion": "us-east-1",
            "sourceIPAddress": "198.51.100.7",
            "userAgent": "aws-cli/2.22.0 md/awscrt#0.22.0 ua/2.0 os/linux#6.8.0 md/arch#x86_64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe command/iam",
            "requestParameters": ev.request_parameters,
            "responseElements": ev.response_elements,
            "requestID": uuid(),
            "eventID": id,
            "readOnly": ev.read_only,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": ev.account_id,
            "eventCategory": "Management",
            "tlsDetails": {
                "tlsVersion": "TLSv1.3",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": "iam.amazonaws.com",
            },
        });
        let mut g = self.inner.lock().unwrap();
        g.seq += 1;
        let seq = g.seq;
        g.events.push(Stored {
            seq,
            time_ms,
            id: id.clone(),
            name: ev.event_name,
            read_only: ev.read_only,
            username,
            access_key_id,
            resources,
            record: record.to_string(),
        });
        id
    }

    /// Serve at most `n` events a page (n ≥ 1), below MaxResults: forces NextToken paging.
    pub fn set_page_size(&self, n: usize) {
        self.inner.lock().unwrap().page_size = Some(n.max(1));
    }

    /// Like CloudTrail (2 per second per account and region): a token bucket of `per_sec`
    /// requests a second, burst of the same size (at least 1); beyond it, 400 ThrottlingException.
    pub fn set_rate_limit(&self, per_sec: Option<f64>) {
        let mut g = self.inner.lock().unwrap();
        g.rate = per_sec;
        g.bucket = None;
    }

    /// LookupEvents requests served (throttled and rejected ones included).
    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    pub fn throttled(&self) -> usize {
        self.inner.lock().unwrap().throttled
    }

    /// The last request body that was JSON.
    pub fn last_request(&self) -> Option<Value> {
        self.inner.lock().unwrap().last_request.clone()
    }

    /// Answers one request (what the proxy calls for a LookupEvents target).
    pub fn respond(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        match self.lookup(headers, body) {
            Ok(v) => reply(StatusCode::OK, v),
            Err(Fault(kind, message)) => reply(
                StatusCode::BAD_REQUEST,
                json!({"__type": kind, "message": message}),
            ),
        }
    }

    fn lookup(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, Fault> {
        let mut g = self.inner.lock().unwrap();
        g.requests += 1;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let target = header("x-amz-target");
        if !target.is_some_and(|t| TARGETS.contains(&t)) {
            return Err(serialization(format!(
                "X-Amz-Target {target:?} is not one of {TARGETS:?}"
            )));
        }
        let content_type = header("content-type").unwrap_or_default();
        if !content_type.starts_with("application/x-amz-json-1.1") {
            return Err(serialization(format!(
                "Content-Type {content_type:?} is not application/x-amz-json-1.1"
            )));
        }
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| serialization(format!("the body is not JSON: {e}")))?;
        g.last_request = Some(req.clone());
        if let Some(rate) = g.rate {
            let capacity = rate.max(1.0);
            let now = Instant::now();
            let (tokens, last) = g.bucket.unwrap_or((capacity, now));
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(capacity);
            if tokens >= 1.0 {
                g.bucket = Some((tokens - 1.0, now));
            } else {
                g.bucket = Some((tokens, now));
                g.throttled += 1;
                return Err(Fault("ThrottlingException", "Rate exceeded".into()));
            }
        }
        let req = parse_request(&req)?;
        if req.attributes.len() > 1 {
            return Err(Fault(
                "InvalidLookupAttributesException",
                "You cannot specify more than one lookup attribute.".into(),
            ));
        }
        if let Some((key, value)) = req.attributes.first() {
            if !ATTRIBUTE_KEYS.contains(&key.as_str()) {
                return Err(Fault(
                    "InvalidLookupAttributesException",
                    format!(
                        "Value {key:?} at 'lookupAttributes.1.member.attributeKey' is not one of {ATTRIBUTE_KEYS:?}."
                    ),
                ));
            }
            if value.is_empty() || value.chars().count() > 2000 {
                return Err(Fault(
                    "InvalidLookupAttributesException",
                    "AttributeValue must be 1 to 2000 characters long.".into(),
                ));
            }
        }
        if !(1..=MAX_RESULTS).contains(&req.max_results) {
            return Err(Fault(
                "InvalidMaxResultsException",
                format!(
                    "MaxResults {} is invalid: it must be between 1 and {MAX_RESULTS}.",
                    req.max_results
                ),
            ));
        }
        if let (Some(start), Some(end)) = (req.start_ms, req.end_ms)
            && start > end
        {
            return Err(Fault(
                "InvalidTimeRangeException",
                "Start time must be before or equal to end time.".into(),
            ));
        }
        if let Some(category) = &req.category
            && category != "insight"
        {
            return Err(Fault(
                "InvalidEventCategoryException",
                format!("Event category {category:?} is not valid; the only value is \"insight\"."),
            ));
        }
        let after = match &req.token {
            None => None,
            Some(token) => match g.tokens.get(token) {
                Some(c) if c.filters == req.filters => Some(c.after),
                Some(_) => {
                    return Err(Fault(
                        "InvalidNextTokenException",
                        "The NextToken was handed out for other lookup parameters.".into(),
                    ));
                }
                None => {
                    return Err(Fault(
                        "InvalidNextTokenException",
                        "Invalid NextToken.".into(),
                    ));
                }
            },
        };
        if req.category.is_some() {
            // Insights events: this fake records management events only.
            return Ok(json!({"Events": []}));
        }
        let mut found: Vec<&Stored> = g
            .events
            .iter()
            .filter(|e| req.start_ms.is_none_or(|s| e.time_ms >= s))
            .filter(|e| req.end_ms.is_none_or(|s| e.time_ms <= s))
            .filter(|e| req.attributes.first().is_none_or(|(k, v)| e.matches(k, v)))
            .filter(|e| after.is_none_or(|a| e.order_key() < a))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.order_key()));
        let size = (req.max_results as usize).min(g.page_size.unwrap_or(usize::MAX));
        let page = &found[..size.min(found.len())];
        let events: Vec<Value> = page.iter().map(|e| e.to_json()).collect();
        let next = (found.len() > page.len()).then(|| page[page.len() - 1].order_key());
        let mut out = json!({ "Events": events });
        if let Some(after) = next {
            let token = format!("ct-{}", uuid().replace('-', ""));
            g.tokens.insert(
                token.clone(),
                Cursor {
                    filters: req.filters,
                    after,
                },
            );
            out["NextToken"] = json!(token);
        }
        Ok(out)
    }
}

/// A LookupEvents request, typed.
struct Request {
    attributes: Vec<(String, String)>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    max_results: i64,
    token: Option<String>,
    category: Option<String>,
    /// What a NextToken must be presented with again: every parameter but MaxResults and NextToken.
    filters: Value,
}

fn parse_request(req: &Value) -> Result<Request, Fault> {
    let obj = req
        .as_object()
        .ok_or_else(|| serialization("the body is not a JSON object".into()))?;
    const FIELDS: &[&str] = &[
        "LookupAttributes",
        "StartTime",
        "EndTime",
        "EventCategory",
        "MaxResults",
        "NextToken",
    ];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(serialization(format!("unknown field {k:?}")));
    }
    let field = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let string = |k: &str| -> Result<Option<String>, Fault> {
        field(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| serialization(format!("{k} must be a string, not {v}")))
            })
            .transpose()
    };
    let time = |k: &str| -> Result<Option<i64>, Fault> {
        field(k)
            .map(|v| {
                v.as_f64()
                    .map(|s| (s * 1000.0).round() as i64)
                    .ok_or_else(|| {
                        serialization(format!("{k} must be a number of epoch seconds, not {v}"))
                    })
            })
            .transpose()
    };
    let mut attributes = Vec::new();
    if let Some(list) = field("LookupAttributes") {
        let list = list
            .as_array()
            .ok_or_else(|| serialization("LookupAttributes must be a list".into()))?;
        for a in list {
            let a = a
                .as_object()
                .ok_or_else(|| serialization("LookupAttributes members must be objects".into()))?;
            if let Some(k) = a
                .keys()
                .find(|k| *k != "AttributeKey" && *k != "AttributeValue")
            {
                return Err(serialization(format!(
                    "unknown field {k:?} in a LookupAttribute"
                )));
            }
            let get = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
            match (get("AttributeKey"), get("AttributeValue")) {
                (Some(k), Some(v)) => attributes.push((k, v)),
                _ => {
                    return Err(Fault(
                        "InvalidLookupAttributesException",
                        "A lookup attribute needs a string AttributeKey and AttributeValue.".into(),
                    ));
                }
            }
        }
    }
    let max_results = match field("MaxResults") {
        None => MAX_RESULTS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| serialization(format!("MaxResults must be an integer, not {v}")))?,
    };
    let filters = json!({
        "LookupAttributes": field("LookupAttributes"),
        "StartTime": field("StartTime"),
        "EndTime": field("EndTime"),
        "EventCategory": field("EventCategory"),
    });
    Ok(Request {
        attributes,
        start_ms: time("StartTime")?,
        end_ms: time("EndTime")?,
        max_results,
        token: string("NextToken")?,
        category: string("EventCategory")?,
        filters,
    })
}

fn serialization(message: String) -> Fault {
    Fault("SerializationException", message)
}

fn reply(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", uuid())
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `2026-12-04T10:00:00Z`, CloudTrail's `eventTime` (whole seconds).
fn iso_seconds(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .expect("a representable time");
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .expect("formattable")
}

/// A role session's `creationDate`: five minutes before the call.
fn session_start(ms: i64) -> String {
    iso_seconds(ms - 5 * 60 * 1000)
}

/// A random uuid-like string (version 4 layout).
fn uuid() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        8 + fastrand::u8(..4),
        fastrand::u16(..0x1000),
        fastrand::u64(..1 << 48),
    )
}

/// A stable IAM-style id: `prefix` and `len` characters of [A-Z2-7] derived from `seed`.
fn pseudo_id(prefix: &str, seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = prefix.to_string();
    for _ in 0..len {
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        out.push(char::from(ALPHABET[(h >> 59) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::proxy::{Proxy, Rules};

    const ACCOUNT: &str = "111122223333";
    /// 2026-12-04T10:00:00Z
    const T0: i64 = 1_796_378_400_000;

    async fn proxy_with(ct: &CloudTrail) -> Proxy {
        // The upstream is never contacted: LookupEvents stops at the fake.
        let proxy = Proxy::start("http://127.0.0.1:9", Rules::default()).await;
        proxy.attach_cloudtrail(ct);
        proxy
    }

    async fn post_raw(endpoint: &str, target: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{endpoint}/"))
            .header("content-type", "application/x-amz-json-1.1")
            .body(body.to_string());
        if let Some(t) = target {
            req = req.header("x-amz-target", t);
        }
        let resp = req.send().await.expect("proxy answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).expect("JSON answer"))
    }

    async fn post(endpoint: &str, body: Value) -> (u16, Value) {
        post_raw(endpoint, Some(TARGETS[0]), &body.to_string()).await
    }

    fn iam_events(ct: &CloudTrail, n: i64) -> Vec<String> {
        (0..n)
            .map(|i| {
                ct.record(
                    TrailEvent::by_role(
                        ACCOUNT,
                        "Admin",
                        "alice",
                        "CreateUser",
                        json!({"userName": format!("u{i}")}),
                    )
                    .at_ms(T0 + i * 1000 + 250),
                )
            })
            .collect()
    }

    fn event_secs(page: &Value) -> Vec<f64> {
        page["Events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["EventTime"].as_f64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn cloudtrail_pages_every_event_once_newest_first() {
        let ct = CloudTrail::new();
        let ids = iam_events(&ct, 7);
        ct.set_page_size(3);
        let proxy = proxy_with(&ct).await;
        let query = json!({
            "LookupAttributes": [{"AttributeKey": "EventSource", "AttributeValue": "iam.amazonaws.com"}],
            "StartTime": (T0 / 1000) as f64,
            "EndTime": (T0 / 1000 + 3600) as f64,
            "MaxResults": 50,
        });
        let mut seen = Vec::new();
        let mut times = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = query.clone();
            if let Some(t) = &token {
                q["NextToken"] = json!(t);
            }
            let (status, page) = post(&proxy.endpoint, q).await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            if pages == 2 {
                // An event recorded mid-walk, older than the cursor: it shows once, in order.
                let late = ct.record(
                    TrailEvent::by_user(ACCOUNT, "ops", "DeleteUser", json!({"userName": "u0"}))
                        .at_ms(T0 - 500 + 1000),
                );
                assert!(!late.is_empty());
            }
            for e in page["Events"].as_array().unwrap() {
                seen.push(e["EventId"].as_str().unwrap().to_string());
            }
            times.extend(event_secs(&page));
            match page["NextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 8, "{seen:?}");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        assert!(ids.iter().all(|id| seen.contains(id)));
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
        assert_eq!(times[0], (T0 / 1000 + 6) as f64);
        assert_eq!(ct.requests(), 3);
        assert_eq!(proxy.calls().get("LookupEvents"), Some(&3));
        assert!(ct.last_request().unwrap()["NextToken"].is_string());
    }

    #[tokio::test]
    async fn cloudtrail_record_is_realistic() {
        let ct = CloudTrail::new();
        let id = ct.record(
            TrailEvent::by_role(
                ACCOUNT,
                "Admin",
                "alice",
                "AttachUserPolicy",
                json!({"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}),
            )
            .at_ms(T0 + 999),
        );
        let proxy = proxy_with(&ct).await;
        let (status, page) = post(&proxy.endpoint, json!({})).await;
        assert_eq!(status, 200, "{page}");
        let e = &page["Events"][0];
        assert_eq!(e["EventId"], json!(id));
        assert_eq!(e["Username"], "alice");
        assert_eq!(e["ReadOnly"], "false");
        assert_eq!(e["EventTime"].as_f64(), Some((T0 / 1000) as f64));
        assert!(e["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
        assert_eq!(
            e["Resources"],
            json!([
                {"ResourceType": "AWS::IAM::User", "ResourceName": "bob"},
                {"ResourceType": "AWS::IAM::Policy", "ResourceName": "arn:aws:iam::aws:policy/ReadOnlyAccess"},
            ])
        );
        let record: Value = serde_json::from_str(e["CloudTrailEvent"].as_str().unwrap()).unwrap();
        assert_eq!(record["eventID"], json!(id));
        assert_eq!(record["eventTime"], "2026-12-04T10:00:00Z");
        assert_eq!(record["eventVersion"], "1.08");
        assert_eq!(
            record["userIdentity"]["arn"],
            "arn:aws:sts::111122223333:assumed-role/Admin/alice"
        );
        assert_eq!(
            record["userIdentity"]["sessionContext"]["attributes"]["creationDate"],
            "2026-12-04T09:55:00Z"
        );
        assert_eq!(record["recipientAccountId"], ACCOUNT);
        assert_eq!(record["managementEvent"], true);
        assert_eq!(record["readOnly"], false);
        assert_eq!(record["requestParameters"]["userName"], "bob");
    }

    #[tokio::test]
    async fn cloudtrail_time_range_is_inclusive_and_attributes_filter() {
        let ct = CloudTrail::new();
        iam_events(&ct, 5); // at T0+0s .. T0+4s (+250 ms, truncated by CloudTrail)
        ct.record(TrailEvent::by_user(ACCOUNT, "ops", "ListUsers", json!({})).at_ms(T0 + 2000));
        let proxy = proxy_with(&ct).await;
        let s = (T0 / 1000) as f64;
        let (status, page) = post(
            &proxy.endpoint,
            json!({"StartTime": s + 1.0, "EndTime": s + 3.0}),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(event_secs(&page), vec![s + 3.0, s + 2.0, s + 2.0, s + 1.0]);
        // Fractions count: 1.5 s excludes the event at 1 s.
        let (_, page) = post(
            &proxy.endpoint,
            json!({"StartTime": s + 1.5, "EndTime": s + 3.0}),
        )
        .await;
        assert_eq!(event_secs(&page), vec![s + 3.0, s + 2.0, s + 2.0]);
        let (_, page) = post(
            &proxy.endpoint,
            json!({"LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "true"}]}),
        )
        .await;
        assert_eq!(page["Events"].as_array().unwrap().len(), 1);
        assert_eq!(page["Events"][0]["Username"], "ops");
        let (_, page) = post(
            &proxy.endpoint,
            json!({"LookupAttributes": [{"AttributeKey": "ResourceName", "AttributeValue": "u3"}]}),
        )
        .await;
        assert_eq!(event_secs(&page), vec![s + 3.0]);
        let (_, page) = post(&proxy.endpoint, json!({"StartTime": s + 10.0})).await;
        assert_eq!(page, json!({"Events": []}));
    }

    #[tokio::test]
    async fn cloudtrail_rejects_what_cloudtrail_rejects() {
        let ct = CloudTrail::new();
        iam_events(&ct, 3);
        ct.set_page_size(1);
        let proxy = proxy_with(&ct).await;
        let ep = &proxy.endpoint;
        let kind = |(status, v): (u16, Value)| {
            assert_eq!(status, 400, "{v}");
            v["__type"].as_str().unwrap().to_string()
        };
        let attr = |k: &str| json!({"AttributeKey": k, "AttributeValue": "x"});
        assert_eq!(
            kind(
                post(
                    ep,
                    json!({"LookupAttributes": [attr("EventName"), attr("Username")]})
                )
                .await
            ),
            "InvalidLookupAttributesException"
        );
        assert_eq!(
            kind(post(ep, json!({"LookupAttributes": [attr("UserName")]})).await),
            "InvalidLookupAttributesException"
        );
        for n in [0, 51] {
            assert_eq!(
                kind(post(ep, json!({"MaxResults": n})).await),
                "InvalidMaxResultsException"
            );
        }
        assert_eq!(
            kind(post(ep, json!({"StartTime": 2.0, "EndTime": 1.0})).await),
            "InvalidTimeRangeException"
        );
        assert_eq!(
            kind(post(ep, json!({"NextToken": "made-up"})).await),
            "InvalidNextTokenException"
        );
        let (status, first) = post(ep, json!({"StartTime": 1.0})).await;
        assert_eq!(status, 200);
        let token = first["NextToken"].as_str().unwrap();
        assert_eq!(
            kind(post(ep, json!({"StartTime": 2.0, "NextToken": token})).await),
            "InvalidNextTokenException"
        );
        // The same parameters again (a retry) may reuse it; MaxResults may change.
        let (status, _) = post(
            ep,
            json!({"StartTime": 1.0, "NextToken": token, "MaxResults": 5}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            kind(post(ep, json!({"EventCategory": "management"})).await),
            "InvalidEventCategoryException"
        );
        assert_eq!(
            kind(post(ep, json!({"StartTime": "2026-12-04T10:00:00Z"})).await),
            "SerializationException"
        );
        assert_eq!(
            kind(post(ep, json!({"Unknown": 1})).await),
            "SerializationException"
        );
        assert_eq!(
            kind(post_raw(ep, Some(TARGETS[1]), "not json").await),
            "SerializationException"
        );
        assert_eq!(
            kind(post_raw(ep, Some("CloudTrail_20131101.lookupEvents"), "{}").await),
            "SerializationException"
        );
        assert_eq!(
            kind(post_raw(ep, Some("Wrong.LookupEvents"), "{}").await),
            "SerializationException"
        );
        // Without a target the proxy forwards to moto; the fake itself refuses it.
        let resp = ct.respond(&HeaderMap::new(), b"{}");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let (status, _) = post_raw(ep, Some(TARGETS[1]), "{}").await;
        assert_eq!(status, 200);
        assert_eq!(ct.throttled(), 0);

        // One request every 2 s, burst of 1: the 2nd to 4th (well within 2 s) are throttled.
        ct.set_rate_limit(Some(0.5));
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(post(ep, json!({})).await);
        }
        assert_eq!(answers[0].0, 200);
        assert_eq!(kind(answers[3].clone()), "ThrottlingException");
        assert_eq!(ct.throttled(), 3);
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(post(ep, json!({})).await.0, 200);
        ct.set_rate_limit(None);
        // Every request through the proxy, and the one answered directly above.
        assert_eq!(ct.requests() as u64, proxy.calls()["LookupEvents"] + 1);
    }

    #[tokio::test]
    async fn cloudtrail_without_a_fake_is_an_unknown_operation() {
        let proxy = Proxy::start("http://127.0.0.1:9", Rules::default()).await;
        let (status, v) = post(&proxy.endpoint, json!({})).await;
        assert_eq!(status, 400);
        assert_eq!(v["__type"], "UnknownOperationException");
    }

    /// The real SDK (as the daemon uses it) pages through the fake and reads its errors.
    #[tokio::test]
    async fn cloudtrail_speaks_the_sdks_wire_format() {
        use aws_sdk_cloudtrail::primitives::DateTime;
        use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
        let ct = CloudTrail::new();
        let ids = iam_events(&ct, 5);
        ct.set_page_size(2);
        let proxy = proxy_with(&ct).await;
        let conf = aws_sdk_cloudtrail::Config::builder()
            .behavior_version(aws_sdk_cloudtrail::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudtrail::config::Region::new("us-east-1"))
            .endpoint_url(&proxy.endpoint)
            .credentials_provider(aws_sdk_cloudtrail::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        let client = aws_sdk_cloudtrail::Client::from_conf(conf);
        let attribute = LookupAttribute::builder()
            .attribute_key(LookupAttributeKey::EventSource)
            .attribute_value("iam.amazonaws.com")
            .build()
            .unwrap();
        let mut got = Vec::new();
        let mut token = None;
        loop {
            let out = client
                .lookup_events()
                .lookup_attributes(attribute.clone())
                .start_time(DateTime::from_millis(T0 + 1))
                .end_time(DateTime::from_millis(T0 + 60_000))
                .max_results(50)
                .set_next_token(token)
                .send()
                .await
                .expect("LookupEvents");
            for e in out.events() {
                let record: Value = serde_json::from_str(e.cloud_trail_event().unwrap()).unwrap();
                assert_eq!(record["eventID"].as_str(), e.event_id());
                assert_eq!(e.read_only(), Some("false"));
                assert_eq!(e.resources()[0].resource_type(), Some("AWS::IAM::User"));
                got.push((
                    e.event_id().unwrap().to_string(),
                    e.event_time().unwrap().secs(),
                ));
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // T0+1 ms excludes the event CloudTrail dates T0 (its 250 ms are truncated).
        let want: Vec<(String, i64)> = (1..5)
            .rev()
            .map(|i| (ids[i].clone(), T0 / 1000 + i as i64))
            .collect();
        assert_eq!(got, want);
        assert_eq!(ct.requests(), 2);
        let req = ct.last_request().unwrap();
        assert_eq!(req["StartTime"].as_f64(), Some((T0 + 1) as f64 / 1000.0));

        let err = client
            .lookup_events()
            .start_time(DateTime::from_secs(2))
            .end_time(DateTime::from_secs(1))
            .send()
            .await
            .expect_err("a bad range");
        assert!(err.into_service_error().is_invalid_time_range_exception());
    }
}

//! A strict fake of Sekoia.io's asset-connector push API on 127.0.0.1:
//! `POST /api/v2/asset-management/asset-connector/{connector_uuid}`.
//!
//! Sources checked for this file, and what each confirms (Sekoia publishes no reference page for
//! this endpoint that could be found; its own client is the reference):
//!
//! - Sekoia's automation SDK, github.com/SEKOIA-IO/sekoia-automation-sdk
//!   (`sekoia_automation/asset_connector/{connector,async_connector,mixin}.py`,
//!   `models/connector.py`, `models/ocsf/{base,user}.py`, `tests/asset_connector/*`):
//!   - the URL, `{base}/api/v2/asset-management/asset-connector/{connector_configuration_uuid}`,
//!     base `https://api.sekoia.io` by default (an older SDK used `/api/v1/asset-connectors/{uuid}`
//!     with `{"assets": [...]}`; not served here);
//!   - headers `Authorization: Bearer <api key>` and `Content-Type: application/json` (the SDK
//!     adds `User-Agent: sekoiaio-asset-connector-<uuid>`; not required here);
//!   - the body is `AssetList`: `{"version": <int>, "items": [...]}`, `version` being the SDK's
//!     `OCSF_SCHEMA_VERSION = 1` ("the OCSF schema version (Sekoia version)"), serialized without
//!     null fields;
//!   - items are OCSF records, the union of the SDK's Device (class 5001), User (5003, "User
//!     Inventory Info", `https://schema.ocsf.io/1.5.0/classes/user_inventory`), Software and
//!     Vulnerability (2002) models, all built on `OCSFBaseModel`, which requires `activity_id`,
//!     `activity_name`, `category_name`, `category_uid`, `class_name`, `class_uid`, `type_name`,
//!     `type_uid`, `time`, `metadata {product {name}, version}`;
//!   - success is exactly HTTP 200 (anything else is an error; 429 is read with `Retry-After`);
//!     the SDK's older error table reads 400 "Invalid request format", 401 "Unauthorized access",
//!     404 "Connector not found"; error bodies are read as JSON with `code` and `message`;
//!   - the success body is JSON: the SDK's own tests mock it as `{}` (and `{"result": "success"}`);
//!     the newest SDK reads an optional `task_id` from it to poll `/api/v1/tasks/{id}` and says
//!     "older platforms … return nothing".
//! - Not confirmed, so chosen here:
//!   - what the server itself validates. This fake refuses (400) a `version` other than the integer
//!     1, a missing or non-array `items`, an item that is not an object, and an item without an
//!     integer `class_uid` (naming the item's index); it checks no other OCSF field and no class
//!     list. An empty `items` is accepted (counted as a request with 0 items);
//!   - error bodies `{"code": <snake_case reason>, "message": <text>}`, and the success body `{}`
//!     (no `task_id`: no task API here);
//!   - 401 for a missing or wrong key checked before the connector uuid (unknown uuid: 404), 415 for
//!     a body that is not `application/json`; `Content-Encoding: gzip` bodies are decoded.
//!
//! Unknown top-level keys are accepted and recorded ([`Sekoia::unknown_keys`]).

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::lifecycle::Lifecycle;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

/// The push endpoint's path before the connector uuid.
pub const PUSH_PREFIX: &str = "/api/v2/asset-management/asset-connector";

#[derive(Debug, Clone, Copy)]
struct Fault {
    status: u16,
    retry_after: Option<u64>,
}

struct Inner {
    api_key: String,
    connector_uuid: String,
    script: VecDeque<Fault>,
    items: Vec<Value>,
    requests: Vec<(u16, usize)>,
    unknown_keys: Vec<String>,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    life: Arc<Lifecycle>,
    generation: u64,
}

impl Ctx {
    fn check_live(&self) {
        self.life.check_live(self.generation, "Sekoia fake is down");
    }
}

/// The fake Sekoia.io. Dropping it stops the server.
pub struct Sekoia {
    /// Base URL, `http://127.0.0.1:PORT` (the `url` of a `sekoia_assets` sink).
    pub url: String,
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    life: Arc<Lifecycle>,
}

impl Sekoia {
    /// A Sekoia.io accepting `Bearer <api_key>` and knowing one asset connector, `connector_uuid`.
    pub async fn start(api_key: &str, connector_uuid: &str) -> Sekoia {
        let inner = Arc::new(Mutex::new(Inner {
            api_key: api_key.to_string(),
            connector_uuid: connector_uuid.to_string(),
            script: VecDeque::new(),
            items: Vec::new(),
            requests: Vec::new(),
            unknown_keys: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind Sekoia fake");
        let addr = listener.local_addr().expect("addr");
        let fake = Sekoia {
            url: format!("http://{addr}"),
            addr,
            inner,
            life: Arc::new(Lifecycle::default()),
        };
        fake.serve(listener);
        fake
    }

    /// `{url}/api/v2/asset-management/asset-connector/{connector_uuid}`.
    pub fn push_url(&self) -> String {
        let uuid = self.inner.lock().unwrap().connector_uuid.clone();
        format!("{}{PUSH_PREFIX}/{uuid}", self.url)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let generation = self.life.next_generation();
        let ctx = Ctx {
            inner: self.inner.clone(),
            life: self.life.clone(),
            generation,
        };
        let app = axum::Router::new()
            .route(&format!("{PUSH_PREFIX}/{{uuid}}"), post(push))
            .fallback(not_found)
            .layer(DefaultBodyLimit::disable())
            .with_state(ctx);
        self.life.serve(generation, listener, app);
    }

    /// An outage: stop listening (connections are refused), close idle keep-alive connections and
    /// drop requests in flight without a response. Accepted items are kept.
    pub async fn stop(&self) {
        self.life.stop().await;
    }

    /// Recovery: listen again on the same port, with the state as it was. No-op when up.
    pub async fn restart(&self) {
        if let Some(listener) = self.life.rebind(self.addr, "Sekoia").await {
            self.serve(listener);
        }
    }

    pub fn is_up(&self) -> bool {
        self.life.is_up()
    }

    /// The next push (after the ones already scripted) is answered with `status` and an error
    /// body, before authentication, and accepts nothing.
    pub fn push_reply(&self, status: u16) {
        self.inner.lock().unwrap().script.push_back(Fault {
            status,
            retry_after: None,
        });
    }

    /// As [`Sekoia::push_reply`], with `Retry-After: <secs>` (the SDK honours it on 429).
    pub fn push_reply_with_retry_after(&self, status: u16, secs: u64) {
        self.inner.lock().unwrap().script.push_back(Fault {
            status,
            retry_after: Some(secs),
        });
    }

    /// Every item of every accepted (200) push, in order (a re-sent item appears twice).
    pub fn items(&self) -> Vec<Value> {
        self.inner.lock().unwrap().items.clone()
    }

    /// (status, number of items in the body) of every push, in order; 0 items when the body
    /// could not be read as `{"items": [...]}`.
    pub fn requests(&self) -> Vec<(u16, usize)> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Top-level keys other than `version` and `items` seen in readable bodies, sorted.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.inner.lock().unwrap().unknown_keys.clone()
    }
}

impl Drop for Sekoia {
    fn drop(&mut self) {
        self.life.abort();
    }
}

/// An answer before it is sent.
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Answer {
    fn error(status: u16, message: impl Into<String>) -> Answer {
        let code = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace([' ', '-'], "_");
        Answer {
            status,
            body: json!({"code": code, "message": message.into()}),
            retry_after: None,
        }
    }

    fn into_response(self) -> Response {
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).expect("valid status"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(secs) = self.retry_after {
            b = b.header(header::RETRY_AFTER, secs.to_string());
        }
        b.body(Body::from(self.body.to_string())).unwrap()
    }
}

fn authenticated(g: &Inner, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, key)) => scheme.eq_ignore_ascii_case("bearer") && key == g.api_key,
        None => false,
    }
}

/// The body as JSON: `application/json` (parameters allowed), optionally gzip-encoded.
fn read_json(headers: &HeaderMap, body: &[u8]) -> Result<Value, Answer> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() != Some("application/json") {
        return Err(Answer::error(415, "Content-Type must be application/json"));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let raw = match encoding.as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|_| Answer::error(400, "body is not valid gzip"))?;
            out
        }
        Some(other) => {
            return Err(Answer::error(
                415,
                format!("unsupported Content-Encoding {other}"),
            ));
        }
    };
    serde_json::from_slice(&raw).map_err(|e| Answer::error(400, format!("invalid JSON: {e}")))
}

/// Validate an `AssetList` body; the items on success.
fn validate(body: &Value) -> Result<Vec<Value>, Answer> {
    let Some(obj) = body.as_object() else {
        return Err(Answer::error(400, "body must be a JSON object"));
    };
    match obj.get("version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(Answer::error(
                400,
                format!("unsupported version {v}; expected 1"),
            ));
        }
        None => return Err(Answer::error(400, "missing required field `version`")),
    }
    let items = match obj.get("items") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(Answer::error(400, "`items` must be an array")),
        None => return Err(Answer::error(400, "missing required field `items`")),
    };
    for (i, item) in items.iter().enumerate() {
        let Some(fields) = item.as_object() else {
            return Err(Answer::error(400, format!("items[{i}] is not an object")));
        };
        if !fields.get("class_uid").is_some_and(|c| c.is_u64()) {
            return Err(Answer::error(
                400,
                format!("items[{i}]: `class_uid` is required (an OCSF class id, e.g. 5003)"),
            ));
        }
    }
    Ok(items.clone())
}

fn process(g: &mut Inner, uuid: &str, headers: &HeaderMap, body: &[u8]) -> (Answer, usize) {
    let body = read_json(headers, body);
    let count = body
        .as_ref()
        .ok()
        .and_then(|b| b.get("items"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if let Ok(Value::Object(obj)) = &body {
        for k in obj.keys() {
            if k != "version" && k != "items" && !g.unknown_keys.contains(k) {
                g.unknown_keys.push(k.clone());
            }
        }
        g.unknown_keys.sort();
    }
    if let Some(f) = g.script.pop_front() {
        let mut a = Answer::error(f.status, format!("scripted status {}", f.status));
        a.retry_after = f.retry_after;
        return (a, count);
    }
    if !authenticated(g, headers) {
        return (Answer::error(401, "Unauthorized access"), count);
    }
    if uuid != g.connector_uuid {
        return (
            Answer::error(404, format!("Connector {uuid} not found")),
            count,
        );
    }
    let items = match body.and_then(|b| validate(&b)) {
        Ok(items) => items,
        Err(a) => return (a, count),
    };
    g.items.extend(items);
    (
        Answer {
            status: 200,
            body: json!({}),
            retry_after: None,
        },
        count,
    )
}

async fn push(
    State(ctx): State<Ctx>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ctx.check_live();
    let answer = {
        let mut g = ctx.inner.lock().unwrap();
        let (a, count) = process(&mut g, &uuid, &headers, &body);
        g.requests.push((a.status, count));
        a
    };
    answer.into_response()
}

async fn not_found(State(ctx): State<Ctx>) -> Response {
    ctx.check_live();
    Answer::error(404, "Not found").into_response()
}

// The fake's own tests (run with `cargo test --test it sekoia_fake`).

const TEST_KEY: &str = "sekoia-test-key";
const TEST_CONNECTOR: &str = "04716e25-c97f-4a22-925e-8b636ad9c8a4";

/// POST `body` to `url` as JSON with `Authorization: <auth>` (when given); (status, JSON body).
async fn test_post(url: &str, auth: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("Sekoia fake answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn test_item(uid: &str) -> Value {
    json!({"class_uid": 5003, "activity_id": 2, "user": {"uid": uid}})
}

#[tokio::test]
async fn sekoia_fake_accepts_a_version_1_asset_list() {
    let fake = Sekoia::start(TEST_KEY, TEST_CONNECTOR).await;
    let auth = format!("Bearer {TEST_KEY}");
    let body = json!({"version": 1, "items": [test_item("arn:a"), test_item("arn:b")], "extra": 1});
    let (status, resp) = test_post(&fake.push_url(), Some(&auth), &body).await;
    assert_eq!((status, resp), (200, json!({})));
    assert_eq!(fake.items(), vec![test_item("arn:a"), test_item("arn:b")]);
    assert_eq!(fake.requests(), vec![(200, 2)]);
    assert_eq!(fake.unknown_keys(), vec!["extra".to_string()]);
}

#[tokio::test]
async fn sekoia_fake_refuses_bad_keys_unknown_connectors_and_bad_bodies() {
    let fake = Sekoia::start(TEST_KEY, TEST_CONNECTOR).await;
    let url = fake.push_url();
    let auth = format!("Bearer {TEST_KEY}");
    let good = json!({"version": 1, "items": [test_item("arn:a")]});

    assert_eq!(test_post(&url, None, &good).await.0, 401);
    assert_eq!(test_post(&url, Some("Bearer wrong"), &good).await.0, 401);
    let (status, resp) = test_post(&url, Some(TEST_KEY), &good).await;
    assert_eq!((status, resp["code"].as_str()), (401, Some("unauthorized")));
    let other = format!(
        "{}{PUSH_PREFIX}/00000000-0000-4000-8000-000000000000",
        fake.url
    );
    assert_eq!(test_post(&other, Some(&auth), &good).await.0, 404);

    let bad_bodies = [
        json!({"version": 2, "items": [test_item("arn:a")]}),
        json!({"version": "1", "items": [test_item("arn:a")]}),
        json!({"items": [test_item("arn:a")]}),
        json!({"version": 1}),
        json!({"version": 1, "items": {"a": 1}}),
        json!({"version": 1, "items": ["x"]}),
        json!({"version": 1, "items": [test_item("arn:a"), {"user": {"uid": "arn:b"}}]}),
        json!([test_item("arn:a")]),
    ];
    for body in &bad_bodies {
        let (status, resp) = test_post(&url, Some(&auth), body).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        assert!(resp["message"].is_string());
    }
    assert!(fake.items().is_empty());
    assert_eq!(fake.requests().len(), 4 + bad_bodies.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sekoia_fake_scripted_faults_and_an_outage_with_recovery() {
    let fake = Sekoia::start(TEST_KEY, TEST_CONNECTOR).await;
    let url = fake.push_url();
    let auth = format!("Bearer {TEST_KEY}");
    let body = json!({"version": 1, "items": [test_item("arn:a")]});

    fake.push_reply(500);
    fake.push_reply_with_retry_after(429, 3);
    assert_eq!(test_post(&url, Some(&auth), &body).await.0, 500);
    let resp = reqwest::Client::new()
        .post(&url)
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert!(fake.items().is_empty());

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = || {
        client
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    fake.stop().await;
    assert!(!fake.is_up());
    assert!(send().await.is_err(), "down: no answer");
    fake.restart().await;
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    assert_eq!(fake.items(), vec![test_item("arn:a")]);
    assert_eq!(fake.requests(), vec![(500, 1), (429, 1), (200, 1)]);
}

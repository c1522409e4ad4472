//! A strict fake of Oomnitza's bulk ("connector") API on 127.0.0.1: `POST /api/v3/bulk` stages a
//! batch of records under a `portion`, `POST /api/v3/bulk/{portion}/finalize` applies the staged
//! records of that portion to the fake's database.
//!
//! Sources checked for this file, and what each confirms:
//!
//! - Oomnitza's own connector, github.com/Oomnitza/oomnitza-connector (`connectors/oomnitza.py`,
//!   `lib/connector.py`, README "Common optional settings", CHANGELOG 2.0.0):
//!   - the API token goes in the `Authorization2` header (no scheme), with
//!     `Content-Type: application/json; charset=utf-8`; also the Oomnitza help centre,
//!     oomnitza.zendesk.com/hc/en-us/articles/17200339347991-Oomnitza-REST-APIs ("If you are using
//!     API Key authentication, use Authorization2 as the header"; request and response content type
//!     `application/json`);
//!   - batches are `POST {url}/api/v3/bulk` with a JSON object `{"portion", "records",
//!     "sync_field", "data_type", "insert_only", "update_only", "connector_name", …}`: `portion` is
//!     `str(uuid4())`, generated once per run and shared by all its batches; `records` is a list of
//!     objects keyed by Oomnitza field names (the connector's mapped fields); `sync_field` is a list
//!     of field names (the README: "the Oomnitza field (fields) which contains the object's unique
//!     identifier", several allowed);
//!     `data_type` is the record type (e.g. `users`, `assets`); `insert_only`/`update_only` are
//!     booleans ("only create records… existing objects will not be updated" / "only update
//!     records… new objects will not be created"; the connector refuses both true);
//!   - after the last batch, `POST {url}/api/v3/bulk/{portion}/finalize` with the body `{}`;
//!   - the connector also sends `connector_version`, `error` (null, or a message marking the batch
//!     as failed), `test_run`, `multi_str_input_value`, `error_type`, and, for cloud-managed
//!     connectors, `connector_id` *instead of* `connector_name`. This fake requires
//!     `connector_name` (the client under test is not a managed connector) and records every
//!     top-level key other than the seven above in [`PortionInfo::extra_keys`], accepting them;
//!   - the connector only checks `raise_for_status()`: it reads no field of the bulk or finalize
//!     answers.
//! - Not confirmed (no public reference found), so chosen here:
//!   - the JSON bodies. Success of a batch: `{"portion": <id>, "status": "queued"}`; of a
//!     finalize: `{"portion", "status": "finalized", "added", "updated", "skipped"}`; errors:
//!     `{"error": <reason phrase>, "message": <text>}`, plus `"field"` naming the offending key and
//!     `"record"` (0-based index) when one record is at fault;
//!   - the status codes: 401 for a missing or wrong token, 400 for a malformed batch (naming the
//!     key), 404 for finalizing an unknown portion, 409 for finalizing twice or posting to a
//!     finalized portion, 415 for a body that is not `application/json`;
//!   - that the first batch fixes a portion's `data_type`, `sync_field`, `connector_name`,
//!     `insert_only` and `update_only` (a later batch that differs gets 409 naming the key);
//!   - the real API falls back to the sync field of the Oomnitza mapping when `sync_field` is empty
//!     (README); this fake demands a non-empty list, and every record must carry every sync field,
//!     non-null (400 naming it and the record);
//!   - "flat" records: a field whose value is an object, or an array holding objects or arrays, is
//!     refused (400);
//!   - an update *merges* the incoming fields into the stored record (fields not sent are kept), as
//!     an asset database applying mapped fields does; records are matched by the values of the
//!     portion's sync fields; records of a portion are applied in order, so a second record with
//!     the same key updates the first (or is skipped under `insert_only`);
//!   - `Content-Encoding: gzip` request bodies are decoded (other encodings: 415);
//!   - finalizing a portion that never received a batch is 404 (the real service may instead
//!     create an empty portion; the connector uses `/api/v3/bulk/{id}/add_ready_portion` for empty
//!     runs, which this fake does not serve).
//!
//! Not modelled: Basic and session authentication, `GET /api/v3/bulk/{portion}` (portion info,
//! whose `canceled` flag the connector reads), `add_ready_portion`, `check_managed`, `connector_id`,
//! the `error` key's meaning, rate limits, body size limits.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::lifecycle::Lifecycle;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value, json};

/// The batch endpoint's path.
pub const BULK_PATH: &str = "/api/v3/bulk";

/// The top-level keys this fake interprets; any other is accepted and recorded.
const CORE_KEYS: &[&str] = &[
    "portion",
    "records",
    "sync_field",
    "data_type",
    "insert_only",
    "update_only",
    "connector_name",
];

/// One portion as the fake sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortionInfo {
    pub portion: String,
    /// Batches accepted (200) for this portion.
    pub batches: usize,
    /// Records staged by those batches.
    pub records: usize,
    pub finalized: bool,
    pub connector_name: String,
    pub sync_field: Vec<String>,
    pub data_type: String,
    pub insert_only: bool,
    pub update_only: bool,
    /// Top-level keys beyond the seven interpreted ones, sorted, over all accepted batches.
    pub extra_keys: Vec<String>,
    /// At finalize: records inserted, existing records updated, records skipped by
    /// `insert_only`/`update_only`.
    pub added: usize,
    pub updated: usize,
    pub skipped: usize,
}

struct Portion {
    info: PortionInfo,
    staged: Vec<Value>,
}

/// A record in the database with the key it was last written under (the JSON array of its sync
/// field values).
struct Stored {
    key: String,
    record: Value,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    status: u16,
    retry_after: Option<u64>,
}

struct Inner {
    token: String,
    bulk_script: VecDeque<Fault>,
    finalize_script: VecDeque<Fault>,
    portions: Vec<Portion>,
    /// Applied records per `data_type`.
    db: HashMap<String, Vec<Stored>>,
    requests: Vec<(String, u16)>,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    life: Arc<Lifecycle>,
    generation: u64,
}

impl Ctx {
    fn check_live(&self) {
        self.life
            .check_live(self.generation, "Oomnitza fake is down");
    }
}

/// The fake Oomnitza. Dropping it stops the server.
pub struct Oomnitza {
    /// Base URL, `http://127.0.0.1:PORT`; batches go to `{url}/api/v3/bulk`.
    pub url: String,
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    life: Arc<Lifecycle>,
}

impl Oomnitza {
    /// An Oomnitza accepting the API token `token` in `Authorization2`.
    pub async fn start(token: &str) -> Oomnitza {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            bulk_script: VecDeque::new(),
            finalize_script: VecDeque::new(),
            portions: Vec::new(),
            db: HashMap::new(),
            requests: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind Oomnitza fake");
        let addr = listener.local_addr().expect("addr");
        let fake = Oomnitza {
            url: format!("http://{addr}"),
            addr,
            inner,
            life: Arc::new(Lifecycle::default()),
        };
        fake.serve(listener);
        fake
    }

    /// `{url}/api/v3/bulk`.
    pub fn bulk_url(&self) -> String {
        format!("{}{BULK_PATH}", self.url)
    }

    /// `{url}/api/v3/bulk/{portion}/finalize`.
    pub fn finalize_url(&self, portion: &str) -> String {
        format!("{}{BULK_PATH}/{portion}/finalize", self.url)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let generation = self.life.next_generation();
        let ctx = Ctx {
            inner: self.inner.clone(),
            life: self.life.clone(),
            generation,
        };
        let app = axum::Router::new()
            .route(BULK_PATH, post(bulk))
            .route("/api/v3/bulk/{portion}/finalize", post(finalize))
            .fallback(not_found)
            .layer(DefaultBodyLimit::disable())
            .with_state(ctx);
        self.life.serve(generation, listener, app);
    }

    /// An outage: stop listening (connections are refused), close idle keep-alive connections and
    /// drop requests in flight without a response. State (portions, database) is kept.
    pub async fn stop(&self) {
        self.life.stop().await;
    }

    /// Recovery: listen again on the same port, with the state as it was. No-op when up.
    pub async fn restart(&self) {
        if let Some(listener) = self.life.rebind(self.addr, "Oomnitza").await {
            self.serve(listener);
        }
    }

    pub fn is_up(&self) -> bool {
        self.life.is_up()
    }

    /// The next bulk POST (after the ones already scripted) is answered with `status` and an
    /// error body, before authentication, and stages nothing.
    pub fn push_reply(&self, status: u16) {
        self.inner.lock().unwrap().bulk_script.push_back(Fault {
            status,
            retry_after: None,
        });
    }

    /// As [`Oomnitza::push_reply`], with `Retry-After: <secs>`.
    pub fn push_reply_with_retry_after(&self, status: u16, secs: u64) {
        self.inner.lock().unwrap().bulk_script.push_back(Fault {
            status,
            retry_after: Some(secs),
        });
    }

    /// The next finalize POST (after the ones already scripted) is answered with `status`; the
    /// portion stays staged and can be finalized again.
    pub fn fail_finalize_once(&self, status: u16) {
        self.inner.lock().unwrap().finalize_script.push_back(Fault {
            status,
            retry_after: None,
        });
    }

    /// The applied records of `data_type`, sorted by their sync key.
    pub fn records(&self, data_type: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        let mut rows: Vec<(&String, &Value)> =
            g.db.get(data_type)
                .map(|t| t.iter().map(|s| (&s.key, &s.record)).collect())
                .unwrap_or_default();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows.into_iter().map(|(_, r)| r.clone()).collect()
    }

    /// Every portion that received an accepted batch, in the order they appeared.
    pub fn portions(&self) -> Vec<PortionInfo> {
        let g = self.inner.lock().unwrap();
        g.portions.iter().map(|p| p.info.clone()).collect()
    }

    /// The records staged under `portion` (kept after finalize), in the order received.
    pub fn staged(&self, portion: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.portions
            .iter()
            .find(|p| p.info.portion == portion)
            .map(|p| p.staged.clone())
            .unwrap_or_default()
    }

    /// (path, status) of every request answered, in order.
    pub fn requests(&self) -> Vec<(String, u16)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for Oomnitza {
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
    fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            body,
            retry_after: None,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Answer {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Answer {
            status,
            body: json!({"error": reason, "message": message.into()}),
            retry_after: None,
        }
    }

    /// A 400 naming the offending key (and record, when one record is at fault).
    fn bad(field: &str, record: Option<usize>, message: impl Into<String>) -> Answer {
        let mut a = Answer::error(400, message);
        a.body["field"] = Value::from(field);
        if let Some(i) = record {
            a.body["record"] = Value::from(i);
        }
        a
    }

    fn fault(f: Fault) -> Answer {
        let mut a = Answer::error(f.status, format!("scripted status {}", f.status));
        a.retry_after = f.retry_after;
        a
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

fn authenticate(g: &Inner, headers: &HeaderMap) -> Result<(), Answer> {
    match headers.get("authorization2") {
        None => Err(Answer::error(
            401,
            "Authentication credentials were not provided (Authorization2 header)",
        )),
        Some(v) if v.as_bytes() == g.token.as_bytes() => Ok(()),
        Some(_) => Err(Answer::error(401, "Invalid API token")),
    }
}

/// The body as a JSON object: `application/json` (parameters allowed), optionally gzip-encoded.
fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Answer> {
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
    match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Answer::error(400, "body must be a JSON object")),
        Err(e) => Err(Answer::error(400, format!("body is not valid JSON: {e}"))),
    }
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One batch, validated.
struct Batch {
    portion: String,
    records: Vec<Value>,
    sync_field: Vec<String>,
    data_type: String,
    connector_name: String,
    insert_only: bool,
    update_only: bool,
    extra_keys: Vec<String>,
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Answer> {
    obj.get(key)
        .ok_or_else(|| Answer::bad(key, None, format!("missing required key `{key}`")))
}

fn non_empty_string(obj: &Map<String, Value>, key: &str) -> Result<String, Answer> {
    match required(obj, key)? {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(Answer::bad(
            key,
            None,
            format!("`{key}` must be a non-empty string"),
        )),
    }
}

fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool, Answer> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Answer::bad(key, None, format!("`{key}` must be a boolean"))),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// The JSON array of a record's sync field values, or None when one is missing or null.
fn sync_key(record: &Value, sync_field: &[String]) -> Option<String> {
    let values: Option<Vec<&Value>> = sync_field
        .iter()
        .map(|f| record.get(f).filter(|v| !v.is_null()))
        .collect();
    values.map(|v| serde_json::to_string(&v).expect("serializable"))
}

impl Batch {
    fn parse(obj: &Map<String, Value>) -> Result<Batch, Answer> {
        for key in CORE_KEYS {
            if matches!(*key, "insert_only" | "update_only") {
                continue;
            }
            required(obj, key)?;
        }
        let portion = non_empty_string(obj, "portion")?;
        if !is_uuid(&portion) {
            return Err(Answer::bad(
                "portion",
                None,
                format!("`portion` must be a UUID, got {portion:?}"),
            ));
        }
        let sync_field: Vec<String> = match required(obj, "sync_field")? {
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                    _ => Err(Answer::bad(
                        "sync_field",
                        None,
                        "`sync_field` entries must be non-empty strings",
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(Answer::bad(
                    "sync_field",
                    None,
                    "`sync_field` must be a non-empty array of field names",
                ));
            }
        };
        let data_type = non_empty_string(obj, "data_type")?;
        let connector_name = non_empty_string(obj, "connector_name")?;
        let insert_only = flag(obj, "insert_only")?;
        let update_only = flag(obj, "update_only")?;
        if insert_only && update_only {
            return Err(Answer::bad(
                "update_only",
                None,
                "`insert_only` and `update_only` can not be both true",
            ));
        }
        let records = match required(obj, "records")? {
            Value::Array(a) if !a.is_empty() => a.clone(),
            _ => {
                return Err(Answer::bad(
                    "records",
                    None,
                    "`records` must be a non-empty array of objects",
                ));
            }
        };
        for (i, record) in records.iter().enumerate() {
            let Some(fields) = record.as_object() else {
                return Err(Answer::bad(
                    "records",
                    Some(i),
                    format!("record {i} is not an object"),
                ));
            };
            for (name, value) in fields {
                let flat = match value {
                    Value::Object(_) => false,
                    Value::Array(items) => items.iter().all(is_scalar),
                    _ => true,
                };
                if !flat {
                    return Err(Answer::bad(
                        name,
                        Some(i),
                        format!("record {i}: field `{name}` is nested; records must be flat"),
                    ));
                }
            }
            for f in &sync_field {
                if fields.get(f).is_none_or(Value::is_null) {
                    return Err(Answer::bad(
                        f,
                        Some(i),
                        format!("record {i} has no value for the sync field `{f}`"),
                    ));
                }
            }
        }
        let mut extra_keys: Vec<String> = obj
            .keys()
            .filter(|k| !CORE_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        extra_keys.sort();
        Ok(Batch {
            portion,
            records,
            sync_field,
            data_type,
            connector_name,
            insert_only,
            update_only,
            extra_keys,
        })
    }
}

fn process_bulk(g: &mut Inner, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Some(f) = g.bulk_script.pop_front() {
        return Answer::fault(f);
    }
    if let Err(a) = authenticate(g, headers) {
        return a;
    }
    let obj = match json_object(headers, body) {
        Ok(o) => o,
        Err(a) => return a,
    };
    let batch = match Batch::parse(&obj) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let count = batch.records.len();
    match g
        .portions
        .iter_mut()
        .find(|p| p.info.portion == batch.portion)
    {
        Some(p) if p.info.finalized => {
            return Answer::error(
                409,
                format!("portion {} is already finalized", batch.portion),
            );
        }
        Some(p) => {
            let i = &p.info;
            let differs = [
                ("data_type", i.data_type != batch.data_type),
                ("sync_field", i.sync_field != batch.sync_field),
                ("connector_name", i.connector_name != batch.connector_name),
                ("insert_only", i.insert_only != batch.insert_only),
                ("update_only", i.update_only != batch.update_only),
            ]
            .into_iter()
            .find(|(_, d)| *d);
            if let Some((key, _)) = differs {
                let mut a = Answer::error(
                    409,
                    format!(
                        "`{key}` differs from the earlier batches of portion {}",
                        batch.portion
                    ),
                );
                a.body["field"] = Value::from(key);
                return a;
            }
            p.info.batches += 1;
            p.info.records += count;
            for k in batch.extra_keys {
                if !p.info.extra_keys.contains(&k) {
                    p.info.extra_keys.push(k);
                }
            }
            p.info.extra_keys.sort();
            p.staged.extend(batch.records);
        }
        None => g.portions.push(Portion {
            info: PortionInfo {
                portion: batch.portion.clone(),
                batches: 1,
                records: count,
                finalized: false,
                connector_name: batch.connector_name,
                sync_field: batch.sync_field,
                data_type: batch.data_type,
                insert_only: batch.insert_only,
                update_only: batch.update_only,
                extra_keys: batch.extra_keys,
                added: 0,
                updated: 0,
                skipped: 0,
            },
            staged: batch.records,
        }),
    }
    Answer::ok(json!({"portion": batch.portion, "status": "queued"}))
}

/// Apply a portion's staged records to its data type's table.
fn apply(db: &mut HashMap<String, Vec<Stored>>, p: &mut Portion) {
    let info = &mut p.info;
    let table = db.entry(info.data_type.clone()).or_default();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, s) in table.iter().enumerate() {
        if let Some(k) = sync_key(&s.record, &info.sync_field) {
            index.entry(k).or_insert(i);
        }
    }
    for record in &p.staged {
        let key = sync_key(record, &info.sync_field).expect("validated on receipt");
        match index.get(&key) {
            Some(_) if info.insert_only => info.skipped += 1,
            Some(&i) => {
                let stored = &mut table[i];
                if let (Some(old), Some(new)) = (stored.record.as_object_mut(), record.as_object())
                {
                    for (k, v) in new {
                        old.insert(k.clone(), v.clone());
                    }
                }
                stored.key = key;
                info.updated += 1;
            }
            None if info.update_only => info.skipped += 1,
            None => {
                table.push(Stored {
                    key: key.clone(),
                    record: record.clone(),
                });
                index.insert(key, table.len() - 1);
                info.added += 1;
            }
        }
    }
    info.finalized = true;
}

fn process_finalize(g: &mut Inner, headers: &HeaderMap, portion: &str) -> Answer {
    if let Some(f) = g.finalize_script.pop_front() {
        return Answer::fault(f);
    }
    if let Err(a) = authenticate(g, headers) {
        return a;
    }
    let Inner { portions, db, .. } = g;
    let Some(p) = portions.iter_mut().find(|p| p.info.portion == portion) else {
        return Answer::error(404, format!("unknown portion {portion}"));
    };
    if p.info.finalized {
        return Answer::error(409, format!("portion {portion} is already finalized"));
    }
    apply(db, p);
    Answer::ok(json!({
        "portion": portion,
        "status": "finalized",
        "added": p.info.added,
        "updated": p.info.updated,
        "skipped": p.info.skipped,
    }))
}

async fn bulk(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    ctx.check_live();
    let answer = {
        let mut g = ctx.inner.lock().unwrap();
        let a = process_bulk(&mut g, &headers, &body);
        g.requests.push((BULK_PATH.to_string(), a.status));
        a
    };
    answer.into_response()
}

async fn finalize(
    State(ctx): State<Ctx>,
    Path(portion): Path<String>,
    headers: HeaderMap,
) -> Response {
    ctx.check_live();
    let answer = {
        let mut g = ctx.inner.lock().unwrap();
        let a = process_finalize(&mut g, &headers, &portion);
        g.requests
            .push((format!("{BULK_PATH}/{portion}/finalize"), a.status));
        a
    };
    answer.into_response()
}

async fn not_found(State(ctx): State<Ctx>, uri: axum::http::Uri) -> Response {
    ctx.check_live();
    let a = Answer::error(404, format!("no such endpoint {}", uri.path()));
    ctx.inner
        .lock()
        .unwrap()
        .requests
        .push((uri.path().to_string(), 404));
    a.into_response()
}

// The fake's own tests (run with `cargo test --test it oomnitza_fake`).

const TEST_TOKEN: &str = "oomnitza-test-token";
const TEST_PORTION: &str = "6f1c2b8e-3d4a-4f5b-9c6d-7e8f9a0b1c2d";
const TEST_PORTION_2: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// POST `body` to `url` as JSON with `Authorization2: token` (when given); (status, JSON body).
async fn test_post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization2", t);
    }
    let resp = req.send().await.expect("Oomnitza fake answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn test_batch(portion: &str, records: Value) -> Value {
    json!({
        "portion": portion,
        "records": records,
        "sync_field": ["arn"],
        "data_type": "users",
        "insert_only": false,
        "update_only": false,
        "connector_name": "iam-inventory",
        "connector_version": "test",
    })
}

#[tokio::test]
async fn oomnitza_fake_stages_batches_and_applies_them_on_finalize() {
    let fake = Oomnitza::start(TEST_TOKEN).await;
    let bulk = fake.bulk_url();
    let first = test_batch(
        TEST_PORTION,
        json!([{"arn": "arn:b", "name": "bob", "mfa": true}, {"arn": "arn:a", "name": "alice"}]),
    );
    let (status, resp) = test_post(&bulk, Some(TEST_TOKEN), &first).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp, json!({"portion": TEST_PORTION, "status": "queued"}));
    let second = test_batch(
        TEST_PORTION,
        json!([{"arn": "arn:c", "name": "carol", "keys": [1, 2]}]),
    );
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &second).await.0, 200);
    assert!(fake.records("users").is_empty(), "staged, not applied");
    let info = &fake.portions()[0];
    assert_eq!((info.batches, info.records, info.finalized), (2, 3, false));
    assert_eq!(info.extra_keys, vec!["connector_version".to_string()]);

    let (status, resp) = test_post(
        &fake.finalize_url(TEST_PORTION),
        Some(TEST_TOKEN),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        (resp["added"].as_u64(), resp["updated"].as_u64()),
        (Some(3), Some(0))
    );
    let names: Vec<Value> = fake
        .records("users")
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, vec!["alice", "bob", "carol"], "sorted by sync key");
    assert!(fake.portions()[0].finalized);

    // Finalizing twice, a batch to a finalized portion, an unknown portion.
    assert_eq!(
        test_post(
            &fake.finalize_url(TEST_PORTION),
            Some(TEST_TOKEN),
            &json!({})
        )
        .await
        .0,
        409
    );
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &first).await.0, 409);
    assert_eq!(
        test_post(
            &fake.finalize_url(TEST_PORTION_2),
            Some(TEST_TOKEN),
            &json!({})
        )
        .await
        .0,
        404
    );

    // A second run updates (merging fields) and inserts.
    let update = test_batch(
        TEST_PORTION_2,
        json!([{"arn": "arn:b", "name": "bobby"}, {"arn": "arn:d", "name": "dave"}]),
    );
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &update).await.0, 200);
    let (_, resp) = test_post(
        &fake.finalize_url(TEST_PORTION_2),
        Some(TEST_TOKEN),
        &json!({}),
    )
    .await;
    assert_eq!(
        (resp["added"].as_u64(), resp["updated"].as_u64()),
        (Some(1), Some(1))
    );
    let users = fake.records("users");
    assert_eq!(users.len(), 4);
    assert_eq!(
        users[1],
        json!({"arn": "arn:b", "name": "bobby", "mfa": true})
    );
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.1).collect();
    assert_eq!(statuses, vec![200, 200, 200, 409, 409, 404, 200, 200]);
}

#[tokio::test]
async fn oomnitza_fake_refuses_bad_tokens_and_malformed_batches() {
    let fake = Oomnitza::start(TEST_TOKEN).await;
    let bulk = fake.bulk_url();
    let good = test_batch(TEST_PORTION, json!([{"arn": "arn:a"}]));

    let (status, resp) = test_post(&bulk, None, &good).await;
    assert_eq!(status, 401);
    assert_eq!(resp["error"], "Unauthorized");
    assert_eq!(test_post(&bulk, Some("wrong"), &good).await.0, 401);
    assert_eq!(
        test_post(&fake.finalize_url(TEST_PORTION), Some("wrong"), &json!({}))
            .await
            .0,
        401
    );

    for key in [
        "portion",
        "records",
        "sync_field",
        "data_type",
        "connector_name",
    ] {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(key);
        let (status, resp) = test_post(&bulk, Some(TEST_TOKEN), &body).await;
        assert_eq!((status, resp["field"].as_str()), (400, Some(key)), "{resp}");
        assert!(resp["message"].as_str().unwrap().contains(key));
    }
    let mut both = good.clone();
    both["insert_only"] = json!(true);
    both["update_only"] = json!(true);
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &both).await.0, 400);
    let mut not_uuid = good.clone();
    not_uuid["portion"] = json!("run-1");
    assert_eq!(
        test_post(&bulk, Some(TEST_TOKEN), &not_uuid).await.1["field"],
        "portion"
    );
    let empty = test_batch(TEST_PORTION, json!([]));
    assert_eq!(
        test_post(&bulk, Some(TEST_TOKEN), &empty).await.1["field"],
        "records"
    );
    let no_key = test_batch(
        TEST_PORTION,
        json!([{"arn": "arn:a"}, {"arn": null, "name": "x"}]),
    );
    let (status, resp) = test_post(&bulk, Some(TEST_TOKEN), &no_key).await;
    assert_eq!(
        (status, resp["field"].as_str(), resp["record"].as_u64()),
        (400, Some("arn"), Some(1))
    );
    let nested = test_batch(
        TEST_PORTION,
        json!([{"arn": "arn:a", "user": {"name": "x"}}]),
    );
    assert_eq!(
        test_post(&bulk, Some(TEST_TOKEN), &nested).await.1["field"],
        "user"
    );

    let resp = reqwest::Client::new()
        .post(&bulk)
        .header("authorization2", TEST_TOKEN)
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert!(
        fake.portions().is_empty(),
        "nothing staged by refused batches"
    );
}

#[tokio::test]
async fn oomnitza_fake_insert_only_does_not_update_and_update_only_does_not_insert() {
    let fake = Oomnitza::start(TEST_TOKEN).await;
    let bulk = fake.bulk_url();
    let seed = test_batch(TEST_PORTION, json!([{"arn": "arn:a", "name": "alice"}]));
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &seed).await.0, 200);
    assert_eq!(
        test_post(
            &fake.finalize_url(TEST_PORTION),
            Some(TEST_TOKEN),
            &json!({})
        )
        .await
        .0,
        200
    );

    let mut insert_only = test_batch(
        TEST_PORTION_2,
        json!([{"arn": "arn:a", "name": "changed"}, {"arn": "arn:b", "name": "bob"}]),
    );
    insert_only["insert_only"] = json!(true);
    assert_eq!(
        test_post(&bulk, Some(TEST_TOKEN), &insert_only).await.0,
        200
    );
    let (_, resp) = test_post(
        &fake.finalize_url(TEST_PORTION_2),
        Some(TEST_TOKEN),
        &json!({}),
    )
    .await;
    assert_eq!(
        (
            resp["added"].as_u64(),
            resp["updated"].as_u64(),
            resp["skipped"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    assert_eq!(
        fake.records("users"),
        vec![
            json!({"arn": "arn:a", "name": "alice"}),
            json!({"arn": "arn:b", "name": "bob"})
        ]
    );

    let third = "11111111-2222-4333-8444-555555555555";
    let mut update_only = test_batch(
        third,
        json!([{"arn": "arn:b", "name": "bobby"}, {"arn": "arn:c", "name": "carol"}]),
    );
    update_only["update_only"] = json!(true);
    assert_eq!(
        test_post(&bulk, Some(TEST_TOKEN), &update_only).await.0,
        200
    );
    // A batch of the same portion with other settings is refused.
    let mut mixed = update_only.clone();
    mixed["update_only"] = json!(false);
    let (status, resp) = test_post(&bulk, Some(TEST_TOKEN), &mixed).await;
    assert_eq!((status, resp["field"].as_str()), (409, Some("update_only")));
    let (_, resp) = test_post(&fake.finalize_url(third), Some(TEST_TOKEN), &json!({})).await;
    assert_eq!(
        (
            resp["added"].as_u64(),
            resp["updated"].as_u64(),
            resp["skipped"].as_u64()
        ),
        (Some(0), Some(1), Some(1))
    );
    assert_eq!(
        fake.records("users"),
        vec![
            json!({"arn": "arn:a", "name": "alice"}),
            json!({"arn": "arn:b", "name": "bobby"})
        ]
    );
    let p = fake.portions();
    assert!(p[1].insert_only && !p[1].update_only && p[2].update_only);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oomnitza_fake_scripted_faults_and_an_outage_with_recovery() {
    let fake = Oomnitza::start(TEST_TOKEN).await;
    let bulk = fake.bulk_url();
    let batch = test_batch(TEST_PORTION, json!([{"arn": "arn:a"}]));

    fake.push_reply(503);
    fake.push_reply_with_retry_after(429, 7);
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &batch).await.0, 503);
    let resp = reqwest::Client::new()
        .post(&bulk)
        .header("authorization2", TEST_TOKEN)
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert!(fake.portions().is_empty(), "faults stage nothing");
    assert_eq!(test_post(&bulk, Some(TEST_TOKEN), &batch).await.0, 200);

    fake.fail_finalize_once(500);
    let finalize = fake.finalize_url(TEST_PORTION);
    assert_eq!(
        test_post(&finalize, Some(TEST_TOKEN), &json!({})).await.0,
        500
    );
    assert!(fake.records("users").is_empty() && !fake.portions()[0].finalized);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = || {
        client
            .post(&finalize)
            .header("authorization2", TEST_TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    fake.stop().await;
    assert!(!fake.is_up());
    assert!(send().await.is_err(), "down: no answer");
    fake.restart().await;
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    assert_eq!(fake.records("users"), vec![json!({"arn": "arn:a"})]);
}

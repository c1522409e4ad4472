//! A strict fake of Splunk's HTTP Event Collector (HEC) on 127.0.0.1, written from Splunk's wire
//! contract: `POST /services/collector/event` (also `/services/collector` and `…/event/1.0`),
//! `POST /services/collector/ack` and `GET /services/collector/health` (also `…/health/1.0`).
//!
//! What it enforces, and where each rule comes from (sources checked for this file):
//!
//! - Status codes and texts, the HEC error table of "Troubleshoot HTTP Event Collector"
//!   (docs.splunk.com/Documentation/Splunk/latest/Data/TroubleshootHTTPEventCollector), as mirrored
//!   row by row in the SplunkAdmins app's `lookups/splunkadmins_hec_reply_code_lookup.csv`
//!   (github.com/gjanders/SplunkAdmins): see [`CODES`]. Bodies are `{"text":…,"code":…}`, and a
//!   failure that belongs to one event of a batch adds `"invalid-event-number"`.
//! - Authentication, "Format events for HTTP Event Collector": `Authorization: Splunk <token>`.
//!   Missing header 401 code 2, a header not of that form 401 code 3, an unknown token 403 code 4
//!   (also fluent/fluent-bit PR #12043, aligning with Splunk), a disabled token 403 code 1, a token
//!   in the query string while query-string auth is off 400 code 16. Real HEC also accepts Basic
//!   auth with the token as password; this fake does not (the client under test uses `Splunk`).
//! - Envelope, same page: `time` (epoch seconds, `<sec>.<ms>`), `host`, `source`, `sourcetype`,
//!   `index`, `event` (required; string, number or object), `fields` (a flat object of index-time
//!   fields). A batch is JSON objects one after another (whitespace or nothing between them), not a
//!   JSON array ("Example 3: Batched data"; splunk/pytest-splunk-addon PR #904 moved to it "to
//!   conform to the specification"). NOTE: a Splunk engineer (open-telemetry-collector-contrib
//!   issue #43941) and a third-party mock measured on Splunk 10.4 say real HEC *accepts* a top-level
//!   array; this fake rejects it (400 code 6), as asked, to hold the client to the documented form.
//! - `time`: a JSON number, or a string of digits with an optional fraction (Docker's Splunk
//!   logging driver sends strings; open-telemetry-collector-contrib issue #2158). Anything else, and
//!   a number in exponent notation (firezone/firezone PR #14129: `1.75248e9` was refused), is
//!   400 code 15 "Error in handling indexed fields" with the event's number
//!   (splunk/splunk-library-dotnetlogging issue #69: a locale-formatted time gave code 15,
//!   invalid-event-number 0). Not confirmed: negative times and `"time": null` (refused here).
//! - `fields` must be a flat object (open-telemetry-collector-contrib PR #18068 follows the docs:
//!   nested → code 15). Values allowed here: strings, numbers, arrays of those.
//! - Blank event: `""` is code 13 (documented text "Event field cannot be blank"). Not confirmed:
//!   whether null, whitespace, `{}` and `[]` count as blank; this fake says they do.
//! - Non-string `host`/`source`/`sourcetype`/`index`: not confirmed; refused here as code 6.
//! - `invalid-event-number` is 0-based: the first event that failed
//!   (splunk/kafka-connect-splunk issue #215 shows `{"text":"Invalid data format","code":6,
//!   "invalid-event-number":30}` for a 500-event batch). Quirk, seen in Splunk's own
//!   splunk-connect-for-syslog docs: code 7 "Incorrect index" reports one higher (a single event
//!   gets `"invalid-event-number":1`). Modelled.
//! - Events before the bad one: the docs do not say. Splunk's own engineers say HEC processes a
//!   batch in order and stops at the bad event, the ones before it having been taken
//!   (open-telemetry-collector-contrib issue #36113, vectordotdev/vector issue #11434). So by
//!   default the events before `invalid-event-number` ARE indexed, and a client that resends the
//!   whole batch makes duplicates; [`Hec::set_index_prefix_on_reject`]`(false)` makes a rejected
//!   request index nothing.
//! - Indexer acknowledgement, "About HTTP Event Collector Indexer Acknowledgment" (AboutHECIDXAck)
//!   and vectordotdev/vector RFC 2021-10-29-9465 (observed on Splunk 7.3.2): with ack on, every
//!   event request needs a channel, `X-Splunk-Request-Channel: <GUID>` or `?channel=<GUID>`
//!   (missing: 400 code 10; not a GUID: 400 code 11). Success answers
//!   `{"text":"Success","code":0,"ackId":N}`, ackIds counted per channel from 0.
//!   `POST /services/collector/ack?channel=<GUID>` with `{"acks":[0,1]}` answers
//!   `{"acks":{"0":true,"1":false}}`; once an id has been reported true it is forgotten and reads
//!   false afterwards (vector RFC, observed). Ack on a token without ack: 400 code 14.
//!   Unknown ids read false (not confirmed, but it is what "not yet indexed" looks like).
//! - Health: `GET /services/collector/health` 200 `{"text":"HEC is healthy","code":17}`; unhealthy
//!   503 code 18 "HEC is unhealthy, queues are full". No token needed (Axiom's HEC-compatible API
//!   docs; Splunk's REST reference lists it without auth). While unhealthy, event posts get 503
//!   code 9 "Server is busy" (an assumption: full queues are what "busy" means).
//! - `Content-Encoding: gzip` bodies are accepted (Cribl, Splunk's loggers); other encodings and
//!   undecodable bodies are 400 code 6 (not confirmed). An empty body is 400 code 5 "No data".
//!
//! Not modelled: `/services/collector/raw`, Basic and query-string auth, body size limits, channel
//! limits and ack expiry, per-event `Server is busy` with an event number (issue #36113 shows it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::lifecycle::Lifecycle;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value};

/// Splunk's HEC status codes: (code, HTTP status, text), from the troubleshooting table.
/// (The table also lists 21 "Invalid token" and 22 "Token disabled" with 400, for the health
/// endpoint's token check; not used here.)
pub const CODES: &[(u32, u16, &str)] = &[
    (0, 200, "Success"),
    (1, 403, "Token disabled"),
    (2, 401, "Token is required"),
    (3, 401, "Invalid authorization"),
    (4, 403, "Invalid token"),
    (5, 400, "No data"),
    (6, 400, "Invalid data format"),
    (7, 400, "Incorrect index"),
    (8, 500, "Internal server error"),
    (9, 503, "Server is busy"),
    (10, 400, "Data channel is missing"),
    (11, 400, "Invalid data channel"),
    (12, 400, "Event field is required"),
    (13, 400, "Event field cannot be blank"),
    (14, 400, "ACK is disabled"),
    (15, 400, "Error in handling indexed fields"),
    (16, 400, "Query string authorization is not enabled"),
    (17, 200, "HEC is healthy"),
    (18, 503, "HEC is unhealthy, queues are full"),
    (19, 503, "HEC is unhealthy, ack service unavailable"),
    (
        20,
        503,
        "HEC is unhealthy, queues are full, ack service unavailable",
    ),
];

/// The HTTP status and text of a HEC code (panics on a code not in [`CODES`]).
pub fn code_info(code: u32) -> (u16, &'static str) {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, s, t)| (*s, *t))
        .unwrap_or_else(|| panic!("no HEC code {code}"))
}

/// How the fake answers the next event POST (scripted with [`Hec::push_reply`]).
#[derive(Debug, Clone)]
pub enum Reply {
    /// Validate and index as usual.
    Normal,
    /// This HEC code with its documented HTTP status and text (e.g. `Code(9)`: 503 "Server is
    /// busy"); nothing is indexed.
    Code(u32),
    /// An HTTP status; nothing is indexed. 2xx means [`Reply::Normal`]; 400, 401, 403, 500 and 503
    /// carry Splunk's body for codes 6, 3, 4, 8 and 9; any other status (429, 502, …) carries a
    /// plain-text body, as from a proxy in front of HEC (Splunk documents no HEC code for them).
    Status(u16),
    /// As [`Reply::Status`], with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Take the whole server down (as [`Hec::stop`]) while this request is in flight: the client
    /// gets no response and nothing is indexed. [`Hec::restart`] brings it back.
    Die,
}

/// One event envelope as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `time` as epoch seconds, when it was a number or a numeric string.
    pub time: Option<f64>,
    /// `time` exactly as sent (number or string).
    pub time_raw: Option<Value>,
    pub host: Option<String>,
    pub source: Option<String>,
    pub sourcetype: Option<String>,
    pub index: Option<String>,
    pub fields: Option<Value>,
    /// `Value::Null` when the envelope had none.
    pub event: Value,
    /// The whole envelope object.
    pub raw: Value,
}

/// One request to the event endpoint and how it was answered.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub path: String,
    pub headers: HeaderMap,
    /// From `X-Splunk-Request-Channel` or `?channel=`.
    pub channel: Option<String>,
    /// On success, all envelopes; on a per-event rejection, the ones before the bad event; on any
    /// other answer, whatever objects could be read from the body.
    pub envelopes: Vec<Envelope>,
    /// 0 when the connection was dropped without a response ([`Reply::Die`]).
    pub status: u16,
    /// The JSON body answered (`Null` when not JSON).
    pub response: Value,
}

type Predicate = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

struct Pending {
    polls: usize,
    lost: bool,
}

#[derive(Default)]
struct Channel {
    next: u64,
    pending: BTreeMap<u64, Pending>,
}

struct Inner {
    token: String,
    ack_enabled: bool,
    token_disabled: bool,
    healthy: bool,
    allowed_indexes: Option<Vec<String>>,
    ack_delay_polls: usize,
    lose_acks: bool,
    index_prefix_on_reject: bool,
    script: VecDeque<Reply>,
    rejects: Vec<Predicate>,
    channels: HashMap<String, Channel>,
    indexed: Vec<Envelope>,
    lost: Vec<Envelope>,
    acked: Vec<(String, u64)>,
    requests: Vec<ReceivedRequest>,
    ack_polls: usize,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    life: Arc<Lifecycle>,
    generation: u64,
}

impl Ctx {
    /// A handler of a server that is no longer up drops its connection without a response.
    fn check_live(&self) {
        self.life.check_live(self.generation, "HEC fake is down");
    }
}

/// The fake HEC. Dropping it stops the server.
pub struct Hec {
    /// Base URL, `http://127.0.0.1:PORT`; events go to `{url}/services/collector/event`.
    pub url: String,
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    life: Arc<Lifecycle>,
}

impl Hec {
    /// A HEC accepting `token`, with indexer acknowledgement on or off for it. Healthy, acks turn
    /// true on the second poll, and the events before a rejected one are indexed.
    pub async fn start(token: &str, ack_enabled: bool) -> Hec {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            ack_enabled,
            token_disabled: false,
            healthy: true,
            allowed_indexes: None,
            ack_delay_polls: 1,
            lose_acks: false,
            index_prefix_on_reject: true,
            script: VecDeque::new(),
            rejects: Vec::new(),
            channels: HashMap::new(),
            indexed: Vec::new(),
            lost: Vec::new(),
            acked: Vec::new(),
            requests: Vec::new(),
            ack_polls: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind HEC fake");
        let addr = listener.local_addr().expect("addr");
        let hec = Hec {
            url: format!("http://{addr}"),
            addr,
            inner,
            life: Arc::new(Lifecycle::default()),
        };
        hec.serve(listener);
        hec
    }

    /// `{url}/services/collector/event`.
    pub fn event_url(&self) -> String {
        format!("{}/services/collector/event", self.url)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let generation = self.life.next_generation();
        let ctx = Ctx {
            inner: self.inner.clone(),
            life: self.life.clone(),
            generation,
        };
        let app = axum::Router::new()
            .route("/services/collector", post(event))
            .route("/services/collector/event", post(event))
            .route("/services/collector/event/1.0", post(event))
            .route("/services/collector/ack", post(ack))
            .route("/services/collector/health", get(health))
            .route("/services/collector/health/1.0", get(health))
            .fallback(not_found)
            .layer(DefaultBodyLimit::disable())
            .with_state(ctx);
        self.life.serve(generation, listener, app);
    }

    /// An outage: stop listening (connections are refused), close idle keep-alive connections and
    /// drop requests in flight without a response. State (indexed events, acks) is kept.
    pub async fn stop(&self) {
        self.life.stop().await;
    }

    /// Recovery: listen again on the same port, with the state as it was. No-op when up.
    pub async fn restart(&self) {
        if let Some(listener) = self.life.rebind(self.addr, "HEC").await {
            self.serve(listener);
        }
    }

    pub fn is_up(&self) -> bool {
        self.life.is_up()
    }

    /// Replies for the next event POSTs, in order; after them, [`Reply::Normal`].
    pub fn push_reply(&self, reply: Reply) {
        self.inner.lock().unwrap().script.push_back(reply);
    }

    /// Refuse, as 400 code 6 with its `invalid-event-number`, any event whose `event` value
    /// matches. Rules add up.
    pub fn reject_events_where(&self, pred: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        self.inner.lock().unwrap().rejects.push(Arc::new(pred));
    }

    /// Refuse events whose `event` has `value` at the JSON pointer `pointer` (e.g. `/user/uid`).
    pub fn reject_events_with(&self, pointer: &str, value: impl Into<Value>) {
        let (pointer, value) = (pointer.to_string(), value.into());
        self.reject_events_where(move |ev| ev.pointer(&pointer) == Some(&value));
    }

    pub fn clear_rejections(&self) {
        self.inner.lock().unwrap().rejects.clear();
    }

    /// How many polls of an ackId answer false before one answers true (default 1).
    pub fn set_ack_delay_polls(&self, n: usize) {
        self.inner.lock().unwrap().ack_delay_polls = n;
    }

    /// While on, requests accepted (200 with an ackId) are dropped before indexing: their ackIds
    /// never turn true and their events go to [`Hec::lost`], not [`Hec::indexed`]. Needs ack on.
    pub fn lose_acks(&self, on: bool) {
        self.inner.lock().unwrap().lose_acks = on;
    }

    /// Unhealthy: health answers 503 code 18 and event posts 503 code 9.
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.lock().unwrap().healthy = healthy;
    }

    /// A disabled token: 403 code 1 on events and acks.
    pub fn set_token_disabled(&self, disabled: bool) {
        self.inner.lock().unwrap().token_disabled = disabled;
    }

    /// The token's allowed indexes: an envelope naming another `index` gets 400 code 7. Default:
    /// any index.
    pub fn set_allowed_indexes(&self, indexes: &[&str]) {
        self.inner.lock().unwrap().allowed_indexes =
            Some(indexes.iter().map(|s| s.to_string()).collect());
    }

    /// Whether a per-event rejection indexes the events before the bad one (default true, see the
    /// module notes).
    pub fn set_index_prefix_on_reject(&self, on: bool) {
        self.inner.lock().unwrap().index_prefix_on_reject = on;
    }

    /// Every envelope indexed, in order (duplicates included: a resent event appears twice).
    pub fn indexed(&self) -> Vec<Envelope> {
        self.inner.lock().unwrap().indexed.clone()
    }

    /// The `event` values of [`Hec::indexed`].
    pub fn indexed_events(&self) -> Vec<Value> {
        self.indexed().into_iter().map(|e| e.event).collect()
    }

    /// Envelopes accepted while [`Hec::lose_acks`] was on (answered 200, never indexed).
    pub fn lost(&self) -> Vec<Envelope> {
        self.inner.lock().unwrap().lost.clone()
    }

    /// (channel, ackId) pairs reported true to a poll, in order.
    pub fn acked_ids(&self) -> Vec<(String, u64)> {
        self.inner.lock().unwrap().acked.clone()
    }

    /// Requests to the event endpoints, in order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// POSTs to `/services/collector/ack`, whatever their answer.
    pub fn ack_polls(&self) -> usize {
        self.inner.lock().unwrap().ack_polls
    }

    /// Forgets what was received and indexed (acks in flight are kept): for benchmarks, where
    /// keeping every envelope would make later requests slower than earlier ones.
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap();
        g.indexed.clear();
        g.lost.clear();
        g.requests.clear();
    }
}

impl Drop for Hec {
    fn drop(&mut self) {
        self.life.abort();
    }
}

/// An answer before it is sent.
struct Answer {
    status: u16,
    body: String,
    json: bool,
    retry_after: Option<u64>,
}

impl Answer {
    fn code(code: u32) -> Answer {
        Answer::code_with(code, None)
    }

    /// `{"text":…,"code":…}` plus one numeric key, in Splunk's key order.
    fn code_with(code: u32, extra: Option<(&str, u64)>) -> Answer {
        let (status, text) = code_info(code);
        let text = serde_json::to_string(text).unwrap();
        let body = match extra {
            Some((key, n)) => format!(r#"{{"text":{text},"code":{code},"{key}":{n}}}"#),
            None => format!(r#"{{"text":{text},"code":{code}}}"#),
        };
        Answer {
            status,
            body,
            json: true,
            retry_after: None,
        }
    }

    fn status(status: u16) -> Answer {
        match status {
            400 => Answer::code(6),
            401 => Answer::code(3),
            403 => Answer::code(4),
            500 => Answer::code(8),
            503 => Answer::code(9),
            s => Answer {
                status: s,
                body: StatusCode::from_u16(s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("error")
                    .to_string(),
                json: false,
                retry_after: None,
            },
        }
    }

    fn into_response(self) -> Response {
        let content_type = if self.json {
            "application/json; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).expect("valid status"))
            .header(header::CONTENT_TYPE, content_type);
        if let Some(secs) = self.retry_after {
            b = b.header(header::RETRY_AFTER, secs.to_string());
        }
        b.body(Body::from(self.body)).unwrap()
    }
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

fn channel_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    headers
        .get("x-splunk-request-channel")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| query_param(uri, "channel"))
}

/// 8-4-4-4-12 hex digits.
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn authenticate(g: &Inner, headers: &HeaderMap, uri: &Uri) -> Result<(), u32> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(if query_param(uri, "token").is_some() {
            16
        } else {
            2
        });
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Splunk "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(3u32)?;
    if token != g.token {
        return Err(4);
    }
    if g.token_disabled {
        return Err(1);
    }
    Ok(())
}

/// The channel check when ack is on (a channel sent with ack off must still be a GUID).
fn check_channel(ack_enabled: bool, channel: Option<&str>) -> Result<(), u32> {
    match channel {
        None if ack_enabled => Err(10),
        Some(c) if !is_guid(c) => Err(11),
        _ => Ok(()),
    }
}

/// The body as text: identity or gzip, UTF-8.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<String, ()> {
    let raw = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None | Some(b"identity") => body.to_vec(),
        Some(b"gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|_| ())?;
            out
        }
        Some(_) => return Err(()),
    };
    String::from_utf8(raw).map_err(|_| ())
}

/// One value of the body stream.
enum Item<'a> {
    Object(Map<String, Value>, &'a str),
    /// A JSON value that is not an object (an array, a string, …).
    NotObject,
    /// Not JSON from here on.
    Malformed,
}

/// The JSON values of a HEC body, one after another; stops after the first malformed one.
fn items(text: &str) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(Value::Object(map))) => {
                out.push(Item::Object(map, &text[start..stream.byte_offset()]))
            }
            Some(Ok(_)) => out.push(Item::NotObject),
            Some(Err(_)) => {
                out.push(Item::Malformed);
                break;
            }
        }
    }
    out
}

/// The raw text of the top-level member `key` of `obj`, the text of a well-formed JSON object.
fn raw_member<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    let b = obj.as_bytes();
    let ws = |mut i: usize| {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        i
    };
    let mut i = ws(obj.find('{')? + 1);
    while b.get(i) == Some(&b'"') {
        let key_end = string_end(b, i)?;
        let name: String = serde_json::from_str(&obj[i..key_end]).ok()?;
        let start = ws(ws(key_end) + 1); // past the colon
        let end = value_end(b, start)?;
        if name == key {
            return Some(&obj[start..end]);
        }
        i = ws(end);
        if b.get(i) == Some(&b',') {
            i = ws(i + 1);
        }
    }
    None
}

/// Index just past the string starting with the quote at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Index just past the JSON value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}') && !b[j].is_ascii_whitespace() {
                j += 1;
            }
            Some(j)
        }
    }
}

/// `time` as epoch seconds: a non-negative number without exponent, or a string of digits with an
/// optional fraction.
fn parse_time(value: &Value, raw: Option<&str>) -> Option<f64> {
    match value {
        Value::Number(n) => {
            if raw.is_some_and(|r| r.contains(['e', 'E'])) {
                return None;
            }
            n.as_f64().filter(|t| t.is_finite() && *t >= 0.0)
        }
        Value::String(s) => {
            let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
            let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            if digits(int) && digits(frac) {
                s.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

fn string_member(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Envelope {
    fn from_object(map: &Map<String, Value>, raw_text: &str) -> Envelope {
        let time_raw = map.get("time").cloned();
        Envelope {
            time: time_raw
                .as_ref()
                .and_then(|t| parse_time(t, raw_member(raw_text, "time"))),
            time_raw,
            host: string_member(map, "host"),
            source: string_member(map, "source"),
            sourcetype: string_member(map, "sourcetype"),
            index: string_member(map, "index"),
            fields: map.get("fields").cloned(),
            event: map.get("event").cloned().unwrap_or(Value::Null),
            raw: Value::Object(map.clone()),
        }
    }
}

fn blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn flat_fields(v: &Value) -> bool {
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_));
    match v {
        Value::Object(m) => m
            .values()
            .all(|x| scalar(x) || matches!(x, Value::Array(a) if a.iter().all(scalar))),
        _ => false,
    }
}

/// The HEC code refusing this envelope, if any.
fn validate(g: &Inner, map: &Map<String, Value>, raw_text: &str) -> Option<u32> {
    let Some(event) = map.get("event") else {
        return Some(12);
    };
    if blank(event) {
        return Some(13);
    }
    if let Some(t) = map.get("time")
        && parse_time(t, raw_member(raw_text, "time")).is_none()
    {
        return Some(15);
    }
    if ["host", "source", "sourcetype", "index"]
        .iter()
        .any(|k| map.get(*k).is_some_and(|v| !v.is_string()))
    {
        return Some(6);
    }
    if map.get("fields").is_some_and(|f| !flat_fields(f)) {
        return Some(15);
    }
    if let (Some(allowed), Some(index)) = (&g.allowed_indexes, map.get("index"))
        && !allowed.iter().any(|a| Some(a.as_str()) == index.as_str())
    {
        return Some(7);
    }
    if g.rejects.iter().any(|p| p(event)) {
        return Some(6);
    }
    None
}

/// Index accepted envelopes (or lose them) and, with ack on, register an ackId for them.
fn accept(g: &mut Inner, channel: Option<&str>, envelopes: &[Envelope], ack: bool) -> Option<u64> {
    let lose = g.ack_enabled && g.lose_acks;
    if lose {
        g.lost.extend_from_slice(envelopes);
    } else {
        g.indexed.extend_from_slice(envelopes);
    }
    if !(ack && g.ack_enabled) {
        return None;
    }
    let ch = g
        .channels
        .entry(channel.expect("channel checked").to_string())
        .or_default();
    let id = ch.next;
    ch.next += 1;
    ch.pending.insert(
        id,
        Pending {
            polls: 0,
            lost: lose,
        },
    );
    Some(id)
}

/// Everything an event POST is answered with, and the envelopes to record.
fn process_event(
    g: &mut Inner,
    uri: &Uri,
    headers: &HeaderMap,
    channel: Option<&str>,
    body: &[u8],
) -> (Result<Answer, ()>, Vec<Envelope>) {
    let text = decode(headers, body);
    let readable = || -> Vec<Envelope> {
        let Ok(text) = &text else { return Vec::new() };
        items(text)
            .iter()
            .filter_map(|i| match i {
                Item::Object(m, raw) => Some(Envelope::from_object(m, raw)),
                _ => None,
            })
            .collect()
    };
    match g.script.pop_front() {
        None | Some(Reply::Normal) => {}
        Some(Reply::Code(c)) => return (Ok(Answer::code(c)), readable()),
        Some(Reply::Status(s)) if !(200..300).contains(&s) => {
            return (Ok(Answer::status(s)), readable());
        }
        Some(Reply::Status(_)) => {}
        Some(Reply::RetryAfter(s, secs)) => {
            let mut a = Answer::status(s);
            a.retry_after = Some(secs);
            return (Ok(a), readable());
        }
        Some(Reply::Die) => return (Err(()), readable()),
    }
    if let Err(code) = authenticate(g, headers, uri) {
        return (Ok(Answer::code(code)), Vec::new());
    }
    if !g.healthy {
        return (Ok(Answer::code(9)), Vec::new());
    }
    if let Err(code) = check_channel(g.ack_enabled, channel) {
        return (Ok(Answer::code(code)), Vec::new());
    }
    let Ok(text) = &text else {
        return (Ok(Answer::code(6)), Vec::new());
    };
    if text.trim().is_empty() {
        return (Ok(Answer::code(5)), Vec::new());
    }
    let mut good = Vec::new();
    for (n, item) in items(text).iter().enumerate() {
        let refused = match item {
            Item::Object(map, raw) => validate(g, map, raw),
            Item::NotObject | Item::Malformed => Some(6),
        };
        match (refused, item) {
            (None, Item::Object(map, raw)) => good.push(Envelope::from_object(map, raw)),
            (Some(code), _) => {
                if g.index_prefix_on_reject {
                    accept(g, channel, &good, false);
                }
                // Splunk reports "Incorrect index" one higher than the other per-event errors.
                let number = n as u64 + u64::from(code == 7);
                let answer = Answer::code_with(code, Some(("invalid-event-number", number)));
                return (Ok(answer), good);
            }
            (None, _) => unreachable!("only objects validate"),
        }
    }
    let answer = match accept(g, channel, &good, true) {
        Some(id) => Answer::code_with(0, Some(("ackId", id))),
        None => Answer::code(0),
    };
    (Ok(answer), good)
}

async fn event(State(ctx): State<Ctx>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    ctx.check_live();
    let channel = channel_of(&headers, &uri);
    let answer = {
        let mut g = ctx.inner.lock().unwrap();
        let (answer, envelopes) = process_event(&mut g, &uri, &headers, channel.as_deref(), &body);
        let (status, response) = match &answer {
            Ok(a) => (
                a.status,
                serde_json::from_str(&a.body).unwrap_or(Value::Null),
            ),
            Err(()) => (0, Value::Null),
        };
        g.requests.push(ReceivedRequest {
            path: uri.path().to_string(),
            headers,
            channel,
            envelopes,
            status,
            response,
        });
        answer
    };
    match answer {
        Ok(a) => a.into_response(),
        Err(()) => {
            // Reply::Die: the server goes down with this request in flight.
            drop(ctx.life.shut());
            std::panic::resume_unwind(Box::new("HEC fake killed mid-request"));
        }
    }
}

fn poll_acks(g: &mut Inner, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Err(code) = authenticate(g, headers, uri) {
        return Answer::code(code);
    }
    if !g.ack_enabled {
        return Answer::code(14);
    }
    let channel = channel_of(headers, uri);
    if let Err(code) = check_channel(true, channel.as_deref()) {
        return Answer::code(code);
    }
    let channel = channel.expect("checked");
    let ids: Option<Vec<u64>> = decode(headers, body)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v.get("acks")?
                .as_array()?
                .iter()
                .map(Value::as_u64)
                .collect()
        });
    let Some(ids) = ids else {
        return Answer::code(6);
    };
    let delay = g.ack_delay_polls;
    let mut answers = Vec::new();
    for id in ids {
        let done = match g.channels.get_mut(&channel) {
            Some(ch) => match ch.pending.get_mut(&id) {
                Some(p) if !p.lost && p.polls >= delay => {
                    ch.pending.remove(&id);
                    true
                }
                Some(p) => {
                    p.polls += 1;
                    false
                }
                None => false,
            },
            None => false,
        };
        if done {
            g.acked.push((channel.clone(), id));
        }
        answers.push(format!(r#""{id}":{done}"#));
    }
    Answer {
        status: 200,
        body: format!(r#"{{"acks":{{{}}}}}"#, answers.join(",")),
        json: true,
        retry_after: None,
    }
}

async fn ack(State(ctx): State<Ctx>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    ctx.check_live();
    let answer = {
        let mut g = ctx.inner.lock().unwrap();
        g.ack_polls += 1;
        poll_acks(&mut g, &uri, &headers, &body)
    };
    answer.into_response()
}

async fn health(State(ctx): State<Ctx>) -> Response {
    ctx.check_live();
    let healthy = ctx.inner.lock().unwrap().healthy;
    Answer::code(if healthy { 17 } else { 18 }).into_response()
}

async fn not_found() -> Response {
    Answer::status(404).into_response()
}

// The fake's own tests (run with `cargo test --test it hec_fake`).

const TEST_TOKEN: &str = "00000000-1111-2222-3333-444444444444";
const TEST_CHANNEL: &str = "FE0ECFAD-13D5-401B-847D-77833BD77131";

/// POST `body` to `url`; (status, JSON body).
async fn test_post(
    url: &str,
    auth: Option<&str>,
    channel: Option<&str>,
    body: impl Into<reqwest::Body>,
    gzip: bool,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(c) = channel {
        req = req.header("x-splunk-request-channel", c);
    }
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.send().await.expect("HEC fake answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn test_auth() -> String {
    format!("Splunk {TEST_TOKEN}")
}

#[tokio::test]
async fn hec_fake_accepts_concatenated_envelopes_plain_and_gzip() {
    let hec = Hec::start(TEST_TOKEN, false).await;
    let body = concat!(
        r#"{"time":1700000000.125,"host":"h","source":"iam-inventory","sourcetype":"ocsf:5003","index":"main","event":{"user":{"uid":"a"}}}"#,
        "\n",
        r#"{"time":"1700000001","event":{"user":{"uid":"b"}},"fields":{"account":"123","tags":["x","y"]}}"#,
        r#"{"event":"plain string"}"#,
    );
    let (status, resp) = test_post(&hec.event_url(), Some(&test_auth()), None, body, false).await;
    assert_eq!(
        (status, resp),
        (200, serde_json::json!({"text":"Success","code":0}))
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut gz,
        br#"{"time":1700000002,"event":{"user":{"uid":"c"}}}"#,
    )
    .unwrap();
    let (status, _) = test_post(
        &hec.event_url(),
        Some(&test_auth()),
        None,
        gz.finish().unwrap(),
        true,
    )
    .await;
    assert_eq!(status, 200);

    let indexed = hec.indexed();
    assert_eq!(indexed.len(), 4);
    assert_eq!(indexed[0].time, Some(1700000000.125));
    assert_eq!(indexed[0].sourcetype.as_deref(), Some("ocsf:5003"));
    assert_eq!(indexed[1].time, Some(1700000001.0));
    assert_eq!(indexed[1].time_raw, Some(Value::from("1700000001")));
    assert_eq!(indexed[3].event["user"]["uid"], "c");
    assert_eq!(hec.requests().len(), 2);
}

#[tokio::test]
async fn hec_fake_refuses_bad_authorization_with_splunk_codes() {
    let hec = Hec::start(TEST_TOKEN, false).await;
    let url = hec.event_url();
    let body = r#"{"event":"x"}"#;
    let cases = [
        (None, 401, 2),
        (Some(TEST_TOKEN.to_string()), 401, 3),
        (Some("Bearer x".to_string()), 401, 3),
        (Some("Splunk wrong".to_string()), 403, 4),
    ];
    for (auth, want_status, want_code) in cases {
        let (status, resp) = test_post(&url, auth.as_deref(), None, body, false).await;
        assert_eq!(
            (status, resp["code"].as_u64()),
            (want_status, Some(want_code))
        );
    }
    let (status, resp) = test_post(&format!("{url}?token=x"), None, None, body, false).await;
    assert_eq!((status, resp["code"].as_u64()), (400, Some(16)));
    hec.set_token_disabled(true);
    let (status, resp) = test_post(&url, Some(&test_auth()), None, body, false).await;
    assert_eq!((status, resp["code"].as_u64()), (403, Some(1)));
    assert!(hec.indexed().is_empty());
}

#[tokio::test]
async fn hec_fake_refuses_arrays_and_bad_envelopes_with_the_event_number() {
    let hec = Hec::start(TEST_TOKEN, false).await;
    let url = hec.event_url();
    let auth = test_auth();
    let post = |body: &'static str| test_post(&url, Some(&auth), None, body, false);

    let (status, resp) = post(r#"[{"event":"a"},{"event":"b"}]"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        resp,
        serde_json::json!({"text":"Invalid data format","code":6,"invalid-event-number":0})
    );
    assert_eq!(post("").await.1["code"], 5);
    assert_eq!(
        post(r#"{"event":"a"},{"event":"b"}"#).await.1["invalid-event-number"],
        1
    );
    assert_eq!(post(r#"{"event":"a"}{"host":"h"}"#).await.1["code"], 12);
    assert_eq!(post(r#"{"event":""}"#).await.1["code"], 13);
    let bad_time = post(r#"{"event":"a","time":"yesterday"}"#).await;
    assert_eq!((bad_time.0, bad_time.1["code"].as_u64()), (400, Some(15)));
    assert_eq!(post(r#"{"event":"a","time":1.7e9}"#).await.1["code"], 15);
    assert_eq!(
        post(r#"{"event":"a","fields":{"n":{"x":1}}}"#).await.1["code"],
        15
    );
    // Only the comma-separated and the missing-event batches had a good event before the bad
    // one; it was indexed (the default).
    assert_eq!(
        hec.indexed_events(),
        vec![Value::from("a"), Value::from("a")]
    );

    hec.reject_events_with("/user/uid", "poison");
    let (status, resp) = post(concat!(
        r#"{"event":{"user":{"uid":"ok1"}}}"#,
        r#"{"event":{"user":{"uid":"ok2"}}}"#,
        r#"{"event":{"user":{"uid":"poison"}}}"#,
        r#"{"event":{"user":{"uid":"after"}}}"#,
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(resp["code"], 6);
    assert_eq!(resp["invalid-event-number"], 2);
    assert_eq!(
        hec.indexed().len(),
        4,
        "the two events before the poison are indexed"
    );

    hec.set_index_prefix_on_reject(false);
    hec.set_allowed_indexes(&["main"]);
    let (_, resp) = post(r#"{"event":"a","index":"main"}{"event":"b","index":"other"}"#).await;
    assert_eq!(
        resp,
        serde_json::json!({"text":"Incorrect index","code":7,"invalid-event-number":2})
    );
    assert_eq!(
        hec.indexed().len(),
        4,
        "nothing indexed with the prefix rule off"
    );
}

#[tokio::test]
async fn hec_fake_ack_ids_count_per_channel_and_turn_true_after_the_delay() {
    let hec = Hec::start(TEST_TOKEN, true).await;
    let url = hec.event_url();
    let ack_url = format!("{}/services/collector/ack", hec.url);
    let auth = test_auth();
    let body = r#"{"event":"x"}"#;

    let (status, resp) = test_post(&url, Some(&auth), None, body, false).await;
    assert_eq!((status, resp["code"].as_u64()), (400, Some(10)));
    let (status, resp) = test_post(&url, Some(&auth), Some("not-a-guid"), body, false).await;
    assert_eq!((status, resp["code"].as_u64()), (400, Some(11)));

    let (_, first) = test_post(&url, Some(&auth), Some(TEST_CHANNEL), body, false).await;
    assert_eq!(
        first,
        serde_json::json!({"text":"Success","code":0,"ackId":0})
    );
    let channel_in_query = format!("{url}?channel={TEST_CHANNEL}");
    let (_, second) = test_post(&channel_in_query, Some(&auth), None, body, false).await;
    assert_eq!(second["ackId"], 1);

    let poll = |ids: &'static str| test_post(&ack_url, Some(&auth), Some(TEST_CHANNEL), ids, false);
    assert_eq!(
        poll(r#"{"acks":[0]}"#).await.1,
        serde_json::json!({"acks":{"0":false}})
    );
    assert_eq!(
        poll(r#"{"acks":[0,1]}"#).await.1,
        serde_json::json!({"acks":{"0":true,"1":false}})
    );
    // Reported true once, then forgotten.
    assert_eq!(
        poll(r#"{"acks":[0,1]}"#).await.1,
        serde_json::json!({"acks":{"0":false,"1":true}})
    );
    assert_eq!(hec.ack_polls(), 3);
    assert_eq!(
        hec.acked_ids(),
        vec![(TEST_CHANNEL.to_string(), 0), (TEST_CHANNEL.to_string(), 1)]
    );

    hec.lose_acks(true);
    let (_, lost) = test_post(&url, Some(&auth), Some(TEST_CHANNEL), body, false).await;
    assert_eq!(lost["ackId"], 2);
    for _ in 0..3 {
        assert_eq!(poll(r#"{"acks":[2]}"#).await.1["acks"]["2"], false);
    }
    assert_eq!((hec.indexed().len(), hec.lost().len()), (2, 1));

    let no_ack = Hec::start(TEST_TOKEN, false).await;
    let (status, resp) = test_post(
        &format!("{}/services/collector/ack", no_ack.url),
        Some(&auth),
        Some(TEST_CHANNEL),
        r#"{"acks":[0]}"#,
        false,
    )
    .await;
    assert_eq!((status, resp["code"].as_u64()), (400, Some(14)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_fake_scripted_faults_health_and_an_outage_with_recovery() {
    let hec = Hec::start(TEST_TOKEN, false).await;
    let url = hec.event_url();
    let auth = test_auth();
    let body = r#"{"event":"x"}"#;

    hec.push_reply(Reply::Code(9));
    hec.push_reply(Reply::Status(500));
    hec.push_reply(Reply::RetryAfter(429, 3));
    let (s1, r1) = test_post(&url, Some(&auth), None, body, false).await;
    let (s2, r2) = test_post(&url, Some(&auth), None, body, false).await;
    let resp = reqwest::Client::new()
        .post(&url)
        .header("authorization", &auth)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!((s1, r1["code"].as_u64()), (503, Some(9)));
    assert_eq!((s2, r2["code"].as_u64()), (500, Some(8)));
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert!(hec.indexed().is_empty());

    let health_url = format!("{}/services/collector/health", hec.url);
    let health = reqwest::get(&health_url).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        health.text().await.unwrap(),
        r#"{"text":"HEC is healthy","code":17}"#
    );
    hec.set_healthy(false);
    let health = reqwest::get(&health_url).await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let (status, resp) = test_post(&url, Some(&auth), None, body, false).await;
    assert_eq!((status, resp["code"].as_u64()), (503, Some(9)));
    hec.set_healthy(true);

    // One client across the outage. No idle connections kept: a connection pooled before a
    // mid-request kill can be reset on reuse, which is the client's business, not the fake's.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = || {
        client
            .post(&url)
            .header("authorization", &auth)
            .body(body)
            .send()
    };
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    hec.stop().await;
    assert!(!hec.is_up());
    assert!(send().await.is_err(), "down: no answer");
    hec.restart().await;
    assert_eq!(send().await.unwrap().status().as_u16(), 200);

    hec.push_reply(Reply::Die);
    assert!(send().await.is_err(), "killed mid-request: no answer");
    assert!(!hec.is_up());
    hec.restart().await;
    assert_eq!(send().await.unwrap().status().as_u16(), 200);
    assert_eq!(hec.indexed().len(), 3);
    let statuses: Vec<u16> = hec.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 500, 429, 503, 200, 200, 0, 200]);
}

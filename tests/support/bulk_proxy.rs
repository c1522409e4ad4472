//! A reverse proxy in front of an Elasticsearch/OpenSearch-compatible server (osmem-server in these
//! tests, see `opensearch.rs`) that injects into `_bulk` the faults a real cluster produces and the
//! fake does not by itself:
//!
//! - per-item failures (`fail_items_with_status`, `fail_items_once`): the 200 answer's matching
//!   `items[]` report the status with an `error: {type, reason}` and `errors` is true; those items
//!   are not forwarded, so the upstream holds exactly what the answer claims;
//! - whole-request statuses (`status_once`: 429, 503, 413 …) answered without forwarding, with a
//!   JSON error body like the cluster's;
//! - a request that is read and never answered (`hang_next`), for client timeouts;
//! - a body size limit (`max_body_bytes`), like `http.max_content_length`.
//!
//! `Content-Encoding: gzip` request bodies are decompressed to be read; a request the proxy does
//! not rewrite is forwarded byte for byte, and so is everything but `_bulk` (GET /, _doc, _search
//! …). It counts requests and items per action and records every `_bulk` request it saw.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// One per-item fault: items whose `_id` contains `id_contains` (the empty string matches every
/// item, those without an `_id` too) answer `status` with an error of type `error_type`.
pub type ItemFault = (String, u16, String);

/// For a `_bulk` request the rules apply in this order: `hang_next`, `status_once`,
/// `max_body_bytes`, then the per-item faults. Only `max_body_bytes` applies to other requests.
#[derive(Debug, Default, Clone)]
pub struct BulkRules {
    /// Every time a matching item is sent, it fails (e.g. `("alice", 429,
    /// "es_rejected_execution_exception")`, `("bob", 400, "mapper_parsing_exception")`).
    pub fail_items_with_status: Vec<ItemFault>,
    /// Like `fail_items_with_status`, but each fault fails one item once and is then used up (a
    /// transient rejection that a retry gets past). Checked first.
    pub fail_items_once: Vec<ItemFault>,
    /// Statuses for the next `_bulk` requests, one each, answered without forwarding.
    pub status_once: VecDeque<u16>,
    /// The next `_bulk` request is read and never answered (nor forwarded); cleared when used.
    pub hang_next: bool,
    /// Any request whose body (decompressed) is larger than this answers 413 without forwarding.
    pub max_body_bytes: Option<usize>,
}

impl BulkRules {
    /// Adds a lasting per-item fault.
    pub fn fail_item(mut self, id_contains: &str, status: u16, error_type: &str) -> Self {
        self.fail_items_with_status
            .push((id_contains.into(), status, error_type.into()));
        self
    }

    /// Adds a per-item fault that is used up by the first item it fails.
    pub fn fail_item_once(mut self, id_contains: &str, status: u16, error_type: &str) -> Self {
        self.fail_items_once
            .push((id_contains.into(), status, error_type.into()));
        self
    }

    pub fn status_once(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.status_once.extend(statuses);
        self
    }
}

/// One item of a `_bulk` request as the proxy read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem {
    /// index, create, update or delete.
    pub action: String,
    /// The item's `_index`, else the one in the URL (`/{index}/_bulk`).
    pub index: Option<String>,
    pub id: Option<String>,
}

/// One `_bulk` request that reached the proxy.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub method: Method,
    /// Path and query, as sent.
    pub uri: String,
    pub headers: HeaderMap,
    /// Size on the wire (compressed when gzip) and decompressed.
    pub wire_bytes: usize,
    pub body_bytes: usize,
    pub gzip: bool,
    /// Empty when the body could not be read as a bulk body (it was forwarded as it was).
    pub items: Vec<BulkItem>,
    /// Ids of the items the proxy failed itself (not forwarded).
    pub injected: Vec<Option<String>>,
    /// What the proxy answered; `None` while in flight or hung.
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkStats {
    /// Every request that reached the proxy, `_bulk` or not.
    pub requests: u64,
    pub bulk_requests: u64,
    /// Items per action in the `_bulk` requests received (whatever became of them).
    pub items: BTreeMap<String, u64>,
    /// Items per action that went on to the upstream.
    pub forwarded_items: BTreeMap<String, u64>,
    /// Items the proxy failed itself, by status.
    pub injected_items: BTreeMap<u16, u64>,
    /// Requests answered by `status_once` or `max_body_bytes`, by status.
    pub rejected: BTreeMap<u16, u64>,
    pub hung: u64,
}

#[derive(Default)]
struct Inner {
    rules: BulkRules,
    stats: BulkStats,
    seen: Vec<BulkRequest>,
}

pub struct BulkProxy {
    /// `http://127.0.0.1:PORT`: point the sink here instead of at the upstream.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    upstream: String,
    client: reqwest::Client,
    inner: Arc<Mutex<Inner>>,
}

impl BulkProxy {
    /// Listens on a free loopback port and forwards to `upstream` (e.g. `OpenSearch::url`).
    pub async fn start(upstream: &str, rules: BulkRules) -> BulkProxy {
        let inner = Arc::new(Mutex::new(Inner {
            rules,
            ..Default::default()
        }));
        let ctx = Ctx {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            inner: inner.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind bulk proxy");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        BulkProxy {
            url: format!("http://{addr}"),
            inner,
            task,
        }
    }

    pub fn set_rules(&self, rules: BulkRules) {
        self.inner.lock().unwrap().rules = rules;
    }

    /// Changes the rules in place (e.g. `p.update(|r| r.hang_next = true)`).
    pub fn update(&self, f: impl FnOnce(&mut BulkRules)) {
        f(&mut self.inner.lock().unwrap().rules);
    }

    pub fn rules(&self) -> BulkRules {
        self.inner.lock().unwrap().rules.clone()
    }

    pub fn stats(&self) -> BulkStats {
        self.inner.lock().unwrap().stats.clone()
    }

    /// The `_bulk` requests received, in order.
    pub fn bulk_requests(&self) -> Vec<BulkRequest> {
        self.inner.lock().unwrap().seen.clone()
    }

    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap();
        g.seen.clear();
        g.stats = BulkStats::default();
    }
}

impl Drop for BulkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

fn gunzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .ok()
        .map(|_| out)
}

/// `/_bulk` or `/{index}/_bulk`: `Some(default index)`.
fn bulk_path(method: &Method, path: &str) -> Option<Option<String>> {
    if *method != Method::POST && *method != Method::PUT {
        return None;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["_bulk"] => Some(None),
        [index, "_bulk"] => Some(Some(percent_decode(index))),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    reqwest::Url::parse(&format!("http://x/?v={s}"))
        .ok()
        .and_then(|u| u.query_pairs().next().map(|(_, v)| v.into_owned()))
        .unwrap_or_else(|| s.to_string())
}

/// One item of a bulk body: what it is, and its lines as sent (without their `\n`).
struct Parsed<'a> {
    item: BulkItem,
    lines: Vec<&'a [u8]>,
}

/// Reads a bulk body the way the cluster does: an action line, and for all but `delete` a source
/// line; blank lines between items are skipped. `None` when it is not a well-formed bulk body
/// (the upstream then gives its own answer: the request is forwarded as it is).
fn parse_bulk<'a>(body: &'a [u8], default_index: Option<&str>) -> Option<Vec<Parsed<'a>>> {
    if !body.ends_with(b"\n") {
        return None;
    }
    let mut lines = body[..body.len() - 1].split(|b| *b == b'\n');
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let meta: Value = serde_json::from_slice(line).ok()?;
        let (action, m) = meta.as_object().filter(|o| o.len() == 1)?.iter().next()?;
        if !matches!(action.as_str(), "index" | "create" | "update" | "delete") {
            return None;
        }
        let mut item_lines = vec![line];
        if action != "delete" {
            item_lines.push(lines.next()?);
        }
        out.push(Parsed {
            item: BulkItem {
                action: action.clone(),
                index: m["_index"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| default_index.map(str::to_string)),
                id: m["_id"].as_str().map(str::to_string),
            },
            lines: item_lines,
        });
    }
    (!out.is_empty()).then_some(out)
}

fn fault_matches(fault: &ItemFault, id: Option<&str>) -> bool {
    fault.0.is_empty() || id.is_some_and(|id| id.contains(fault.0.as_str()))
}

fn json_response(status: u16, body: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The body a cluster answers a whole request with this status.
fn status_error(status: u16) -> Value {
    let (ty, reason) = match status {
        429 => (
            "es_rejected_execution_exception",
            "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=1024] (injected by bulk_proxy)",
        ),
        503 => (
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/2/no cluster-manager]; (injected by bulk_proxy)",
        ),
        413 => {
            return json!({"error": "Request Entity Too Large (injected by bulk_proxy)", "status": 413});
        }
        _ => ("bulk_proxy_injected_exception", "injected by bulk_proxy"),
    };
    let cause = json!({"type": ty, "reason": reason});
    json!({"error": {"root_cause": [cause.clone()], "type": ty, "reason": reason}, "status": status})
}

fn failed_item(item: &BulkItem, status: u16, error_type: &str) -> Value {
    let index = item.index.clone().unwrap_or_default();
    let id = item.id.as_deref();
    let reason = format!(
        "[{}]: {error_type} (injected by bulk_proxy)",
        id.unwrap_or("")
    );
    json!({item.action.clone(): {
        "_index": index,
        "_id": id,
        "status": status,
        "error": {"type": error_type, "reason": reason, "index": index, "shard": "0", "index_uuid": "_na_"},
    }})
}

fn record_status(ctx: &Ctx, slot: usize, status: u16) {
    if let Some(r) = ctx.inner.lock().unwrap().seen.get_mut(slot) {
        r.status = Some(status);
    }
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gzip = is_gzip(&headers);
    let decoded = if gzip {
        gunzip(&body).map(Bytes::from)
    } else {
        Some(body.clone())
    };
    let bulk = bulk_path(&method, uri.path());
    let max = {
        let mut g = ctx.inner.lock().unwrap();
        g.stats.requests += 1;
        g.rules.max_body_bytes
    };
    let size = decoded.as_ref().map_or(body.len(), |d| d.len());
    let Some(default_index) = bulk else {
        if max.is_some_and(|m| size > m) {
            *ctx.inner
                .lock()
                .unwrap()
                .stats
                .rejected
                .entry(413)
                .or_default() += 1;
            return too_large(max.unwrap_or_default());
        }
        return forward(&ctx, method, &uri, &headers, body).await.0;
    };

    let parsed = decoded
        .as_ref()
        .and_then(|d| parse_bulk(d, default_index.as_deref()));
    let items: Vec<BulkItem> = parsed.iter().flatten().map(|p| p.item.clone()).collect();
    // Decide under one lock: which rule answers, which items fail.
    enum Plan {
        Hang,
        Status(u16),
        TooLarge(usize),
        Items(Vec<Option<(u16, String)>>),
    }
    let (plan, slot) = {
        let mut g = ctx.inner.lock().unwrap();
        g.stats.bulk_requests += 1;
        for it in &items {
            *g.stats.items.entry(it.action.clone()).or_default() += 1;
        }
        let plan = if std::mem::take(&mut g.rules.hang_next) {
            g.stats.hung += 1;
            Plan::Hang
        } else if let Some(s) = g.rules.status_once.pop_front() {
            *g.stats.rejected.entry(s).or_default() += 1;
            Plan::Status(s)
        } else if let Some(m) = max.filter(|m| size > *m) {
            *g.stats.rejected.entry(413).or_default() += 1;
            Plan::TooLarge(m)
        } else {
            let mut faults = Vec::with_capacity(items.len());
            for it in &items {
                let id = it.id.as_deref();
                let once = g
                    .rules
                    .fail_items_once
                    .iter()
                    .position(|f| fault_matches(f, id));
                let fault = match once {
                    Some(i) => Some(g.rules.fail_items_once.remove(i)),
                    None => g
                        .rules
                        .fail_items_with_status
                        .iter()
                        .find(|f| fault_matches(f, id))
                        .cloned(),
                };
                if let Some((_, status, _)) = &fault {
                    *g.stats.injected_items.entry(*status).or_default() += 1;
                } else {
                    *g.stats
                        .forwarded_items
                        .entry(it.action.clone())
                        .or_default() += 1;
                }
                faults.push(fault.map(|(_, s, t)| (s, t)));
            }
            Plan::Items(faults)
        };
        let injected = match &plan {
            Plan::Items(f) => items
                .iter()
                .zip(f)
                .filter(|(_, f)| f.is_some())
                .map(|(i, _)| i.id.clone())
                .collect(),
            _ => Vec::new(),
        };
        g.seen.push(BulkRequest {
            method: method.clone(),
            uri: uri.to_string(),
            headers: headers.clone(),
            wire_bytes: body.len(),
            body_bytes: size,
            gzip,
            items: items.clone(),
            injected,
            status: None,
        });
        (plan, g.seen.len() - 1)
    };

    let faults = match plan {
        Plan::Hang => {
            // Read, never answered: the connection stays open until the client gives up or the
            // test ends.
            return std::future::pending::<Response>().await;
        }
        Plan::Status(s) => {
            record_status(&ctx, slot, s);
            return json_response(s, status_error(s));
        }
        Plan::TooLarge(m) => {
            record_status(&ctx, slot, 413);
            return too_large(m);
        }
        Plan::Items(faults) => faults,
    };

    let Some(parsed) = parsed else {
        let (resp, status) = forward(&ctx, method, &uri, &headers, body).await;
        record_status(&ctx, slot, status);
        return resp;
    };
    if faults.iter().all(Option::is_none) {
        // Nothing to inject: the request goes on byte for byte (gzip and all).
        let (resp, status) = forward(&ctx, method, &uri, &headers, body).await;
        record_status(&ctx, slot, status);
        return resp;
    }

    // The kept items go upstream, decompressed and without `filter_path` (a filtered answer may
    // leave items out, so positions could not be matched); the filter is applied afterwards.
    let mut kept = Vec::new();
    for (p, f) in parsed.iter().zip(&faults) {
        if f.is_none() {
            for line in &p.lines {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
        }
    }
    let (query, filter_path) = split_filter_path(uri.query());
    let upstream_items: Vec<Value>;
    let mut answer = json!({"took": 0, "errors": false});
    if kept.is_empty() {
        upstream_items = Vec::new();
    } else {
        let path = match &query {
            Some(q) => format!("{}?{q}", uri.path()),
            None => uri.path().to_string(),
        };
        let mut h = headers.clone();
        h.remove("content-encoding");
        let resp = send(&ctx, method, &path, &h, Bytes::from(kept)).await;
        let (status, resp_headers, bytes) = match resp {
            Ok(r) => r,
            Err(resp) => {
                record_status(&ctx, slot, 502);
                return resp;
            }
        };
        let bytes = if is_gzip(&resp_headers) {
            gunzip(&bytes).map(Bytes::from).unwrap_or(bytes)
        } else {
            bytes
        };
        let v: Option<Value> = serde_json::from_slice(&bytes).ok();
        let ok = status == 200
            && v.as_ref().and_then(|v| v["items"].as_array()).map(Vec::len)
                == Some(faults.iter().filter(|f| f.is_none()).count());
        if !ok {
            // The upstream refused the request as a whole (or answered oddly): that answer stands.
            record_status(&ctx, slot, status);
            return rebuild(status, &resp_headers, bytes);
        }
        let v = v.unwrap();
        upstream_items = v["items"].as_array().cloned().unwrap_or_default();
        answer = v;
    }
    let mut upstream = upstream_items.into_iter();
    let mut merged = Vec::with_capacity(parsed.len());
    for (p, f) in parsed.iter().zip(&faults) {
        match f {
            Some((status, ty)) => merged.push(failed_item(&p.item, *status, ty)),
            None => merged.push(upstream.next().unwrap_or(Value::Null)),
        }
    }
    answer["items"] = Value::Array(merged);
    answer["errors"] = Value::Bool(true);
    if let Some(fp) = filter_path {
        answer = apply_filter_path(&answer, &fp);
    }
    record_status(&ctx, slot, 200);
    json_response(200, answer)
}

fn too_large(max: usize) -> Response {
    json_response(
        413,
        json!({"error": format!("request body is larger than {max} bytes"), "status": 413}),
    )
}

/// The query without `filter_path`, and the `filter_path` value.
fn split_filter_path(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(q) = query else {
        return (None, None);
    };
    let mut fp = None;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "filter_path" {
                fp = Some(percent_decode(v));
                false
            } else {
                true
            }
        })
        .collect();
    let kept = kept.join("&");
    ((!kept.is_empty()).then_some(kept), fp)
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

/// The patterns left after descending into `key`; an empty one in `out` marks a full match.
fn step<'a>(pattern: &'a [&'a str], key: &str, out: &mut Vec<&'a [&'a str]>) {
    match pattern.split_first() {
        None => out.push(pattern),
        Some((&"**", rest)) => {
            out.push(pattern);
            step(rest, key, out);
        }
        Some((seg, rest)) if glob(seg, key) => out.push(rest),
        Some(_) => {}
    }
}

/// Keeps what the inclusion patterns match; objects and arrays left empty are dropped (as the
/// cluster does: `items.*.error` leaves out the items without an error).
fn include(v: &Value, patterns: &[&[&str]]) -> Option<Value> {
    if patterns
        .iter()
        .any(|p| p.is_empty() || p.iter().all(|s| *s == "**"))
    {
        return Some(v.clone());
    }
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, child) in m {
                let mut next = Vec::new();
                for p in patterns {
                    step(p, k, &mut next);
                }
                if next.is_empty() {
                    continue;
                }
                if let Some(c) = include(child, &next) {
                    out.insert(k.clone(), c);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(a) => {
            let out: Vec<Value> = a.iter().filter_map(|c| include(c, patterns)).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => None,
    }
}

/// Removes what the exclusion patterns match.
fn exclude(v: &mut Value, patterns: &[&[&str]]) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let mut next = Vec::new();
                for p in patterns {
                    step(p, &k, &mut next);
                }
                if next.iter().any(|p| p.is_empty()) {
                    m.remove(&k);
                } else if !next.is_empty() {
                    exclude(m.get_mut(&k).unwrap(), &next);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| exclude(c, patterns)),
        _ => {}
    }
}

/// `filter_path` as the cluster applies it: comma-separated dotted paths with `*` and `**`,
/// `-path` to exclude.
pub fn apply_filter_path(v: &Value, filter_path: &str) -> Value {
    fn split(s: &str) -> Vec<&str> {
        s.split('.').map(str::trim).collect()
    }
    let mut inc = Vec::new();
    let mut exc = Vec::new();
    for p in filter_path
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match p.strip_prefix('-') {
            Some(x) => exc.push(split(x)),
            None => inc.push(split(p)),
        }
    }
    let inc: Vec<&[&str]> = inc.iter().map(Vec::as_slice).collect();
    let exc: Vec<&[&str]> = exc.iter().map(Vec::as_slice).collect();
    let mut out = if inc.is_empty() {
        v.clone()
    } else {
        include(v, &inc).unwrap_or_else(|| json!({}))
    };
    if !exc.is_empty() {
        exclude(&mut out, &exc);
    }
    out
}

/// Sends a request upstream: status, headers and body, or the 502 to answer.
async fn send(
    ctx: &Ctx,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(u16, HeaderMap, Bytes), Response> {
    let mut req = ctx
        .client
        .request(method, format!("{}{path_and_query}", ctx.upstream))
        .body(body);
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let bad_gateway = |e: reqwest::Error| {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(format!("bulk_proxy: upstream: {e}")))
            .unwrap()
    };
    let resp = req.send().await.map_err(bad_gateway)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(bad_gateway)?;
    Ok((status, headers, bytes))
}

/// The upstream's answer passed back: status, headers (less the hop-by-hop ones) and body.
fn rebuild(status: u16, headers: &HeaderMap, body: Bytes) -> Response {
    let mut out =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (k, v) in headers.iter() {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ) {
            out = out.header(k, v.clone());
        }
    }
    out.body(Body::from(body)).unwrap()
}

async fn forward(
    ctx: &Ctx,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> (Response, u16) {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match send(ctx, method, path, headers, body).await {
        Ok((status, h, bytes)) => (rebuild(status, &h, bytes), status),
        Err(resp) => (resp, 502),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ndjson(action: &str, ids: &[&str]) -> String {
        let mut s = String::new();
        for (i, id) in ids.iter().enumerate() {
            s.push_str(&format!(
                "{{\"{action}\":{{\"_index\":\"inv\",\"_id\":\"{id}\"}}}}\n{{\"n\":{i}}}\n"
            ));
        }
        s
    }

    async fn post(url: &str, path: &str, body: Vec<u8>, gzip: bool) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{url}{path}"))
            .header("content-type", "application/x-ndjson")
            .header("authorization", "ApiKey aWQ6a2V5");
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        let resp = req.body(body).send().await.expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn gz(s: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(s.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn statuses(v: &Value) -> Vec<u64> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                i.as_object().unwrap().values().next().unwrap()["status"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn bulk_proxy_fails_matching_items_and_does_not_forward_them() {
        let os = super::super::opensearch::OpenSearch::start();
        let proxy = BulkProxy::start(
            &os.url,
            BulkRules::default()
                .fail_item("bob", 429, "es_rejected_execution_exception")
                .fail_item("dave", 400, "mapper_parsing_exception"),
        )
        .await;
        let body = ndjson("index", &["alice", "bob", "carol", "dave", "erin"]);
        let (s, v) = post(&proxy.url, "/_bulk", gz(&body), true).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["errors"], true);
        assert_eq!(statuses(&v), [201, 429, 201, 400, 201], "{v}");
        let bob = &v["items"][1]["index"];
        assert_eq!(bob["_id"], "bob");
        assert_eq!(bob["_index"], "inv");
        assert_eq!(bob["error"]["type"], "es_rejected_execution_exception");
        assert_eq!(v["items"][2]["index"]["_id"], "carol");
        assert_eq!(os.ids("inv").await, ["alice", "carol", "erin"]);

        // Through the proxy, `create` of what exists is the upstream's own 409.
        let (_, v) = post(
            &proxy.url,
            "/inv/_bulk?filter_path=errors,items.*.error.type",
            ndjson("create", &["alice", "bob", "frank"]).into_bytes(),
            false,
        )
        .await;
        assert_eq!(
            v,
            json!({"errors": true, "items": [
                {"create": {"error": {"type": "version_conflict_engine_exception"}}},
                {"create": {"error": {"type": "es_rejected_execution_exception"}}},
            ]})
        );
        assert_eq!(os.ids("inv").await, ["alice", "carol", "erin", "frank"]);

        let st = proxy.stats();
        assert_eq!(st.bulk_requests, 2);
        assert_eq!(
            st.items,
            BTreeMap::from([("create".into(), 3), ("index".into(), 5)])
        );
        assert_eq!(
            st.forwarded_items,
            BTreeMap::from([("create".into(), 2), ("index".into(), 3)])
        );
        assert_eq!(st.injected_items, BTreeMap::from([(400, 1), (429, 2)]));
        let seen = proxy.bulk_requests();
        assert!(seen[0].gzip && seen[0].wire_bytes < seen[0].body_bytes);
        assert_eq!(seen[0].headers["authorization"], "ApiKey aWQ6a2V5");
        assert_eq!(seen[0].injected, [Some("bob".into()), Some("dave".into())]);
        assert_eq!(seen[1].items[0].index.as_deref(), Some("inv"));
        assert_eq!(seen[1].status, Some(200));
    }

    #[tokio::test]
    async fn bulk_proxy_once_faults_statuses_limits_and_passthrough() {
        let os = super::super::opensearch::OpenSearch::start();
        let proxy = BulkProxy::start(
            &os.url,
            BulkRules::default()
                .fail_item_once("", 429, "es_rejected_execution_exception")
                .status_once([503, 413, 429]),
        )
        .await;
        let body = ndjson("index", &["a", "b"]);
        for want in [503, 413, 429] {
            let (s, v) = post(&proxy.url, "/_bulk", body.clone().into_bytes(), false).await;
            assert_eq!(s, want, "{v}");
            assert_eq!(v["status"], want);
        }
        assert_eq!(os.count("inv").await, 0, "nothing forwarded");
        let (_, v) = post(&proxy.url, "/_bulk", body.clone().into_bytes(), false).await;
        assert_eq!(
            statuses(&v),
            [429, 201],
            "the once-fault fails only the first item"
        );
        let (_, v) = post(&proxy.url, "/_bulk", body.clone().into_bytes(), false).await;
        assert_eq!(
            (statuses(&v), &v["errors"]),
            (vec![201, 200], &json!(false))
        );

        // All items failed: nothing is forwarded, the answer is made whole by the proxy.
        proxy.set_rules(BulkRules::default().fail_item("", 503, "unavailable_shards_exception"));
        let (s, v) = post(
            &proxy.url,
            "/_bulk",
            b"{\"delete\":{\"_index\":\"inv\",\"_id\":\"a\"}}\n".to_vec(),
            false,
        )
        .await;
        assert_eq!((s, statuses(&v)), (200, vec![503]), "{v}");
        assert_eq!(os.ids("inv").await, ["a", "b"]);

        // The upstream's own refusals pass through: no trailing newline is its 400.
        proxy.set_rules(BulkRules {
            max_body_bytes: Some(100),
            ..Default::default()
        });
        let (s, _) = post(
            &proxy.url,
            "/_bulk",
            b"{\"delete\":{\"_index\":\"inv\",\"_id\":\"a\"}}".to_vec(),
            false,
        )
        .await;
        assert_eq!(s, 400);
        let big = ndjson("index", &["c", "d", "e"]);
        let (s, v) = post(&proxy.url, "/_bulk", gz(&big), true).await;
        assert_eq!(s, 413, "the limit counts decompressed bytes: {v}");
        assert_eq!(os.count("inv").await, 2);

        // Everything else is forwarded unchanged.
        let r = reqwest::get(format!("{}/inv/_doc/a", proxy.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["_source"], json!({"n": 0}));
        let r = reqwest::get(format!("{}/", proxy.url)).await.unwrap();
        assert_eq!(r.headers()["x-elastic-product"], "Elasticsearch");
        assert_eq!(
            proxy.stats().rejected,
            BTreeMap::from([(413, 2), (429, 1), (503, 1)])
        );
    }

    #[tokio::test]
    async fn bulk_proxy_hang_next_never_answers() {
        let os = super::super::opensearch::OpenSearch::start();
        let proxy = BulkProxy::start(&os.url, BulkRules::default()).await;
        proxy.update(|r| r.hang_next = true);
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap();
        let r = client
            .post(format!("{}/_bulk", proxy.url))
            .header("content-type", "application/x-ndjson")
            .body(ndjson("index", &["a"]))
            .send()
            .await;
        assert!(r.is_err_and(|e| e.is_timeout()));
        assert_eq!(os.count("inv").await, 0);
        let (s, _) = post(
            &proxy.url,
            "/_bulk",
            ndjson("index", &["a"]).into_bytes(),
            false,
        )
        .await;
        assert_eq!(s, 200, "only the next request hangs");
        assert_eq!(proxy.stats().hung, 1);
        assert_eq!(proxy.bulk_requests()[0].status, None);
    }

    #[tokio::test]
    async fn bulk_proxy_upstream_outage_is_502_then_recovers() {
        let mut os = super::super::opensearch::OpenSearch::start();
        let proxy = BulkProxy::start(&os.url, BulkRules::default()).await;
        let (s, _) = post(
            &proxy.url,
            "/_bulk",
            ndjson("index", &["a"]).into_bytes(),
            false,
        )
        .await;
        assert_eq!(s, 200);
        os.stop().await;
        let (s, _) = post(
            &proxy.url,
            "/_bulk",
            ndjson("index", &["b"]).into_bytes(),
            false,
        )
        .await;
        assert_eq!(s, 502, "the upstream is down");
        os.start_again();
        let (s, v) = post(
            &proxy.url,
            "/_bulk",
            ndjson("create", &["a", "c"]).into_bytes(),
            false,
        )
        .await;
        assert_eq!((s, statuses(&v)), (200, vec![409, 201]), "{v}");
        assert_eq!(os.ids("inv").await, ["a", "c"]);
    }

    #[test]
    fn bulk_proxy_filter_path_matches_the_cluster() {
        let v = json!({"took": 3, "errors": true, "items": [
            {"index": {"_id": "a", "status": 201}},
            {"create": {"_id": "b", "status": 409, "error": {"type": "x", "reason": "r"}}},
        ]});
        assert_eq!(
            apply_filter_path(&v, "items.*.error"),
            json!({"items": [{"create": {"error": {"type": "x", "reason": "r"}}}]})
        );
        assert_eq!(
            apply_filter_path(&v, "errors,items.**.status"),
            json!({"errors": true, "items": [{"index": {"status": 201}}, {"create": {"status": 409}}]})
        );
        assert_eq!(
            apply_filter_path(&v, "-took,-items.*.error"),
            json!({"errors": true, "items": [{"index": {"_id": "a", "status": 201}}, {"create": {"_id": "b", "status": 409}}]})
        );
        assert_eq!(apply_filter_path(&v, "nothing"), json!({}));
        assert_eq!(
            split_filter_path(Some("refresh=true&filter_path=items.*.error%2Cerrors")),
            (
                Some("refresh=true".into()),
                Some("items.*.error,errors".into())
            )
        );
    }
}

//! The HTTP exchange every HTTP-based sink kind shares: the client, gzip, retries with backoff on
//! 408/429/5xx and transport errors, `Retry-After`, no redirects, bounded response bodies, and
//! scrubbing the sink's secrets out of anything that is shown.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::SinkReport;
use super::retry::{MAX_RETRY_AFTER, backoff, is_retryable, parse_retry_after};
use crate::config::{Compression, SinkConfig};
use crate::text::{error_chain, excerpt};

/// The most of a response body that is read: enough for a `_bulk` answer to a large batch,
/// bounded so a misbehaving receiver cannot make us buffer without end.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The HTTP client shared by all sinks (rustls; per-request timeouts come from each sink).
///
/// Redirects are not followed: on a 301/302/303 reqwest would turn the POST into a body-less GET, and
/// a 200 for that GET would acknowledge records that were never delivered (and a cross-host redirect
/// would carry secret headers to another host). A 3xx is a failure naming the new location.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("iam-inventory/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// 16 bytes as a version-4 UUID (`8-4-4-4-12` hex, version and variant bits set).
pub fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// A sink's base URL without a trailing slash (`{url}/_bulk`, `{url}/services/collector/event`…).
pub fn base_url(sink: &SinkConfig) -> &str {
    sink.url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/'))
        .unwrap_or_default()
}

/// A request to `url` carrying the kind's credential header `auth` (marked sensitive, so it never
/// reaches a debug print) and the sink's own `headers`.
pub fn request(
    client: &reqwest::Client,
    sink: &SinkConfig,
    method: reqwest::Method,
    url: String,
    auth: Option<(&'static str, String)>,
) -> reqwest::RequestBuilder {
    let mut req = client.request(method, url);
    if let Some((name, value)) = auth
        && let Ok(mut v) = reqwest::header::HeaderValue::from_str(&value)
    {
        v.set_sensitive(true);
        req = req.header(name, v);
    }
    with_headers(req, sink)
}

/// The sink's configured `headers`, marked sensitive.
pub fn with_headers(
    mut req: reqwest::RequestBuilder,
    sink: &SinkConfig,
) -> reqwest::RequestBuilder {
    for (name, value) in &sink.headers {
        // Validated at config load; a failure here would be a bug, so skip rather than panic.
        if let (Ok(n), Ok(mut v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value.expose()),
        ) {
            v.set_sensitive(true);
            req = req.header(n, v);
        }
    }
    req
}

/// A final (not retried) answer: 2xx or a 4xx.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `HTTP 400: <excerpt of the body>`, the sink's secrets scrubbed.
    pub fn describe(&self, sink: &SinkConfig) -> String {
        let text = scrub(&String::from_utf8_lossy(&self.body), sink);
        let text = excerpt(&text, 300);
        if text.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {}: {text}", self.status)
        }
    }
}

/// The request body as it goes on the wire: gzip-compressed when the sink asks for it (then send
/// it with `gzipped = sink.compression == Compression::Gzip`).
pub fn encode_body(sink: &SinkConfig, raw: Vec<u8>) -> Result<Bytes, String> {
    if sink.compression != Compression::Gzip {
        return Ok(Bytes::from(raw));
    }
    // Compressing a large batch is CPU work: off the async worker's other tasks.
    super::blocking(|| {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        enc.write_all(&raw)
            .and_then(|_| enc.finish())
            .map(Bytes::from)
            .map_err(|e| format!("cannot compress: {e}"))
    })
}

/// Sends a request until it gets a final answer (2xx or 4xx), retrying 408/429/5xx and transport
/// errors with backoff (honouring `Retry-After`) up to `sink.max_retries` times. `Err` means the sink
/// is failing as a whole for this sync (retries exhausted, a redirect, `Retry-After` too long).
///
/// `build` makes a fresh request for each attempt; the body is shared, not copied, between attempts.
/// `gzipped` says whether `body` came out of [`encode_body`] compressed.
pub async fn exchange(
    sink: &SinkConfig,
    build: impl Fn() -> reqwest::RequestBuilder,
    body: Bytes,
    gzipped: bool,
    report: &mut SinkReport,
) -> Result<Reply, String> {
    let mut attempt = 0u32;
    loop {
        let mut req = build().timeout(Duration::from_secs(sink.timeout_secs));
        if gzipped && !body.is_empty() {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        if !body.is_empty() {
            req = req.body(body.clone());
        }
        report.requests += 1;
        let (retry_in, message) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = read_capped(resp).await;
                let reply = Reply {
                    status,
                    headers,
                    body,
                };
                if reply.is_success() {
                    return Ok(reply);
                }
                report.failed_requests += 1;
                if (300..400).contains(&status) {
                    let to = reply
                        .headers
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(crate::config::redact_url)
                        .unwrap_or_else(|| "an unnamed location".into());
                    return Err(format!(
                        "HTTP {status}: the sink redirects to {to}; redirects are not followed (set the sink's url to the final address)"
                    ));
                }
                if !is_retryable(status) {
                    return Ok(reply);
                }
                let retry_after = reply
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        parse_retry_after(v, time::OffsetDateTime::now_utc().unix_timestamp())
                    });
                (retry_after, reply.describe(sink))
            }
            Err(e) => {
                report.failed_requests += 1;
                // without_url: a URL may carry a token in its query string.
                (None, error_chain(&e.without_url()))
            }
        };
        if attempt >= sink.max_retries {
            return Err(format!(
                "{message} (gave up after {} attempts)",
                attempt + 1
            ));
        }
        let delay = match retry_in {
            Some(d) if d > MAX_RETRY_AFTER => {
                return Err(format!(
                    "{message} (Retry-After {}s is longer than {}s; left for the next sync)",
                    d.as_secs(),
                    MAX_RETRY_AFTER.as_secs()
                ));
            }
            Some(d) => d,
            None => backoff(attempt),
        };
        tracing::info!(sink = %sink.name, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, error = %message, "retrying delivery");
        report.retries += 1;
        attempt += 1;
        tokio::time::sleep(delay).await;
    }
}

/// The body, up to [`MAX_RESPONSE_BYTES`]; a body that breaks off reads as what arrived.
async fn read_capped(mut resp: reqwest::Response) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_RESPONSE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    buf.freeze()
}

/// Text as it may be logged and stored: the sink's secrets (tokens a receiver might echo back)
/// replaced.
pub fn scrub(text: &str, sink: &SinkConfig) -> String {
    let mut out = text.to_string();
    for v in sink.secret_values() {
        if v.len() >= 4 {
            out = out.replace(v, "<redacted>");
            // "Bearer abc": the token alone may be echoed too.
            if let Some((_, token)) = v.split_once(' ').filter(|(_, t)| t.len() >= 4) {
                out = out.replace(token, "<redacted>");
            }
        }
    }
    out
}

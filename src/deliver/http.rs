//! The HTTP sink: one POST per batch, retried on 408/429/5xx and transport errors.
//! Header values are secrets: they are set on the request and never logged; log lines name the sink.

use std::io::Write;
use std::time::Duration;

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};

use super::batch::Batch;
use super::retry::{MAX_RETRY_AFTER, backoff, is_retryable, parse_retry_after};
use super::{DeliveryFailure, SinkReport, change_kind};
use crate::config::{Compression, SinkConfig, SinkFormat};

/// The HTTP client shared by all sinks (rustls; per-request timeouts come from each sink).
///
/// Redirects are not followed: on a 301/302/303 reqwest would turn the POST into a body-less GET, and
/// a 200 for that GET would acknowledge records that were never delivered (and a cross-host redirect
/// would carry custom secret headers to another host). A 3xx is a rejection naming the new location.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("iam-inventory/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends one batch until it is acknowledged (2xx), rejected (other 4xx), or retries run out.
pub async fn send(
    client: &reqwest::Client,
    sink: &SinkConfig,
    batch: &Batch<'_>,
    report: &mut SinkReport,
) -> Result<(), DeliveryFailure> {
    let url = sink.url.as_ref().map(|u| u.as_str()).unwrap_or_default();
    let mut body = batch.encode(sink.format);
    if sink.compression == Compression::Gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        body = enc
            .write_all(&body)
            .and_then(|_| enc.finish())
            .map_err(|e| DeliveryFailure {
                message: format!("cannot compress: {e}"),
                sink_down: true,
            })?;
    }
    let key = batch.idempotency_key(&sink.name);
    let content_type = match sink.format {
        SinkFormat::Ndjson => "application/x-ndjson",
        SinkFormat::Json => "application/json",
    };
    let mut attempt = 0u32;
    loop {
        let mut req = client
            .post(url)
            .timeout(Duration::from_secs(sink.timeout_secs))
            .header(CONTENT_TYPE, content_type)
            .header("Idempotency-Key", &key)
            .header("X-IAM-Inventory-Change", change_kind(batch))
            .header("X-IAM-Inventory-Sink", &sink.name)
            .header("X-IAM-Inventory-Records", batch.records.len().to_string());
        if sink.compression == Compression::Gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        for (name, value) in &sink.headers {
            // Validated at config load; a failure here would be a bug, so skip rather than panic.
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                let mut v = v;
                v.set_sensitive(true);
                req = req.header(n, v);
            }
        }
        report.requests += 1;
        let (retry_in, message) = match req.body(body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                report.failed_requests += 1;
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        parse_retry_after(v, time::OffsetDateTime::now_utc().unix_timestamp())
                    });
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(crate::config::redact_url);
                let text = scrub(&resp.text().await.unwrap_or_default(), sink);
                let message = format!("HTTP {status}: {}", truncate(&text, 300));
                if let Some(to) = location.filter(|_| (300..400).contains(&status)) {
                    return Err(DeliveryFailure {
                        message: format!(
                            "HTTP {status}: the sink redirects to {to}; redirects are not followed (set the sink's url to the final address)"
                        ),
                        sink_down: true,
                    });
                }
                if !is_retryable(status) {
                    // Authentication, authorization and a wrong path fail every batch alike: stop
                    // this sink for the sync. Other 4xx may be about this batch only.
                    return Err(DeliveryFailure {
                        message: format!("{message} (rejected; not retried until the next sync)"),
                        sink_down: matches!(status, 300..=399 | 401 | 403 | 404 | 405),
                    });
                }
                (retry_after, message)
            }
            Err(e) => {
                report.failed_requests += 1;
                // without_url: a URL may carry a token in its query string.
                (
                    None,
                    crate::collect::error::one_line(&error_chain(&e.without_url())),
                )
            }
        };
        if attempt >= sink.max_retries {
            return Err(DeliveryFailure {
                message: format!("{message} (gave up after {} attempts)", attempt + 1),
                sink_down: true,
            });
        }
        let delay = match retry_in {
            Some(d) if d > MAX_RETRY_AFTER => {
                return Err(DeliveryFailure {
                    message: format!(
                        "{message} (Retry-After {}s is longer than {}s; left for the next sync)",
                        d.as_secs(),
                        MAX_RETRY_AFTER.as_secs()
                    ),
                    sink_down: true,
                });
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

/// A response body as it may be logged and stored: the sink's own header values (tokens a receiver
/// might echo back) replaced.
fn scrub(body: &str, sink: &SinkConfig) -> String {
    let mut out = body.to_string();
    for value in sink.headers.values() {
        let v = value.expose();
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

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

//! `check-config --connect`: one request per sink that proves it can be reached with its
//! credentials, without delivering anything.

use std::time::Duration;

use serde_json::Value;

use super::elasticsearch::Elasticsearch;
use super::splunk_hec::SplunkHec;
use crate::config::{SinkConfig, SinkMode, SinkType};
use crate::text::{error_chain, excerpt};

/// Where a sink's requests go, for `check-config` (URLs redacted: no user-info or query values).
pub fn endpoints(sink: &SinkConfig) -> Vec<String> {
    use crate::config::redact_url;
    let base = super::transport::base_url(sink);
    let shown = |method: &str, url: String| format!("{method} {}", redact_url(&url));
    match sink.kind {
        SinkType::Stdout => vec!["standard output".into()],
        SinkType::File => vec![format!(
            "append to {}",
            sink.path.clone().unwrap_or_default().display()
        )],
        SinkType::Http => vec![shown("POST", base.to_string())],
        SinkType::Elasticsearch => {
            let mut out = vec![shown("POST", format!("{base}/_bulk"))];
            if let Some(p) = &sink.pipeline {
                out[0].push_str(&format!(" (pipeline {p})"));
            }
            out.push(format!(
                "index {:?}, change events to {:?}",
                sink.index.as_deref().unwrap_or_default(),
                sink.events_index()
            ));
            out
        }
        SinkType::SplunkHec => {
            let mut out = vec![shown("POST", format!("{base}/services/collector/event"))];
            if sink.ack {
                out.push(shown("POST", format!("{base}/services/collector/ack")));
            }
            out
        }
        SinkType::SekoiaAssets => vec![shown("POST", super::sekoia::endpoint(sink))],
        SinkType::Oomnitza => vec![
            shown("POST", format!("{base}/api/v3/bulk")),
            shown("POST", format!("{base}/api/v3/bulk/<portion>/finalize")),
        ],
    }
}

/// The answer for one target: `Ok(what was found)` or `Err(what is wrong)`.
pub type Probe = Result<String, String>;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes every sink, in config order.
pub async fn probe_sinks(sinks: &[SinkConfig]) -> Vec<(String, Probe)> {
    let client = match super::client() {
        Ok(c) => c,
        Err(e) => {
            return sinks.iter().map(|s| (label(s), Err(e.clone()))).collect();
        }
    };
    let mut out = Vec::new();
    for sink in sinks {
        let result = match sink.kind {
            SinkType::Stdout => Ok("standard output".into()),
            SinkType::File => probe_file(sink),
            SinkType::Http => probe_http(&client, sink).await,
            SinkType::Elasticsearch => probe_elasticsearch(&client, sink).await,
            SinkType::SplunkHec => probe_hec(&client, sink).await,
            SinkType::SekoiaAssets => probe_sekoia(&client, sink).await,
            SinkType::Oomnitza => probe_oomnitza(&client, sink).await,
        };
        out.push((label(sink), result));
    }
    out
}

fn label(sink: &SinkConfig) -> String {
    format!("sink {} ({})", sink.name, sink.kind.as_str())
}

async fn send(req: reqwest::RequestBuilder) -> Result<(u16, String), String> {
    let resp = req
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("cannot connect: {}", error_chain(&e.without_url())))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok((status, body))
}

fn refused(status: u16, body: &str, sink: &SinkConfig) -> String {
    let body = super::transport::scrub(body, sink);
    format!("HTTP {status}: {}", excerpt(&body, 200))
}

fn probe_file(sink: &SinkConfig) -> Probe {
    let path = sink.path.clone().unwrap_or_default();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(|_| format!("{} is writable", path.display()))
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

/// OPTIONS on the URL: any answer but an authentication refusal, a 404 or a server error means the
/// endpoint is there (many ingest endpoints answer 405 to OPTIONS, which is fine).
async fn probe_http(client: &reqwest::Client, sink: &SinkConfig) -> Probe {
    let url = sink.url.as_ref().map(|u| u.as_str()).unwrap_or_default();
    let req = super::transport::with_headers(client.request(reqwest::Method::OPTIONS, url), sink);
    match send(req).await? {
        (s @ (401 | 403), body) => Err(format!(
            "{} (check the sink's headers)",
            refused(s, &body, sink)
        )),
        (s @ (404 | 500..), body) => Err(refused(s, &body, sink)),
        (s, _) => Ok(format!("reachable (OPTIONS answered HTTP {s})")),
    }
}

async fn probe_elasticsearch(client: &reqwest::Client, sink: &SinkConfig) -> Probe {
    let es = Elasticsearch { client, sink };
    let (status, body) = send(es.request(reqwest::Method::GET, "/")).await?;
    if !(200..300).contains(&status) {
        let hint = if matches!(status, 401 | 403) {
            " (check username/password, api_key or headers)"
        } else {
            ""
        };
        return Err(format!("{}{hint}", refused(status, &body, sink)));
    }
    let info: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let version = &info["version"];
    let product = version["distribution"].as_str().unwrap_or("elasticsearch");
    let number = version["number"].as_str().unwrap_or("?");
    let index = sink.index.as_deref().unwrap_or_default();
    // Data streams take only `create`: index and update actions fail item by item.
    let path = format!("/_data_stream/{index}");
    if let Ok((200, ds)) = send(es.request(reqwest::Method::GET, &path)).await {
        let ds: Value = serde_json::from_str(&ds).unwrap_or(Value::Null);
        let is_stream = ds["data_streams"].as_array().is_some_and(|a| !a.is_empty());
        if is_stream && sink.mode != SinkMode::CreateOnly {
            return Err(format!(
                "{index:?} is a data stream, which takes only create actions: set mode = \"create-only\" (or write to a regular index or alias)"
            ));
        }
    }
    Ok(format!("{product} {number}, index {index:?}"))
}

async fn probe_hec(client: &reqwest::Client, sink: &SinkConfig) -> Probe {
    let hec = SplunkHec::new(client, sink);
    let (status, body) =
        send(hec.request(reqwest::Method::GET, "/services/collector/health")).await?;
    if status != 200 {
        return Err(format!("health: {}", refused(status, &body, sink)));
    }
    // An empty event request proves the token without indexing anything: HEC answers 400 "No
    // data" (code 5) to a token it accepts, 401/403 to one it does not.
    let (status, body) =
        send(hec.request(reqwest::Method::POST, "/services/collector/event")).await?;
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_i64());
    match (status, code) {
        (400, Some(5)) | (200, _) => Ok("healthy, token accepted".into()),
        (401 | 403, _) => Err(format!(
            "{} (Splunk refused the token: check the sink's token)",
            refused(status, &body, sink)
        )),
        (_, Some(14)) => Err(
            "indexer acknowledgement is disabled for this token: set ack = false, or enable it on the token"
                .into(),
        ),
        _ => Err(refused(status, &body, sink)),
    }
}

/// Sekoia has no read endpoint for a push connector; an empty push (no items) proves the key and
/// the connector without adding anything.
async fn probe_sekoia(client: &reqwest::Client, sink: &SinkConfig) -> Probe {
    let sekoia = super::sekoia::Sekoia { client, sink };
    let req = sekoia
        .request(reqwest::Method::POST)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{\"version\":1,\"items\":[]}");
    match send(req).await? {
        (200, _) => Ok("connector found, api_key accepted".into()),
        (s @ (401 | 403), body) => Err(format!(
            "{} (check the sink's api_key)",
            refused(s, &body, sink)
        )),
        (404, body) => Err(format!(
            "{} (check connector_uuid)",
            refused(404, &body, sink)
        )),
        (s, body) => Err(refused(s, &body, sink)),
    }
}

/// Oomnitza: finalizing a portion that does not exist proves the token (401/403 when refused; any
/// other answer means the API took the credentials) without touching data.
async fn probe_oomnitza(client: &reqwest::Client, sink: &SinkConfig) -> Probe {
    let oom = super::oomnitza::Oomnitza::new(client, sink);
    let path = format!("/api/v3/bulk/{}/finalize", oom.portion);
    match send(oom.request(reqwest::Method::POST, &path).body("{}")).await? {
        (s @ (401 | 403), body) => Err(format!(
            "{} (Oomnitza refused the token)",
            refused(s, &body, sink)
        )),
        (s @ 500.., body) => Err(refused(s, &body, sink)),
        (s, _) => Ok(format!("token accepted (HTTP {s} for an unknown portion)")),
    }
}

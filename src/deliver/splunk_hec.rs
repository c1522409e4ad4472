//! `type = "splunk_hec"`: Splunk HTTP Event Collector, `POST {url}/services/collector/event` with
//! `Authorization: Splunk <token>` and a body of concatenated event envelopes (not an array):
//! `{"time": <epoch seconds, ms decimals>, "host", "source", "sourcetype", "index", "event": <record>}`.
//! `time` is the record's own (the collection that saw it), so a re-send carries the same time.
//!
//! With `ack = true` every request carries this sink's channel (`X-Splunk-Request-Channel`, a GUID
//! derived from the sink's name, so it is the same after a restart), and a batch counts as delivered
//! only when `/services/collector/ack` says its `ackId` is indexed. A batch not indexed within
//! `ack_timeout_secs` stays pending and is sent again by the next sync (at least once).
//!
//! Answers: 401/403 and the configuration codes (7 incorrect index, 10/11 channel, 14 ack disabled)
//! stop the sink with one line naming it; 429, 503 (code 9, busy) and 500 (code 8) are retried; a
//! 400 with `invalid-event-number` N rejects event N alone — HEC has indexed the events before it
//! (re-sent instead when acks are on, since no ackId covers them) and the ones after it are sent again.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::batch::Batch;
use super::transport::{Reply, base_url, encode_body, exchange, request};
use super::{Outcome, RecordOutcome, SinkReport};
use crate::config::SinkConfig;

/// The default `source` and `sourcetype` of inventory records.
pub const DEFAULT_SOURCE: &str = "iam-inventory";
pub const DEFAULT_SOURCETYPE: &str = "ocsf:user_inventory";
/// The `sourcetype` of OCSF 3001 change events.
pub const EVENTS_SOURCETYPE: &str = "ocsf:account_change";

pub struct SplunkHec<'a> {
    pub client: &'a reqwest::Client,
    pub sink: &'a SinkConfig,
    channel: String,
}

/// A stable channel GUID for a sink (HEC wants 8-4-4-4-12 hex; version 4, variant 1 bits set).
pub fn channel_for(sink_name: &str) -> String {
    let h = Sha256::digest(format!("iam-inventory hec channel\n{sink_name}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    super::transport::uuid_v4(b)
}

/// Epoch milliseconds as HEC's `time`: seconds with millisecond decimals.
pub fn hec_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The body: one envelope per record, each on its own line (HEC reads concatenated objects).
pub fn encode(batch: &Batch<'_>, sink: &SinkConfig) -> Vec<u8> {
    let meta = |key: &str, value: Option<&str>| -> String {
        value
            .map(|v| {
                format!(
                    ",\"{key}\":{}",
                    serde_json::to_string(v).unwrap_or_default()
                )
            })
            .unwrap_or_default()
    };
    let fixed = format!(
        "{}{}{}{}",
        meta("host", sink.host.as_deref()),
        meta(
            "source",
            Some(sink.source.as_deref().unwrap_or(DEFAULT_SOURCE))
        ),
        meta(
            "sourcetype",
            Some(if batch.op == super::batch::Op::Event {
                EVENTS_SOURCETYPE
            } else {
                sink.sourcetype.as_deref().unwrap_or(DEFAULT_SOURCETYPE)
            })
        ),
        meta("index", sink.index.as_deref()),
    );
    let size: usize = batch
        .records
        .iter()
        .map(|r| r.record.len() + fixed.len() + 40)
        .sum();
    let mut body = Vec::with_capacity(size);
    for r in &batch.records {
        body.extend_from_slice(b"{\"time\":");
        body.extend_from_slice(hec_time(r.time_ms).as_bytes());
        body.extend_from_slice(fixed.as_bytes());
        body.extend_from_slice(b",\"event\":");
        body.extend_from_slice(r.record.as_bytes());
        body.extend_from_slice(b"}\n");
    }
    body
}

#[derive(Deserialize, Default)]
struct HecAnswer {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

#[derive(Deserialize)]
struct AckAnswer {
    #[serde(default)]
    acks: std::collections::HashMap<String, bool>,
}

impl<'a> SplunkHec<'a> {
    pub fn new(client: &'a reqwest::Client, sink: &'a SinkConfig) -> SplunkHec<'a> {
        SplunkHec {
            client,
            sink,
            channel: channel_for(&sink.name),
        }
    }

    /// A request to `{url}{path}` with the token, the channel when acks are on, and `headers`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self
            .sink
            .token
            .as_ref()
            .map(|t| t.expose())
            .unwrap_or_default();
        let url = format!("{}{path}", base_url(self.sink));
        let auth = Some(("Authorization", format!("Splunk {token}")));
        let req = request(self.client, self.sink, method, url, auth);
        if self.sink.ack {
            req.header("X-Splunk-Request-Channel", &self.channel)
        } else {
            req
        }
    }

    /// A refusal that no retry or split can fix: one line naming the sink and what to change.
    fn config_error(&self, reply: &Reply, answer: &HecAnswer) -> Option<String> {
        let hint = match (reply.status, answer.code) {
            (401 | 403, _) => {
                "Splunk refused the token: check the sink's token and that it is enabled"
            }
            (_, Some(7)) => "the token may not write to this index: check the sink's index",
            (_, Some(10 | 11)) => {
                "the data channel is missing or invalid (is indexer acknowledgement on for this token?)"
            }
            (_, Some(14)) => {
                "indexer acknowledgement is disabled for this token: set ack = false, or enable it on the token"
            }
            (_, Some(16)) => "query-string authentication is refused",
            _ => return None,
        };
        Some(format!(
            "sink {:?}: HTTP {} (HEC code {}: {}): {hint}",
            self.sink.name,
            reply.status,
            answer.code.map_or("?".into(), |c| c.to_string()),
            answer.text
        ))
    }

    /// Polls the ack endpoint until `ack_id` is indexed or `ack_timeout_secs` pass.
    async fn wait_indexed(&self, ack_id: u64, report: &mut SinkReport) -> Result<bool, String> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.sink.ack_timeout_secs);
        let path = format!("/services/collector/ack?channel={}", self.channel);
        let body = Bytes::from(format!("{{\"acks\":[{ack_id}]}}"));
        // Splunk usually confirms within seconds: ask early, then back off to every 2 s.
        let mut pause = Duration::from_millis(20);
        loop {
            tokio::time::sleep(pause).await;
            let build = || {
                self.request(reqwest::Method::POST, &path)
                    .header(CONTENT_TYPE, "application/json")
            };
            // The poll body is tiny and never compressed.
            let reply = exchange(self.sink, build, body.clone(), false, report).await?;
            if !reply.is_success() {
                return Err(format!("ack poll: {}", reply.describe(self.sink)));
            }
            let answer: AckAnswer = serde_json::from_slice(&reply.body)
                .map_err(|e| format!("ack poll: unreadable answer ({e})"))?;
            if answer.acks.get(&ack_id.to_string()) == Some(&true) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

impl super::Kind for SplunkHec<'_> {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        let sink = self.sink;
        let n = batch.records.len();
        let body = match encode_body(sink, encode(batch, sink)) {
            Ok(b) => b,
            Err(m) => return Outcome::Down(m),
        };
        let build = || {
            self.request(reqwest::Method::POST, "/services/collector/event")
                .header(CONTENT_TYPE, "application/json")
        };
        let gzipped = sink.compression == crate::config::Compression::Gzip;
        let reply = match exchange(sink, build, body, gzipped, report).await {
            Ok(r) => r,
            Err(m) => return Outcome::Down(m),
        };
        let answer: HecAnswer = serde_json::from_slice(&reply.body).unwrap_or_default();
        if let Some(message) = self.config_error(&reply, &answer) {
            return Outcome::Down(message);
        }
        if !reply.is_success() {
            let message = reply.describe(sink);
            return match answer.invalid_event.filter(|i| *i < n) {
                Some(bad) if reply.status == 400 => {
                    let before = if sink.ack {
                        RecordOutcome::Retry("indexed without an ackId; sent again".into())
                    } else {
                        RecordOutcome::Acked
                    };
                    let mut out = vec![before; bad];
                    out.push(RecordOutcome::Rejected(format!(
                        "HEC code {}: {}",
                        answer.code.unwrap_or(-1),
                        answer.text
                    )));
                    out.extend(std::iter::repeat_n(
                        RecordOutcome::Retry("after a rejected event in the same request".into()),
                        n - bad - 1,
                    ));
                    Outcome::Records(out)
                }
                _ => Outcome::from_batch_status(reply.status, message),
            };
        }
        if !sink.ack {
            return Outcome::all_acked(batch);
        }
        let Some(ack_id) = answer.ack_id else {
            return Outcome::Failed(
                "HEC answered without an ackId although ack = true (is acknowledgement enabled on the token?)"
                    .into(),
            );
        };
        match self.wait_indexed(ack_id, report).await {
            Ok(true) => Outcome::all_acked(batch),
            Ok(false) => Outcome::Failed(format!(
                "Splunk did not confirm ackId {ack_id} as indexed within {}s; its records are sent again next sync",
                sink.ack_timeout_secs
            )),
            Err(m) => Outcome::Failed(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_stable_guids_per_sink() {
        let c = channel_for("splunk");
        assert_eq!(c, channel_for("splunk"));
        assert_ne!(c, channel_for("other"));
        let parts: Vec<usize> = c.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&c[14..15], "4");
    }

    #[test]
    fn times_keep_milliseconds() {
        assert_eq!(hec_time(1_700_000_000_123), "1700000000.123");
        assert_eq!(hec_time(1_700_000_000_005), "1700000000.005");
    }
}

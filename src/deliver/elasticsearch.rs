//! `type = "elasticsearch"` (OpenSearch too): `POST {url}/_bulk`, one action/source pair per record,
//! `_id` = `user.uid` (the ARN), so a re-send overwrites instead of duplicating.
//!
//! Modes become actions: create-update → `index`; create-only → `create` (a per-item 409 means the
//! document is already there: acknowledged); update-only → `update` with `{"doc": …}` (a per-item 404
//! means there is nothing to update: acknowledged and skipped).
//!
//! An HTTP 200 is not a delivery: every answer's `items[]` is walked, one item per record in request
//! order. Items with 2xx are acknowledged; 408/429/5xx items are asked again (the seam re-sends them
//! alone, with backoff); any other 4xx item (a mapping conflict, a pipeline failure) is that record's
//! rejection, held back until its content changes. A whole-request 413 halves the batch.

use base64::Engine as _;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use super::batch::{Batch, Op};
use super::transport::{Reply, base_url, encode_body, exchange, request};
use super::{Outcome, RecordOutcome, SinkReport};
use crate::config::{Compression, SinkConfig, SinkMode};

pub struct Elasticsearch<'a> {
    pub client: &'a reqwest::Client,
    pub sink: &'a SinkConfig,
}

/// The bulk action a mode uses.
fn action(mode: SinkMode) -> &'static str {
    match mode {
        SinkMode::CreateUpdate => "index",
        SinkMode::CreateOnly => "create",
        SinkMode::UpdateOnly => "update",
    }
}

/// The mode a batch is sent under: change events are always `create`d (`_id` = `metadata.uid`, so a
/// re-sent event is a 409, already delivered).
fn batch_mode(batch: &Batch<'_>, mode: SinkMode) -> SinkMode {
    if batch.op == Op::Event {
        SinkMode::CreateOnly
    } else {
        mode
    }
}

/// The `_bulk` body: per record an action line and a source line, each ending in `\n` (the API
/// refuses a body whose last line does not).
pub fn encode(batch: &Batch<'_>, index: &str, mode: SinkMode) -> Vec<u8> {
    let mode = batch_mode(batch, mode);
    let act = if batch.op == Op::Delete {
        "delete"
    } else {
        action(mode)
    };
    let index = serde_json::to_string(index).unwrap_or_default();
    let size: usize = batch
        .records
        .iter()
        .map(|r| r.record.len() + r.uid.len() + index.len() + 40)
        .sum();
    let mut body = Vec::with_capacity(size);
    for r in &batch.records {
        let id = serde_json::to_string(&r.uid).unwrap_or_default();
        body.extend_from_slice(
            format!("{{\"{act}\":{{\"_index\":{index},\"_id\":{id}}}}}\n").as_bytes(),
        );
        if batch.op == Op::Delete {
            // A delete action has no source line, whatever the mode.
            continue;
        }
        if mode == SinkMode::UpdateOnly {
            body.extend_from_slice(b"{\"doc\":");
            body.extend_from_slice(r.record.as_bytes());
            body.extend_from_slice(b"}\n");
        } else {
            body.extend_from_slice(r.record.as_bytes());
            body.push(b'\n');
        }
    }
    body
}

#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, Item>>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// What one item of a `_bulk` answer means for its record.
fn item_outcome(op: Op, mode: SinkMode, item: &Item) -> RecordOutcome {
    let status = item.status;
    let done = (200..300).contains(&status)
        || (op == Op::Delete && status == 404)
        || (op != Op::Delete && mode == SinkMode::CreateOnly && status == 409)
        || (op != Op::Delete && mode == SinkMode::UpdateOnly && status == 404);
    if done {
        return RecordOutcome::Acked;
    }
    let reason = match &item.error {
        Some(serde_json::Value::Object(e)) => format!(
            "{status} {}: {}",
            e.get("type").and_then(|v| v.as_str()).unwrap_or("error"),
            e.get("reason").and_then(|v| v.as_str()).unwrap_or("")
        ),
        Some(other) => format!("{status} {other}"),
        None => format!("{status}"),
    };
    if status == 408 || status == 429 || status >= 500 {
        RecordOutcome::Retry(format!("_bulk item {reason}"))
    } else {
        RecordOutcome::Rejected(format!("_bulk item {}", crate::text::excerpt(&reason, 300)))
    }
}

/// Reads a 2xx `_bulk` answer into one outcome per record.
pub fn read_answer(op: Op, mode: SinkMode, body: &[u8], records: usize) -> Outcome {
    let answer: BulkAnswer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            return Outcome::Failed(format!(
                "the _bulk answer is not readable ({e}); nothing acknowledged"
            ));
        }
    };
    if answer.items.len() != records {
        return Outcome::Failed(format!(
            "the _bulk answer has {} items for {records} records; nothing acknowledged",
            answer.items.len()
        ));
    }
    Outcome::Records(
        answer
            .items
            .iter()
            .map(|item| match item.values().next() {
                Some(i) => item_outcome(op, mode, i),
                None => RecordOutcome::Retry("an empty _bulk item".into()),
            })
            .collect(),
    )
}

impl Elasticsearch<'_> {
    /// The `Authorization` header: Basic or ApiKey (custom `headers` may carry it instead).
    fn auth(&self) -> Option<(&'static str, String)> {
        let s = self.sink;
        let value = match (&s.username, &s.password, &s.api_key) {
            (Some(user), Some(pass), _) => {
                let raw = format!("{user}:{}", pass.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            }
            (_, _, Some(key)) => format!("ApiKey {}", key.expose()),
            _ => return None,
        };
        Some(("Authorization", value))
    }

    /// A request to `{url}{path}` with the sink's authentication and headers.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", base_url(self.sink));
        request(self.client, self.sink, method, url, self.auth())
    }

    fn bulk_path(&self) -> String {
        match &self.sink.pipeline {
            Some(p) => format!("/_bulk?pipeline={}", url_component(p)),
            None => "/_bulk".into(),
        }
    }

    /// Reads a final answer to a `_bulk` request.
    fn outcome(&self, reply: Reply, batch: &Batch<'_>) -> Outcome {
        if reply.is_success() {
            let mode = batch_mode(batch, self.sink.mode);
            return read_answer(batch.op, mode, &reply.body, batch.records.len());
        }
        let message = reply.describe(self.sink);
        match reply.status {
            401 | 403 => Outcome::Down(format!(
                "{message} (the cluster refused the sink's credentials: check username/password, api_key or headers)"
            )),
            status => Outcome::from_batch_status(status, message),
        }
    }
}

/// Percent-encodes a query value.
fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl super::Kind for Elasticsearch<'_> {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        let sink = self.sink;
        let index = if batch.op == Op::Event {
            sink.events_index()
        } else {
            sink.index.clone().unwrap_or_default()
        };
        let body = match encode_body(sink, encode(batch, &index, sink.mode)) {
            Ok(b) => b,
            Err(m) => return Outcome::Down(m),
        };
        let path = self.bulk_path();
        let build = || {
            self.request(reqwest::Method::POST, &path)
                .header(CONTENT_TYPE, "application/x-ndjson")
        };
        match exchange(
            sink,
            build,
            body,
            sink.compression == Compression::Gzip,
            report,
        )
        .await
        {
            Err(m) => Outcome::Down(m),
            Ok(reply) => self.outcome(reply, batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::acks::PendingRecord;

    fn rec(uid: &str) -> PendingRecord {
        PendingRecord {
            uid: uid.into(),
            user_name: uid.into(),
            content_hash: "h".into(),
            record: format!("{{\"time\":1,\"user\":{{\"uid\":\"{uid}\"}}}}"),
            time_ms: 1,
            is_update: false,
            last_changed: 1,
        }
    }

    #[test]
    fn bodies_pair_actions_with_sources_and_end_with_a_newline() {
        let (a, b) = (
            rec("arn:aws:iam::1:user/a"),
            rec("arn:aws:iam::1:user/\"b\""),
        );
        let batch = Batch {
            op: Op::Create,
            records: vec![&a, &b],
        };
        let body = String::from_utf8(encode(&batch, "iam-users", SinkMode::CreateUpdate)).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(body.ends_with('\n'));
        let action: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(action["index"]["_id"], "arn:aws:iam::1:user/\"b\"");
        assert_eq!(action["index"]["_index"], "iam-users");
        let update = String::from_utf8(encode(&batch, "i", SinkMode::UpdateOnly)).unwrap();
        let doc: serde_json::Value = serde_json::from_str(update.lines().nth(1).unwrap()).unwrap();
        assert_eq!(doc["doc"]["user"]["uid"], "arn:aws:iam::1:user/a");
        assert!(update.starts_with("{\"update\":"));
        // Deletes are action lines only, whatever the mode.
        let deletes = Batch {
            op: Op::Delete,
            records: vec![&a, &b],
        };
        for mode in [SinkMode::CreateUpdate, SinkMode::UpdateOnly] {
            let body = String::from_utf8(encode(&deletes, "i", mode)).unwrap();
            assert_eq!(body.lines().count(), 2, "{body}");
            assert!(
                body.lines().all(|l| l.starts_with("{\"delete\":")),
                "{body}"
            );
        }
    }

    #[test]
    fn items_are_read_per_record() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_id":"a","status":201}},
            {"create":{"_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"_id":"d","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}}]}"#;
        let Outcome::Records(out) = read_answer(Op::Create, SinkMode::CreateOnly, body, 4) else {
            panic!("records expected");
        };
        assert_eq!(out[0], RecordOutcome::Acked);
        assert_eq!(out[1], RecordOutcome::Acked, "409 on create: already there");
        assert!(matches!(out[2], RecordOutcome::Retry(_)));
        assert_eq!(
            out[3],
            RecordOutcome::Rejected("_bulk item 400 mapper_parsing_exception: bad field".into())
        );
        // The same 409 under create-update is not a success.
        let Outcome::Records(out) = read_answer(Op::Create, SinkMode::CreateUpdate, body, 4) else {
            panic!("records expected");
        };
        assert!(matches!(out[1], RecordOutcome::Rejected(_)));
        // An answer that does not match the request acknowledges nothing.
        assert!(matches!(
            read_answer(Op::Create, SinkMode::CreateOnly, body, 5),
            Outcome::Failed(_)
        ));
    }
}

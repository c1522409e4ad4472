//! `type = "oomnitza"`: Oomnitza's bulk API. Each sync opens one `portion` (a UUID) per sink; every
//! batch is `POST {url}/api/v3/bulk` with `Authorization2: <token>` and `{"portion", "records",
//! "sync_field", "data_type", "insert_only", "update_only", "connector_name"}` (the mode decides
//! `insert_only`/`update_only`); after the last batch, `POST {url}/api/v3/bulk/{portion}/finalize`
//! asks Oomnitza to apply the portion. Records are the sink's mapped fields (`[sinks.fields]` is
//! required), matched on `sync_field`.
//!
//! Nothing is acknowledged before the finalize succeeds: a failed finalize leaves every record of
//! the portion pending, and the next sync sends them again under a new portion.

use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use super::batch::Batch;
use super::transport::{base_url, encode_body, exchange, request};
use super::{Outcome, SinkReport};
use crate::config::{Compression, SinkConfig, SinkMode};

pub struct Oomnitza<'a> {
    pub client: &'a reqwest::Client,
    pub sink: &'a SinkConfig,
    /// This sync's portion.
    pub portion: String,
    /// Whether any batch went into the portion (an empty portion is not finalized).
    posted: std::sync::atomic::AtomicBool,
}

/// A random version-4 UUID.
pub fn new_portion() -> String {
    let mut b = [0u8; 16];
    b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    super::transport::uuid_v4(b)
}

impl<'a> Oomnitza<'a> {
    pub fn new(client: &'a reqwest::Client, sink: &'a SinkConfig) -> Oomnitza<'a> {
        Oomnitza {
            client,
            sink,
            portion: new_portion(),
            posted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A request to `{url}{path}` with the token in `Authorization2` and the sink's `headers`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self
            .sink
            .token
            .as_ref()
            .map(|t| t.expose())
            .unwrap_or_default();
        let url = format!("{}{path}", base_url(self.sink));
        request(
            self.client,
            self.sink,
            method,
            url,
            Some(("Authorization2", token.to_string())),
        )
    }

    /// The batch body: the portion's parameters and the records.
    pub fn encode(&self, batch: &Batch<'_>) -> Vec<u8> {
        let s = self.sink;
        let head = json!({
            "portion": self.portion,
            "sync_field": s.sync_fields(),
            "data_type": s.data_type.as_deref().unwrap_or("users"),
            "insert_only": s.mode == SinkMode::CreateOnly,
            "update_only": s.mode == SinkMode::UpdateOnly,
            "connector_name": s.connector_name.as_deref().unwrap_or_default(),
        })
        .to_string();
        // `{…head…,"records":[…]}`: the records are already JSON text.
        let records = batch.encode(crate::config::SinkFormat::Json);
        let mut body = Vec::with_capacity(head.len() + records.len() + 16);
        body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        body.extend_from_slice(b",\"records\":");
        body.extend_from_slice(&records);
        body.push(b'}');
        body
    }

    fn refused(&self, status: u16, message: String) -> Outcome {
        match status {
            401 | 403 => Outcome::Down(format!(
                "{message} (Oomnitza refused the token of sink {:?})",
                self.sink.name
            )),
            _ => Outcome::from_batch_status(status, message),
        }
    }
}

impl super::Kind for Oomnitza<'_> {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        let sink = self.sink;
        let body = match encode_body(sink, self.encode(batch)) {
            Ok(b) => b,
            Err(m) => return Outcome::Down(m),
        };
        let build = || {
            self.request(reqwest::Method::POST, "/api/v3/bulk")
                .header(CONTENT_TYPE, "application/json")
        };
        let gzipped = sink.compression == Compression::Gzip;
        match exchange(sink, build, body, gzipped, report).await {
            Err(m) => Outcome::Down(m),
            Ok(r) if r.is_success() => {
                self.posted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Outcome::all_acked(batch)
            }
            Ok(r) => self.refused(r.status, r.describe(sink)),
        }
    }

    fn defers_acks(&self) -> bool {
        true
    }

    async fn finish(&self, report: &mut SinkReport) -> Result<(), String> {
        if !self.posted.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let path = format!("/api/v3/bulk/{}/finalize", self.portion);
        let build = || {
            self.request(reqwest::Method::POST, &path)
                .header(CONTENT_TYPE, "application/json")
        };
        match exchange(self.sink, build, bytes::Bytes::new(), false, report).await {
            Ok(r) if r.is_success() => Ok(()),
            Ok(r) => Err(format!(
                "finalize of portion {}: {} (its records are sent again next sync, in a new portion)",
                self.portion,
                r.describe(self.sink)
            )),
            Err(m) => Err(format!(
                "finalize of portion {}: {m} (its records are sent again next sync, in a new portion)",
                self.portion
            )),
        }
    }
}

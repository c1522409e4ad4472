//! `type = "http"`: one POST of NDJSON or a JSON array per batch (the v1 wire).
//!
//! Answers: 2xx acknowledges the batch; 413 and 400/422 split it (see [`super::Outcome`]) so one bad
//! record cannot hold back the rest; 401/403/404/405 stop the sink for this sync (every batch would
//! fail alike); any other 4xx fails this batch only.

use reqwest::header::CONTENT_TYPE;

use super::batch::Batch;
use super::transport::{encode_body, exchange, with_headers};
use super::{Outcome, SinkReport};
use crate::config::{Compression, SinkConfig, SinkFormat};

pub struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub sink: &'a SinkConfig,
}

impl super::Kind for Http<'_> {
    async fn send(&self, batch: &Batch<'_>, report: &mut SinkReport) -> Outcome {
        let sink = self.sink;
        let url = sink.url.as_ref().map(|u| u.as_str()).unwrap_or_default();
        let body = match encode_body(sink, batch.encode(sink.format)) {
            Ok(b) => b,
            Err(m) => return Outcome::Down(m),
        };
        let key = batch.idempotency_key(&sink.name);
        let content_type = match sink.format {
            SinkFormat::Ndjson => "application/x-ndjson",
            SinkFormat::Json => "application/json",
        };
        let build = || {
            let req = self
                .client
                .post(url)
                .header(CONTENT_TYPE, content_type)
                .header("Idempotency-Key", &key)
                .header("X-IAM-Inventory-Change", batch.change_kind())
                .header("X-IAM-Inventory-Sink", &sink.name)
                .header("X-IAM-Inventory-Records", batch.records.len().to_string());
            with_headers(req, sink)
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
            Ok(r) if r.is_success() => Outcome::all_acked(batch),
            Ok(r) => Outcome::from_batch_status(r.status, r.describe(sink)),
        }
    }
}

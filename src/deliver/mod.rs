//! Deliver: sends what each sink still needs — a query on the store's acknowledged state — in
//! batches, with retries, and acknowledges only what the sink confirmed. Sinks run concurrently and
//! independently: a slow or dead sink delays nobody else and loses nothing of its own.

pub mod batch;
pub mod http;
pub mod retry;

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use tracing::Instrument;

use crate::config::{SinkConfig, SinkType};
use crate::store::Store;
use crate::store::acks::PendingRecord;
use batch::{Batch, batches};

/// Records read from the store per page; a page is split into batches of `batch_size`.
const PAGE: usize = 2000;

/// What one sink did in one sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkReport {
    pub name: String,
    pub mode: &'static str,
    /// Records put on the wire (or written), counted once per batch, retries not counted again.
    pub sent: u64,
    pub acknowledged: u64,
    /// Records this sink still needs after the sync.
    pub pending: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub retries: u64,
    /// The last delivery error, if any.
    pub error: Option<String>,
}

/// Delivers to every sink at once and reports each.
pub async fn deliver_all(
    store: &Arc<Store>,
    sinks: &[SinkConfig],
    client: &reqwest::Client,
    now_ms: fn() -> i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Vec<SinkReport> {
    let tasks = sinks.iter().map(|sink| {
        let stop = stop.clone();
        async move {
            deliver_one(store, sink, client, now_ms, stop)
                .instrument(tracing::info_span!("sink", sink = %sink.name))
                .await
        }
    });
    futures::future::join_all(tasks).await
}

async fn deliver_one(
    store: &Store,
    sink: &SinkConfig,
    client: &reqwest::Client,
    now_ms: fn() -> i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> SinkReport {
    let mut report = SinkReport {
        name: sink.name.clone(),
        mode: sink.mode.as_str(),
        ..Default::default()
    };
    let mut after = String::new();
    'pages: loop {
        let page = match store.pending(&sink.name, sink.mode, &after, PAGE.max(sink.batch_size)) {
            Ok(p) => p,
            Err(e) => {
                report.error = Some(e.to_string());
                break;
            }
        };
        let Some(last) = page.last() else { break };
        after = last.uid.clone();
        for batch in batches(&page, sink.batch_size) {
            // Between batches is a safe point: everything sent so far is acknowledged.
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                break 'pages;
            }
            report.sent += batch.records.len() as u64;
            let outcome = match sink.kind {
                SinkType::Http => http::send(client, sink, &batch, &mut report).await,
                SinkType::Stdout | SinkType::File => {
                    report.requests += 1;
                    let written = if sink.kind == SinkType::Stdout {
                        write_stdout(&batch.records)
                    } else {
                        write_file(sink, &batch.records)
                    };
                    if written.is_err() {
                        report.failed_requests += 1;
                    }
                    written
                }
            };
            match outcome {
                Ok(()) => {
                    let acks: Vec<(&str, &str)> = batch
                        .records
                        .iter()
                        .map(|r| (r.uid.as_str(), r.content_hash.as_str()))
                        .collect();
                    if let Err(e) = store.ack(&sink.name, &acks, now_ms()) {
                        report.error = Some(e.to_string());
                        break 'pages;
                    }
                    report.acknowledged += acks.len() as u64;
                }
                Err(failure) => {
                    tracing::warn!(sink = %sink.name, records = batch.records.len(), error = %failure.message, "delivery failed; records stay pending for the next sync");
                    report.error = Some(failure.message);
                    if failure.sink_down {
                        break 'pages;
                    }
                }
            }
        }
    }
    report.pending = store
        .pending_count(&sink.name, sink.mode)
        .unwrap_or_else(|e| {
            report.error = Some(e.to_string());
            0
        });
    report
}

/// Why a batch was not acknowledged.
#[derive(Debug)]
pub struct DeliveryFailure {
    pub message: String,
    /// The sink is unreachable or failing as a whole (retries exhausted): stop this sink for this
    /// sync. `false` for a rejection of this batch (a 4xx): later batches may still go through.
    pub sink_down: bool,
}

fn write_stdout(records: &[&PendingRecord]) -> Result<(), DeliveryFailure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let res = records
        .iter()
        .try_for_each(|r| writeln!(out, "{}", r.record))
        .and_then(|_| out.flush());
    res.map_err(|e| DeliveryFailure {
        message: format!("cannot write to stdout: {e}"),
        sink_down: true,
    })
}

/// Appends NDJSON and syncs it to disk before acknowledging, for agents that tail the file.
fn write_file(sink: &SinkConfig, records: &[&PendingRecord]) -> Result<(), DeliveryFailure> {
    let Some(path) = &sink.path else {
        return Err(DeliveryFailure {
            message: "file sink without path".into(),
            sink_down: true,
        });
    };
    let fail = |e: std::io::Error| DeliveryFailure {
        message: format!("cannot append to {}: {e}", path.display()),
        sink_down: true,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut buf = Vec::with_capacity(records.iter().map(|r| r.record.len() + 1).sum());
    for r in records {
        buf.extend_from_slice(r.record.as_bytes());
        buf.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(fail)?;
    file.write_all(&buf).map_err(fail)?;
    file.sync_data().map_err(fail)?;
    Ok(())
}

/// Which kind of change a batch carries, as sent in the `X-IAM-Inventory-Change` header.
pub fn change_kind(batch: &Batch<'_>) -> &'static str {
    if batch.is_update { "update" } else { "create" }
}

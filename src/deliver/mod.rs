//! Deliver: sends what each sink still needs — a query on the store's acknowledged state — in
//! batches, and acknowledges only what the sink confirmed. Sinks run concurrently and
//! independently: a slow or dead sink delays nobody else and loses nothing of its own.
//!
//! # The seam
//! A sink *kind* (one file each: [`http`], [`file`], [`stdout`], [`elasticsearch`],
//! [`splunk_hec`]) only turns a batch into a request
//! and the answer into an [`Outcome`]. Everything else is here, written once for every kind:
//! paging through what is pending, modes, batching, splitting a refused batch, re-sending records
//! the sink asked to have again, recording acknowledgements and rejections, and the report. HTTP
//! retries, `Retry-After`, gzip and secret scrubbing are in [`transport`], shared by the HTTP kinds.

pub mod batch;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod probe;
pub mod retry;
pub mod splunk_hec;
pub mod stdout;
pub mod transport;

use std::sync::Arc;

use serde::Serialize;
use tracing::Instrument;

use crate::config::{SinkConfig, SinkType};
use crate::store::Store;
use crate::store::acks::PendingRecord;
use batch::{Batch, batches};
pub use transport::client;

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
    /// Records this sink still needs after the sync (rejected ones not counted).
    pub pending: u64,
    /// Records the sink refuses in their current content (held back until their content changes).
    pub rejected: u64,
    /// The records this sync saw rejected, by user, with the sink's reason.
    pub rejected_now: Vec<RejectedRecord>,
    pub requests: u64,
    pub failed_requests: u64,
    pub retries: u64,
    /// The last delivery error, if any.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectedRecord {
    pub user: String,
    pub uid: String,
    pub reason: String,
}

/// What became of one batch, as a sink kind reads the answer.
#[derive(Debug)]
pub enum Outcome {
    /// One outcome per record, in batch order.
    Records(Vec<RecordOutcome>),
    /// The batch as a whole was too large (413): it is halved and each half sent.
    TooLarge(String),
    /// The batch as a whole was refused for its content (400/422): it is bisected until the
    /// record(s) at fault are alone, and those are rejected.
    BadContent(String),
    /// This batch was not delivered; later batches may be (its records stay pending).
    Failed(String),
    /// The sink is failing as a whole (down, retries exhausted, authentication): stop it for this
    /// sync; everything not acknowledged stays pending.
    Down(String),
}

/// What became of one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Acked,
    /// The sink asks for this record again (a per-item 429/5xx): re-sent after a backoff, up to
    /// `max_retries` rounds, then left pending for the next sync.
    Retry(String),
    /// The sink refuses this record in this content (a 4xx for it alone): held back until it changes.
    Rejected(String),
}

impl Outcome {
    pub fn all_acked(batch: &Batch<'_>) -> Outcome {
        Outcome::Records(vec![RecordOutcome::Acked; batch.records.len()])
    }

    /// The v1 reading of a whole-batch, non-retryable HTTP status (not 2xx, 3xx, 408, 429, 5xx).
    pub fn from_batch_status(status: u16, message: String) -> Outcome {
        match status {
            413 => Outcome::TooLarge(message),
            400 | 422 => Outcome::BadContent(message),
            // Authentication, authorization and a wrong address fail every batch alike.
            401 | 403 | 404 | 405 => Outcome::Down(format!(
                "{message} (check the sink's url and credentials; not retried until the next sync)"
            )),
            _ => Outcome::Failed(format!("{message} (not retried until the next sync)")),
        }
    }
}

/// A sink kind: turns one batch into requests (or writes) and tells what became of each record.
pub trait Kind {
    fn send(
        &self,
        batch: &Batch<'_>,
        report: &mut SinkReport,
    ) -> impl std::future::Future<Output = Outcome> + Send;
}

/// Delivers to every sink at once and reports each.
pub async fn deliver_all(
    store: &Arc<Store>,
    sinks: &[SinkConfig],
    client: &Result<reqwest::Client, String>,
    now_ms: fn() -> i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Vec<SinkReport> {
    let tasks = sinks.iter().map(|sink| {
        let stop = stop.clone();
        async move {
            let run = Delivery {
                store,
                sink,
                now_ms,
                stop,
            };
            async {
                match (sink.kind, client) {
                    (SinkType::Stdout, _) => run.deliver(&stdout::Stdout).await,
                    (SinkType::File, _) => {
                        let path = sink.path.clone().unwrap_or_default();
                        run.deliver(&file::File::new(path)).await
                    }
                    (SinkType::Http, Ok(client)) => run.deliver(&http::Http { client, sink }).await,
                    (SinkType::Elasticsearch, Ok(client)) => {
                        run.deliver(&elasticsearch::Elasticsearch { client, sink })
                            .await
                    }
                    (SinkType::SplunkHec, Ok(client)) => {
                        run.deliver(&splunk_hec::SplunkHec::new(client, sink)).await
                    }
                    (_, Err(e)) => run.cannot_start(e.clone()),
                }
            }
            .instrument(tracing::info_span!("sink", sink = %sink.name))
            .await
        }
    });
    futures::future::join_all(tasks).await
}

/// One sink's delivery in one sync.
struct Delivery<'a> {
    store: &'a Store,
    sink: &'a SinkConfig,
    now_ms: fn() -> i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Delivery<'_> {
    fn new_report(&self) -> SinkReport {
        SinkReport {
            name: self.sink.name.clone(),
            mode: self.sink.mode.as_str(),
            ..Default::default()
        }
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// A sink that cannot even start (no HTTP client): everything stays pending.
    fn cannot_start(&self, error: String) -> SinkReport {
        let mut report = self.new_report();
        tracing::error!(sink = %self.sink.name, error = %error, "sink not delivered");
        report.error = Some(error);
        self.finish(report)
    }

    async fn deliver<K: Kind>(&self, kind: &K) -> SinkReport {
        let mut report = self.new_report();
        let mut after = String::new();
        'pages: loop {
            let page = match self.store.pending(
                &self.sink.name,
                self.sink.mode,
                &after,
                PAGE.max(self.sink.batch_size),
            ) {
                Ok(p) => p,
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = last.uid.clone();
            for batch in batches(&page, self.sink.batch_size) {
                // Between batches is a safe point: everything sent so far is acknowledged.
                if self.stopping() {
                    break 'pages;
                }
                report.sent += batch.records.len() as u64;
                if self.deliver_batch(kind, batch, &mut report).await.is_err() {
                    break 'pages;
                }
            }
        }
        self.finish(report)
    }

    fn finish(&self, mut report: SinkReport) -> SinkReport {
        let (sink, mode) = (&self.sink.name, self.sink.mode);
        match (
            self.store.pending_count(sink, mode),
            self.store.rejected(sink),
        ) {
            (Ok(pending), Ok(rejected)) => {
                report.pending = pending;
                report.rejected = rejected.len() as u64;
            }
            (Err(e), _) | (_, Err(e)) => report.error = Some(e.to_string()),
        }
        report
    }

    /// One batch, split and re-sent as the sink's answers say. `Err` = the sink is down: stop it.
    async fn deliver_batch<'r, K: Kind>(
        &self,
        kind: &K,
        batch: Batch<'r>,
        report: &mut SinkReport,
    ) -> Result<(), ()> {
        let is_update = batch.is_update;
        let mut work: Vec<Vec<&'r PendingRecord>> = vec![batch.records];
        let mut again: Vec<&'r PendingRecord> = Vec::new();
        let mut round = 0u32;
        loop {
            let Some(records) = work.pop() else {
                if again.is_empty() {
                    return Ok(());
                }
                if round >= self.sink.max_retries {
                    let msg = format!(
                        "{} records still asked to be sent again after {} rounds; left pending for the next sync",
                        again.len(),
                        round + 1
                    );
                    tracing::warn!(sink = %self.sink.name, "{msg}");
                    report.error = Some(msg);
                    return Ok(());
                }
                tokio::time::sleep(retry::backoff(round)).await;
                round += 1;
                report.retries += 1;
                work.push(std::mem::take(&mut again));
                continue;
            };
            if self.stopping() {
                return Err(());
            }
            let sub = Batch { is_update, records };
            match kind.send(&sub, report).await {
                Outcome::Records(outcomes) => {
                    if outcomes.len() != sub.records.len() {
                        // A kind that cannot match its answer to the records acknowledges nothing.
                        report.error = Some(format!(
                            "the sink answered for {} records, {} were sent; nothing acknowledged",
                            outcomes.len(),
                            sub.records.len()
                        ));
                        continue;
                    }
                    let mut acked = Vec::new();
                    let mut rejected = Vec::new();
                    for (r, o) in sub.records.iter().zip(outcomes) {
                        match o {
                            RecordOutcome::Acked => acked.push(*r),
                            RecordOutcome::Retry(why) => {
                                report.error = Some(why);
                                again.push(r);
                            }
                            RecordOutcome::Rejected(why) => rejected.push((*r, why)),
                        }
                    }
                    if self.record(&acked, &rejected, report).is_err() {
                        return Err(());
                    }
                }
                Outcome::TooLarge(why) | Outcome::BadContent(why) if sub.records.len() > 1 => {
                    tracing::info!(sink = %self.sink.name, records = sub.records.len(), error = %why, "batch refused; splitting it to find the records at fault");
                    let (a, b) = sub.records.split_at(sub.records.len() / 2);
                    work.push(b.to_vec());
                    work.push(a.to_vec());
                }
                Outcome::TooLarge(why) | Outcome::BadContent(why) => {
                    let rejected = vec![(sub.records[0], why)];
                    if self.record(&[], &rejected, report).is_err() {
                        return Err(());
                    }
                }
                Outcome::Failed(why) => {
                    tracing::warn!(sink = %self.sink.name, records = sub.records.len(), error = %why, "batch not delivered; its records stay pending for the next sync");
                    report.error = Some(why);
                }
                Outcome::Down(why) => {
                    tracing::warn!(sink = %self.sink.name, error = %why, "sink failing; what it has not acknowledged stays pending for the next sync");
                    report.error = Some(why);
                    return Err(());
                }
            }
        }
    }

    /// Stores acknowledgements and rejections. `Err` = the store failed (the sink stops).
    fn record(
        &self,
        acked: &[&PendingRecord],
        rejected: &[(&PendingRecord, String)],
        report: &mut SinkReport,
    ) -> Result<(), ()> {
        let now = (self.now_ms)();
        if !acked.is_empty() {
            let acks: Vec<(&str, &str)> = acked
                .iter()
                .map(|r| (r.uid.as_str(), r.content_hash.as_str()))
                .collect();
            if let Err(e) = self.store.ack(&self.sink.name, &acks, now) {
                report.error = Some(e.to_string());
                return Err(());
            }
            report.acknowledged += acks.len() as u64;
        }
        if !rejected.is_empty() {
            let rows: Vec<(&str, &str, &str)> = rejected
                .iter()
                .map(|(r, why)| (r.uid.as_str(), r.content_hash.as_str(), why.as_str()))
                .collect();
            if let Err(e) = self.store.reject(&self.sink.name, &rows, now) {
                report.error = Some(e.to_string());
                return Err(());
            }
            for (r, why) in rejected {
                tracing::warn!(sink = %self.sink.name, user = %r.user_name, uid = %r.uid, reason = %why, "record rejected by the sink; held back until its content changes");
                report.rejected_now.push(RejectedRecord {
                    user: r.user_name.clone(),
                    uid: r.uid.clone(),
                    reason: why.clone(),
                });
            }
        }
        Ok(())
    }
}

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
pub mod oomnitza;
pub mod probe;
pub mod retry;
pub mod sekoia;
pub mod splunk_hec;
pub mod stdout;
pub mod transport;

use std::sync::Arc;

use serde::Serialize;
use tracing::Instrument;

use crate::config::{EventStream, OnDelete, SinkConfig, SinkType};
use crate::mapping::Mapping;
use crate::store::Store;
use crate::store::acks::PendingRecord;
use batch::{Batch, Op, batches};
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
    /// The records (or change events) this sync saw rejected, by user, with the sink's reason.
    pub rejected_now: Vec<RejectedRecord>,
    /// Whether the sink takes change events (`events = ["changes"]`).
    pub takes_changes: bool,
    /// OCSF 3001 events put on the wire, and acknowledged.
    pub events_sent: u64,
    pub events_acknowledged: u64,
    /// `events = ["changes"]`: change-log rows whose events this sink still needs.
    pub changes_pending: u64,
    /// `on_delete = "delete"`: deletions the sink confirmed this sync, and those still to send.
    pub deleted: u64,
    pub deletes_pending: u64,
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

    /// Whether inventory acknowledgements wait for [`Kind::finish`] (a destination that applies a
    /// sync's batches only when told to, like Oomnitza's portions).
    fn defers_acks(&self) -> bool {
        false
    }

    /// Called once after the inventory batches of a sync; `Err` leaves every deferred record pending.
    fn finish(
        &self,
        _report: &mut SinkReport,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// Delivers to every sink at once and reports each. `run_id` is the run whose changes a sink that
/// takes change events for the first time starts with.
pub async fn deliver_all(
    store: &Arc<Store>,
    sinks: &[SinkConfig],
    client: &Result<reqwest::Client, String>,
    now_ms: fn() -> i64,
    run_id: i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Vec<SinkReport> {
    // Each sink in its own task: a slow or stuck sink never holds up another one's progress.
    let tasks: Vec<_> = sinks
        .iter()
        .cloned()
        .map(|sink| {
            let (store, client, stop) = (Arc::clone(store), client.clone(), stop.clone());
            let name = sink.name.clone();
            let span = tracing::info_span!("sink", sink = %sink.name);
            let task = tokio::spawn(
                async move { deliver_one(&store, &sink, &client, now_ms, run_id, stop).await }
                    .instrument(span),
            );
            (name, task)
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for ((name, task), sink) in tasks.into_iter().zip(sinks) {
        match task.await {
            Ok(report) => reports.push(report),
            Err(e) => {
                // A panicking sink task is reported as that sink's failure, not the run's.
                tracing::error!(sink = %name, error = %e, "sink delivery task failed");
                let run = Delivery::new(store, sink, now_ms, run_id, None);
                reports.push(run.cannot_start(format!("internal error: {e}")));
            }
        }
    }
    reports
}

async fn deliver_one(
    store: &Store,
    sink: &SinkConfig,
    client: &Result<reqwest::Client, String>,
    now_ms: fn() -> i64,
    run_id: i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> SinkReport {
    let run = Delivery::new(store, sink, now_ms, run_id, stop);
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
        (SinkType::SekoiaAssets, Ok(client)) => run.deliver(&sekoia::Sekoia { client, sink }).await,
        (SinkType::Oomnitza, Ok(client)) => {
            run.deliver(&oomnitza::Oomnitza::new(client, sink)).await
        }
        (_, Err(e)) => run.cannot_start(e.clone()),
    }
}

/// Runs blocking work (SQLite, gzip, fsync) without stalling the other tasks of this worker
/// thread: on the multi-threaded runtime the worker hands its other tasks over first
/// (`block_in_place`); on a current-thread runtime (unit tests) it simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One sink's delivery in one sync.
struct Delivery<'a> {
    store: &'a Store,
    sink: &'a SinkConfig,
    now_ms: fn() -> i64,
    run_id: i64,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// `[sinks.fields]`, and the suffix it adds to what the sink acknowledges.
    mapping: Option<Mapping>,
    view: String,
}

/// What the shared loop tells its caller as records of a batch are settled: the acknowledged ones
/// and the rejected ones (with the sink's reason). `Err` stops the sink (the store failed).
type Settle<'s, 'r> = dyn FnMut(&[&'r PendingRecord], &[(&'r PendingRecord, String)], &mut SinkReport) -> Result<(), ()>
    + Send
    + 's;

impl<'a> Delivery<'a> {
    fn new(
        store: &'a Store,
        sink: &'a SinkConfig,
        now_ms: fn() -> i64,
        run_id: i64,
        stop: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Delivery<'a> {
        let mapping = sink.mapping();
        let view = mapping
            .as_ref()
            .map(|m| format!(":{}", m.fingerprint))
            .unwrap_or_default();
        Delivery {
            store,
            sink,
            now_ms,
            run_id,
            stop,
            mapping,
            view,
        }
    }

    fn new_report(&self) -> SinkReport {
        SinkReport {
            name: self.sink.name.clone(),
            mode: self.sink.mode.as_str(),
            takes_changes: self.sink.takes(EventStream::Changes),
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
        // Deletions first: a user deleted and created again under the same ARN ends up present.
        let mut up = self.deliver_deletes(kind, &mut report).await.is_ok();
        if self.sink.takes(EventStream::Inventory) && up {
            up = self.deliver_inventory(kind, &mut report).await.is_ok();
        }
        if self.sink.takes(EventStream::Changes) && up && !self.stopping() {
            self.deliver_events(kind, &mut report).await;
        }
        self.finish(report)
    }

    /// The 5003 records this sink still needs under its mode. `Err` = the sink is down. For a kind
    /// that defers acknowledgements, they are stored only once its `finish` succeeds.
    async fn deliver_inventory<K: Kind>(
        &self,
        kind: &K,
        report: &mut SinkReport,
    ) -> Result<(), ()> {
        if !kind.defers_acks() {
            return self.send_inventory(kind, report, None).await;
        }
        let mut deferred: Vec<(String, String)> = Vec::new();
        let sent = self.send_inventory(kind, report, Some(&mut deferred)).await;
        if deferred.is_empty() {
            return sent;
        }
        if let Err(why) = kind.finish(report).await {
            tracing::warn!(sink = %self.sink.name, error = %why, records = deferred.len(), "not applied by the destination; the records stay pending");
            report.error = Some(why);
            return Err(());
        }
        let acks: Vec<(&str, &str)> = deferred
            .iter()
            .map(|(u, h)| (u.as_str(), h.as_str()))
            .collect();
        if let Err(e) = blocking(|| self.store.ack(&self.sink.name, &acks, (self.now_ms)())) {
            report.error = Some(e.to_string());
            return Err(());
        }
        report.acknowledged += acks.len() as u64;
        sent
    }

    /// Sends every pending inventory record; acknowledgements go to the store, or into `deferred`.
    async fn send_inventory<K: Kind>(
        &self,
        kind: &K,
        report: &mut SinkReport,
        mut deferred: Option<&mut Vec<(String, String)>>,
    ) -> Result<(), ()> {
        let mut after = String::new();
        loop {
            let page = match blocking(|| {
                self.store.pending(
                    &self.sink.name,
                    self.sink.mode,
                    &self.view,
                    &after,
                    PAGE.max(self.sink.batch_size),
                )
            }) {
                Ok(p) => p,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return Err(());
                }
            };
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.uid.clone();
            let page = self.view_of(page, report)?;
            for batch in batches(&page, self.sink.batch_size) {
                // Between batches is a safe point: everything sent so far is acknowledged.
                if self.stopping() {
                    return Ok(());
                }
                report.sent += batch.records.len() as u64;
                let mut settle = |acked: &[&PendingRecord],
                                  rejected: &[(&PendingRecord, String)],
                                  report: &mut SinkReport| {
                    match deferred.as_deref_mut() {
                        Some(later) => {
                            later.extend(
                                acked
                                    .iter()
                                    .map(|r| (r.uid.clone(), r.content_hash.clone())),
                            );
                            self.record(&[], rejected, report)
                        }
                        None => self.record(acked, rejected, report),
                    }
                };
                self.deliver_batch(kind, batch, report, &mut settle).await?;
            }
        }
    }

    /// With `[sinks.fields]`, each record becomes the flat object of its mapped fields. A record
    /// the mapping cannot be evaluated on is rejected (named, held back until it changes) without
    /// being sent.
    fn view_of(
        &self,
        page: Vec<PendingRecord>,
        report: &mut SinkReport,
    ) -> Result<Vec<PendingRecord>, ()> {
        let Some(mapping) = &self.mapping else {
            return Ok(page);
        };
        let now = (self.now_ms)();
        let mut out = Vec::with_capacity(page.len());
        let mut failed = Vec::new();
        for mut r in page {
            let mapped = serde_json::from_str(&r.record)
                .map_err(|e| e.to_string())
                .and_then(|v| mapping.apply(&v, now));
            match mapped {
                Ok(v) => {
                    r.record = v.to_string();
                    out.push(r);
                }
                Err(why) => failed.push((r, format!("cannot map the record: {why}"))),
            }
        }
        if !failed.is_empty() {
            let rejected: Vec<(&PendingRecord, String)> =
                failed.iter().map(|(r, why)| (r, why.clone())).collect();
            self.record(&[], &rejected, report)?;
        }
        Ok(out)
    }

    /// `on_delete = "delete"`: users deleted from IAM that this sink had, removed from it. A sink
    /// that keeps deleted users forgets the queue instead. `Err` = the sink is down.
    async fn deliver_deletes<K: Kind>(&self, kind: &K, report: &mut SinkReport) -> Result<(), ()> {
        let name = &self.sink.name;
        if self.sink.on_delete == OnDelete::Keep {
            return blocking(|| self.store.forget_deletes(name, None)).map_err(|e| {
                report.error = Some(e.to_string());
            });
        }
        loop {
            let page = match self
                .store
                .pending_deletes(name, PAGE.max(self.sink.batch_size))
            {
                Ok(p) => p,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return Err(());
                }
            };
            if page.is_empty() {
                return Ok(());
            }
            let mut settled = 0;
            for chunk in page.chunks(self.sink.batch_size.max(1)) {
                if self.stopping() {
                    return Ok(());
                }
                let batch = Batch {
                    op: Op::Delete,
                    records: chunk.iter().collect(),
                };
                let mut settle = |acked: &[&PendingRecord],
                                  rejected: &[(&PendingRecord, String)],
                                  report: &mut SinkReport| {
                    let uids: Vec<&str> = acked
                        .iter()
                        .map(|r| r.uid.as_str())
                        .chain(rejected.iter().map(|(r, _)| r.uid.as_str()))
                        .collect();
                    settled += uids.len();
                    report.deleted += acked.len() as u64;
                    for (r, why) in rejected {
                        report.rejected_now.push(RejectedRecord {
                            user: r.user_name.clone(),
                            uid: r.uid.clone(),
                            reason: format!("delete: {why}"),
                        });
                    }
                    self.store
                        .forget_deletes(name, Some(&uids))
                        .map_err(|e| report.error = Some(e.to_string()))
                };
                self.deliver_batch(kind, batch, report, &mut settle).await?;
            }
            if settled < page.len() {
                // Some deletions were not confirmed: they stay queued for the next sync.
                return Ok(());
            }
        }
    }

    /// The OCSF 3001 events of every change after this sink's cursor, in change order. The cursor
    /// moves past a change row only once every event of it is acknowledged (or rejected, which is
    /// reported and not retried: one poison event must not stop every later one); the first event
    /// not delivered stops the stream for this sync, and the next sync starts again from it.
    async fn deliver_events<K: Kind>(&self, kind: &K, report: &mut SinkReport) {
        let name = &self.sink.name;
        let mut cursor = match blocking(|| self.store.event_cursor(name, self.run_id)) {
            Ok(c) => c,
            Err(e) => {
                report.error = Some(e.to_string());
                return;
            }
        };
        loop {
            let rows = match blocking(|| self.store.changes_after(cursor, PAGE)) {
                Ok(r) => r,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return;
                }
            };
            let Some(last_row) = rows.last().and_then(|r| r.id) else {
                return;
            };
            let events: Vec<(i64, PendingRecord)> = rows
                .iter()
                .flat_map(|row| {
                    let id = row.id.unwrap_or_default();
                    row.events().into_iter().map(move |e| {
                        let uid = e["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        (
                            id,
                            PendingRecord {
                                uid,
                                user_name: row.user_name.clone(),
                                content_hash: String::new(),
                                record: e.to_string(),
                                time_ms: row.at,
                                is_update: false,
                                last_changed: row.at,
                            },
                        )
                    })
                })
                .collect();
            if events.is_empty() {
                // Rows that make no event (nothing a SIEM would act on): past them.
                cursor = last_row;
                if let Err(e) =
                    blocking(|| self.store.set_event_cursor(name, cursor, (self.now_ms)()))
                {
                    report.error = Some(e.to_string());
                    return;
                }
                continue;
            }
            let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
            for chunk in events.chunks(self.sink.batch_size.max(1)) {
                if self.stopping() {
                    return;
                }
                report.events_sent += chunk.len() as u64;
                let batch = Batch {
                    op: Op::Event,
                    records: chunk.iter().map(|(_, r)| r).collect(),
                };
                let mut settle = |acked: &[&PendingRecord],
                                  rejected: &[(&PendingRecord, String)],
                                  report: &mut SinkReport| {
                    report.events_acknowledged += acked.len() as u64;
                    done.extend(acked.iter().map(|r| r.uid.clone()));
                    for (r, why) in rejected {
                        tracing::warn!(sink = %self.sink.name, user = %r.user_name, event = %r.uid, reason = %why, "change event rejected by the sink; skipped");
                        done.insert(r.uid.clone());
                        report.rejected_now.push(RejectedRecord {
                            user: r.user_name.clone(),
                            uid: r.uid.clone(),
                            reason: format!("change event: {why}"),
                        });
                    }
                    Ok(())
                };
                let down = self
                    .deliver_batch(kind, batch, report, &mut settle)
                    .await
                    .is_err();
                let first_open = events.iter().find(|(_, r)| !done.contains(&r.uid));
                let reached = match first_open {
                    Some((row, _)) => row - 1,
                    None => last_row,
                };
                if reached > cursor {
                    cursor = reached;
                    if let Err(e) =
                        blocking(|| self.store.set_event_cursor(name, cursor, (self.now_ms)()))
                    {
                        report.error = Some(e.to_string());
                        return;
                    }
                }
                let chunk_open = chunk.iter().any(|(_, r)| !done.contains(&r.uid));
                if down || chunk_open {
                    return;
                }
            }
        }
    }

    fn finish(&self, mut report: SinkReport) -> SinkReport {
        let (sink, mode) = (&self.sink.name, self.sink.mode);
        if self.sink.takes(EventStream::Inventory) {
            match (
                blocking(|| self.store.pending_count(sink, mode, &self.view)),
                blocking(|| self.store.rejected(sink, &self.view)),
            ) {
                (Ok(pending), Ok(rejected)) => {
                    report.pending = pending;
                    report.rejected = rejected.len() as u64;
                }
                (Err(e), _) | (_, Err(e)) => report.error = Some(e.to_string()),
            }
        }
        if self.sink.on_delete == OnDelete::Delete {
            match blocking(|| self.store.deletes_pending(sink)) {
                Ok(n) => report.deletes_pending = n,
                Err(e) => report.error = Some(e.to_string()),
            }
        }
        if self.sink.takes(EventStream::Changes) {
            let behind = self
                .store
                .event_cursor(sink, self.run_id)
                .and_then(|c| blocking(|| self.store.changes_pending(c)));
            match behind {
                Ok(n) => report.changes_pending = n,
                Err(e) => report.error = Some(e.to_string()),
            }
        }
        report
    }

    /// One batch, split and re-sent as the sink's answers say; `settle` hears of every record that
    /// is acknowledged or rejected. `Err` = the sink is down (or the store failed): stop it.
    async fn deliver_batch<'r, K: Kind>(
        &self,
        kind: &K,
        batch: Batch<'r>,
        report: &mut SinkReport,
        settle: &mut Settle<'_, 'r>,
    ) -> Result<(), ()> {
        let op = batch.op;
        let total = batch.records.len();
        let mut work: Vec<Vec<&'r PendingRecord>> = vec![batch.records];
        let mut again: Vec<&'r PendingRecord> = Vec::new();
        let mut round = 0u32;
        // Rejections are settled at the end: a sink that refused every record of the batch is
        // refusing the batch (a missing pipeline, a strict mapping, a receiver that answers 400 to
        // everything), not each record, and holding every user back for it would lose them all.
        let mut rejections: Vec<(&'r PendingRecord, String)> = Vec::new();
        let mut acked_any = false;
        let result = loop {
            let Some(records) = work.pop() else {
                if again.is_empty() {
                    break Ok(());
                }
                if round >= self.sink.max_retries {
                    let msg = format!(
                        "{} records still asked to be sent again after {} rounds; left pending for the next sync",
                        again.len(),
                        round + 1
                    );
                    tracing::warn!(sink = %self.sink.name, "{msg}");
                    report.error = Some(msg);
                    break Ok(());
                }
                tokio::time::sleep(retry::backoff(round)).await;
                round += 1;
                report.retries += 1;
                work.push(std::mem::take(&mut again));
                continue;
            };
            if self.stopping() {
                break Err(());
            }
            let sub = Batch { op, records };
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
                    acked_any |= !acked.is_empty();
                    settle(&acked, &[], report)?;
                    rejections.extend(rejected);
                }
                Outcome::TooLarge(why) | Outcome::BadContent(why) if sub.records.len() > 1 => {
                    tracing::info!(sink = %self.sink.name, records = sub.records.len(), error = %why, "batch refused; splitting it to find the records at fault");
                    let (a, b) = sub.records.split_at(sub.records.len() / 2);
                    work.push(b.to_vec());
                    work.push(a.to_vec());
                }
                Outcome::TooLarge(why) | Outcome::BadContent(why) => {
                    rejections.push((sub.records[0], why));
                }
                Outcome::Failed(why) => {
                    tracing::warn!(sink = %self.sink.name, records = sub.records.len(), error = %why, "batch not delivered; its records stay pending for the next sync");
                    report.error = Some(why);
                }
                Outcome::Down(why) => {
                    tracing::warn!(sink = %self.sink.name, error = %why, "sink failing; what it has not acknowledged stays pending for the next sync");
                    report.error = Some(why);
                    break Err(());
                }
            }
        };
        if rejections.len() >= 2 && !acked_any && rejections.len() == total {
            let why = format!(
                "the sink refused every one of {} records ({}): a refusal of the whole batch, not of each record; they stay pending",
                total, rejections[0].1
            );
            tracing::warn!(sink = %self.sink.name, "{why}");
            report.error = Some(why);
        } else if !rejections.is_empty() {
            settle(&[], &rejections, report)?;
        }
        result
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
            if let Err(e) = blocking(|| self.store.ack(&self.sink.name, &acks, now)) {
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
            if let Err(e) = blocking(|| self.store.reject(&self.sink.name, &rows, now)) {
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

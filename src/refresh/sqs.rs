//! The SQS source loop: long-poll, gather a burst, refresh, delete what is stored.

use std::time::Duration;

use tokio::sync::watch;

use super::{Hooks, RefreshReport, Refresher};
use crate::collect::calls::CallCounter;
use crate::collect::events::sqs::{Message, Queue};
use crate::collect::events::{self, Parsed};
use crate::config::EventsSourceConfig;

/// At most this many messages make one refresh (a burst beyond it is the next refresh).
const MAX_BATCH: usize = 100;

pub async fn run(
    mut refresher: Refresher,
    source: EventsSourceConfig,
    hooks: Hooks,
    mut stop: watch::Receiver<bool>,
) {
    let base = crate::collect::build_base_config(&refresher.config().aws).await;
    let url = source.queue_url.clone().unwrap_or_default();
    let queue = Queue::new(
        &base,
        &url,
        &source.effective_region(),
        CallCounter::default(),
    );
    match queue.probe().await {
        Ok(waiting) => {
            tracing::info!(queue = %url, waiting, "incremental refresh: reading IAM events from SQS")
        }
        Err(e) => {
            tracing::error!(queue = %url, error = %e, "incremental refresh: cannot read the queue (retrying)")
        }
    }
    if refresher.config().shard.is_sharded() {
        tracing::warn!(queue = %url, "several shards reading one queue: a shard leaves other shards' messages, which come back after the visibility timeout and count toward the dead-letter queue's maxReceiveCount; give each shard its own queue (an EventBridge rule per shard matching its accounts) or use type = \"cloudtrail\"");
    }
    let mut backoff = Backoff::default();
    loop {
        if !hooks.wait_idle(&mut stop).await {
            break;
        }
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = queue.receive(source.wait_secs as i32, 10) => r,
        };
        let mut messages = match first {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(queue = %url, error = %e, "incremental refresh: ReceiveMessage failed");
                hooks.source_error();
                if !backoff.wait(&mut stop).await {
                    break;
                }
                continue;
            }
        };
        backoff.reset();
        if messages.is_empty() {
            continue;
        }
        // A burst (one user changed five ways in a second) is one refresh.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(source.coalesce_ms);
        while messages.len() < MAX_BATCH && tokio::time::Instant::now() < deadline {
            match queue.receive(1, 10).await {
                Ok(more) if more.is_empty() => break,
                Ok(more) => messages.extend(more),
                Err(_) => break,
            }
        }
        let mut report = RefreshReport {
            source: "sqs",
            received: messages.len(),
            ..Default::default()
        };
        let mut parsed = Vec::new();
        let mut done: Vec<&Message> = Vec::new();
        let mut events_of: Vec<(&Message, String)> = Vec::new();
        for m in &messages {
            match events::from_eventbridge(&m.body) {
                Err(why) => {
                    // Never deleted here: the queue's redrive policy moves it to the DLQ.
                    report.malformed += 1;
                    tracing::warn!(message_id = %m.id, receive_count = m.receive_count, reason = %why, "malformed SQS message left to the queue's redrive policy (dead-letter queue)");
                }
                Ok(Parsed::Ignored(i)) => {
                    report.ignore(i.reason);
                    done.push(m);
                }
                Ok(Parsed::Event(e)) => {
                    events_of.push((m, e.account_id.clone()));
                    parsed.push(*e);
                }
            }
        }
        let applied = {
            let _gate = hooks.gate.lock().await;
            refresher.apply(parsed, report, Some(stop.clone())).await
        };
        match applied {
            Ok(report) => {
                let failed = report.unacknowledged();
                done.extend(
                    events_of
                        .iter()
                        .filter(|(_, account)| !failed.contains(account))
                        .map(|(m, _)| *m),
                );
                if let Err(e) = queue.delete(&done).await {
                    tracing::warn!(error = %e, "incremental refresh: stored, but the messages could not be deleted; they will be refreshed again (harmless)");
                }
                super::log_report(&report);
                (hooks.on_report)(&report);
            }
            Err(e) => {
                tracing::error!(error = %e, "incremental refresh could not store its changes; the messages stay in the queue");
                hooks.source_error();
                if !backoff.wait(&mut stop).await {
                    break;
                }
            }
        }
    }
    tracing::info!("incremental refresh (sqs) stopped");
}

/// 1 s doubling to 60 s between failed attempts, cut short by shutdown.
#[derive(Default)]
pub(super) struct Backoff(u32);

impl Backoff {
    pub(super) fn reset(&mut self) {
        self.0 = 0;
    }
    /// `false` when shutdown came first.
    pub(super) async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let secs = (1u64 << self.0.min(6)).min(60);
        self.0 += 1;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => false,
            _ = tokio::time::sleep(Duration::from_secs(secs)) => true,
        }
    }
}

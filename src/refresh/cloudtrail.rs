//! The CloudTrail source loop: every `poll_secs`, LookupEvents per account from its stored cursor
//! (minus the overlap for late events), refresh what is new, then move the cursors of the
//! accounts whose refresh is stored.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::{Hooks, RefreshReport, Refresher};
use crate::clock::now_ms;
use crate::collect::events::cloudtrail::Trail;
use crate::collect::events::{self, Parsed};
use crate::config::EventsSourceConfig;

/// Seen-event ids are kept this long past the overlap window.
const SEEN_KEEP_MS: i64 = 24 * 3600 * 1000;

pub async fn run(
    mut refresher: Refresher,
    source: EventsSourceConfig,
    hooks: Hooks,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(
        accounts = refresher.accounts().len(),
        poll_secs = source.poll_secs,
        "incremental refresh: polling CloudTrail LookupEvents"
    );
    let region = source.trail_region();
    let pace = source.lookup_pace();
    let overlap_ms = (source.overlap_secs as i64) * 1000;
    loop {
        if !hooks.wait_idle(&mut stop).await {
            break;
        }
        match poll_once(&mut refresher, &region, pace, overlap_ms, &hooks, &stop).await {
            Ok(Some(report)) => {
                super::log_report(&report);
                (hooks.on_report)(&report);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "incremental refresh could not store its changes; the cursors stay where they were");
                hooks.source_error();
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(Duration::from_secs(source.poll_secs)) => {}
        }
    }
    tracing::info!("incremental refresh (cloudtrail) stopped");
}

/// One poll of every account. `None` when nothing at all was read.
pub async fn poll_once(
    refresher: &mut Refresher,
    region: &str,
    pace: Duration,
    overlap_ms: i64,
    hooks: &Hooks,
    stop: &watch::Receiver<bool>,
) -> Result<Option<RefreshReport>, crate::store::StoreError> {
    let store = refresher.store().clone();
    let end = now_ms();
    let concurrency = refresher.config().collect.account_concurrency;
    let accounts = refresher.accounts();
    let mut polled = Vec::new();
    for acc in &accounts {
        let source = format!("cloudtrail:{}", acc.account_id);
        let start = store.event_source_cursor(&source)?.unwrap_or(end) - overlap_ms;
        polled.push((acc.clone(), source, start));
    }
    let lookups: Vec<_> = futures::stream::iter(polled)
        .map(|(acc, source, start)| async move {
            let trail = Trail::new(&acc.sdk, region, acc.counter.clone());
            let found = trail.lookup(start, end, pace).await;
            (acc, source, found)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut report = RefreshReport {
        source: "cloudtrail",
        ..Default::default()
    };
    let mut parsed = Vec::new();
    // Per account that answered: its cursor source and the events read (id, time).
    type Answered = (String, String, Vec<(String, i64)>);
    let mut answered: Vec<Answered> = Vec::new();
    for (acc, source, found) in lookups {
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(account = %acc.account_id, error = %e, "CloudTrail LookupEvents failed; this account's cursor stays and is read again next poll");
                hooks.source_error();
                continue;
            }
        };
        report.malformed += found.malformed;
        let ids: Vec<&str> = found
            .records
            .iter()
            .filter_map(|r| r.get("eventID").and_then(|v| v.as_str()))
            .collect();
        let seen: HashSet<String> = store.seen_events(&ids)?;
        let mut read = Vec::new();
        for record in &found.records {
            let id = record
                .get("eventID")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if seen.contains(id) {
                continue;
            }
            report.received += 1;
            match events::from_record(record) {
                Err(why) => {
                    report.malformed += 1;
                    tracing::warn!(account = %acc.account_id, event_id = id, reason = %why, "unreadable CloudTrail record; skipped");
                }
                Ok(Parsed::Ignored(i)) => {
                    report.ignore(i.reason);
                    read.push((id.to_string(), i.time_ms.unwrap_or(end)));
                }
                Ok(Parsed::Event(e)) if e.account_id != acc.account_id => {
                    // An organization trail can show another account's events: that account's
                    // own poll covers them.
                    report.ignore("another account's event");
                    read.push((e.id.clone(), e.time_ms));
                }
                Ok(Parsed::Event(e)) => {
                    read.push((e.id.clone(), e.time_ms));
                    parsed.push(*e);
                }
            }
        }
        answered.push((acc.account_id.clone(), source, read));
    }
    if report.received == 0 && report.malformed == 0 && answered.is_empty() {
        return Ok(None);
    }
    let applied = {
        let _gate = hooks.gate.lock().await;
        refresher.apply(parsed, report, Some(stop.clone())).await?
    };
    let failed = applied.failed_accounts();
    for (account, source, read) in answered {
        if failed.contains(&account) {
            continue;
        }
        store.advance_event_source(&source, end, &read, now_ms())?;
    }
    store.prune_seen_events(end - overlap_ms - SEEN_KEEP_MS)?;
    Ok((applied.received > 0 || applied.malformed > 0).then_some(applied))
}

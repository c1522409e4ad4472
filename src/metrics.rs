//! Prometheus metrics for the daemon, fed from each run's [`RunReport`] (so the metrics and the
//! run summary are the same numbers), rendered in the text exposition format by hand.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::pipeline::RunReport;

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    syncs: BTreeMap<&'static str, u64>,
    ticks_skipped: u64,
    last_start_ms: Option<i64>,
    last_end_ms: Option<i64>,
    last_success: Option<bool>,
    /// account → users in the last successful collection of that account.
    users: BTreeMap<String, u64>,
    /// account → 1 when its last collection succeeded.
    account_up: BTreeMap<String, u64>,
    /// (account, kind) → changes.
    changes: BTreeMap<(String, &'static str), u64>,
    /// (account, operation) → attempts / throttles.
    calls: BTreeMap<(String, String), u64>,
    throttles: BTreeMap<(String, String), u64>,
    sink_requests: BTreeMap<String, u64>,
    sink_failed: BTreeMap<String, u64>,
    sink_sent: BTreeMap<String, u64>,
    sink_acked: BTreeMap<String, u64>,
    sink_pending: BTreeMap<String, u64>,
    /// sink → records it rejects in their current content.
    sink_rejected: BTreeMap<String, u64>,
    /// sink → records rejected so far (each rejection counted once, in the sync that hit it).
    sink_rejections: BTreeMap<String, u64>,
    /// account → bulk collections that fell back to per-user calls.
    bulk_fallbacks: BTreeMap<String, u64>,
    /// sink → change events sent and acknowledged; change rows it still needs.
    events_sent: BTreeMap<String, u64>,
    events_acked: BTreeMap<String, u64>,
    changes_pending: BTreeMap<String, u64>,
    /// sink → change events pruned by retention before it delivered them.
    events_pruned: BTreeMap<String, u64>,
    /// Incremental refresh: IAM events read, by outcome (`refreshed`, `malformed`,
    /// `ignored: <reason>`…); users refreshed; refreshes by status; source failures.
    iam_events: BTreeMap<String, u64>,
    users_refreshed: u64,
    refreshes: BTreeMap<&'static str, u64>,
    source_errors: u64,
    /// Event time → delivered, of the last refresh (seconds), and over all refreshes.
    lag_last: Option<f64>,
    lag_sum: f64,
    lag_count: u64,
}

impl Metrics {
    pub fn record_run(&mut self, r: &RunReport) {
        *self.syncs.entry(r.status().as_str()).or_default() += 1;
        self.last_start_ms = Some(r.started_ms);
        self.last_end_ms = Some(r.finished_ms);
        self.last_success = Some(r.exit_code() == 0);
        for a in &r.accounts {
            self.account_up
                .insert(a.account_id.clone(), u64::from(a.ok));
            if a.ok {
                self.users.insert(a.account_id.clone(), a.users as u64);
            }
            if a.fallback.is_some() {
                *self.bulk_fallbacks.entry(a.account_id.clone()).or_default() += 1;
            }
            self.record_account(
                &a.account_id,
                [
                    ("created", a.created),
                    ("updated", a.updated),
                    ("deleted", a.deleted),
                    ("retired", a.retired),
                ],
                &a.calls,
            );
        }
        self.record_sinks(&r.sinks);
        for (sink, n) in &r.pruned.undelivered {
            *self.events_pruned.entry(sink.clone()).or_default() += n;
        }
        for (account, n) in &r.retired_accounts {
            *self
                .changes
                .entry((account.clone(), "retired"))
                .or_default() += *n as u64;
            self.users.remove(account);
            self.account_up.remove(account);
        }
    }

    /// One incremental refresh.
    pub fn record_refresh(&mut self, r: &crate::refresh::RefreshReport) {
        let status = if r.failed_accounts().is_empty() {
            "ok"
        } else {
            "partial"
        };
        *self.refreshes.entry(status).or_default() += 1;
        *self.iam_events.entry("refreshed".into()).or_default() += r.events as u64;
        *self.iam_events.entry("malformed".into()).or_default() += r.malformed as u64;
        for (reason, n) in &r.ignored {
            *self
                .iam_events
                .entry(format!("ignored: {reason}"))
                .or_default() += *n as u64;
        }
        self.users_refreshed += r.users() as u64;
        for a in &r.accounts {
            self.record_account(
                &a.account_id,
                [
                    ("created", a.created),
                    ("updated", a.updated),
                    ("deleted", a.deleted),
                ],
                &a.calls,
            );
        }
        self.record_sinks(&r.sinks);
        if let Some(lag) = r.lag_ms().filter(|_| r.events > 0) {
            let secs = lag.max(0) as f64 / 1000.0;
            self.lag_last = Some(secs);
            self.lag_sum += secs;
            self.lag_count += 1;
        }
    }

    /// One account's changes by kind and its AWS calls (a sync's or a refresh's).
    fn record_account<const N: usize>(
        &mut self,
        account: &str,
        changes: [(&'static str, usize); N],
        calls: &crate::collect::CallStats,
    ) {
        for (kind, n) in changes {
            *self.changes.entry((account.to_string(), kind)).or_default() += n as u64;
        }
        for (op, n) in &calls.attempts {
            *self
                .calls
                .entry((account.to_string(), op.clone()))
                .or_default() += n;
        }
        for (op, n) in &calls.throttles {
            *self
                .throttles
                .entry((account.to_string(), op.clone()))
                .or_default() += n;
        }
    }

    /// A source call failed (ReceiveMessage, LookupEvents) or a refresh could not be stored.
    pub fn record_source_error(&mut self) {
        self.source_errors += 1;
    }

    fn record_sinks(&mut self, sinks: &[crate::deliver::SinkReport]) {
        for s in sinks {
            *self.sink_requests.entry(s.name.clone()).or_default() += s.requests;
            *self.sink_failed.entry(s.name.clone()).or_default() += s.failed_requests;
            *self.sink_sent.entry(s.name.clone()).or_default() += s.sent;
            *self.sink_acked.entry(s.name.clone()).or_default() += s.acknowledged;
            self.sink_pending.insert(s.name.clone(), s.pending);
            self.sink_rejected.insert(s.name.clone(), s.rejected);
            if s.takes_changes {
                *self.events_sent.entry(s.name.clone()).or_default() += s.events_sent;
                *self.events_acked.entry(s.name.clone()).or_default() += s.events_acknowledged;
                self.changes_pending
                    .insert(s.name.clone(), s.changes_pending);
            }
            *self.sink_rejections.entry(s.name.clone()).or_default() += s.rejected_now.len() as u64;
        }
    }

    /// A sync that could not run at all (store unusable).
    pub fn record_fatal(&mut self, started_ms: i64, finished_ms: i64) {
        *self.syncs.entry("failed").or_default() += 1;
        self.last_start_ms = Some(started_ms);
        self.last_end_ms = Some(finished_ms);
        self.last_success = Some(false);
    }

    pub fn record_skipped_tick(&mut self) {
        self.ticks_skipped += 1;
    }

    pub fn render(&self, sync_running: bool) -> String {
        let mut o = String::new();
        let secs = |ms: i64| ms as f64 / 1000.0;
        metric(
            &mut o,
            "iam_inventory_syncs_total",
            "counter",
            "Syncs finished, by status.",
        );
        for status in ["ok", "partial", "interrupted", "failed"] {
            let _ = writeln!(
                o,
                "iam_inventory_syncs_total{{status=\"{status}\"}} {}",
                self.syncs.get(status).copied().unwrap_or(0)
            );
        }
        metric(
            &mut o,
            "iam_inventory_sync_ticks_skipped_total",
            "counter",
            "Schedule ticks skipped because a sync was still running.",
        );
        let _ = writeln!(
            o,
            "iam_inventory_sync_ticks_skipped_total {}",
            self.ticks_skipped
        );
        metric(
            &mut o,
            "iam_inventory_sync_running",
            "gauge",
            "1 while a sync runs.",
        );
        let _ = writeln!(o, "iam_inventory_sync_running {}", u8::from(sync_running));
        if let (Some(start), Some(end), Some(ok)) =
            (self.last_start_ms, self.last_end_ms, self.last_success)
        {
            metric(
                &mut o,
                "iam_inventory_last_sync_start_timestamp_seconds",
                "gauge",
                "Start of the last finished sync.",
            );
            let _ = writeln!(
                o,
                "iam_inventory_last_sync_start_timestamp_seconds {}",
                secs(start)
            );
            metric(
                &mut o,
                "iam_inventory_last_sync_end_timestamp_seconds",
                "gauge",
                "End of the last finished sync.",
            );
            let _ = writeln!(
                o,
                "iam_inventory_last_sync_end_timestamp_seconds {}",
                secs(end)
            );
            metric(
                &mut o,
                "iam_inventory_last_sync_duration_seconds",
                "gauge",
                "Duration of the last finished sync.",
            );
            let _ = writeln!(
                o,
                "iam_inventory_last_sync_duration_seconds {}",
                secs(end - start)
            );
            metric(
                &mut o,
                "iam_inventory_last_sync_success",
                "gauge",
                "1 when every account and sink of the last sync succeeded.",
            );
            let _ = writeln!(o, "iam_inventory_last_sync_success {}", u8::from(ok));
        }
        gauge_by(
            &mut o,
            "iam_inventory_account_up",
            "1 when the last collection of the account succeeded.",
            "account",
            &self.account_up,
        );
        gauge_by(
            &mut o,
            "iam_inventory_users",
            "Users in the last successful collection of the account.",
            "account",
            &self.users,
        );
        metric(
            &mut o,
            "iam_inventory_changes_total",
            "counter",
            "Change-log rows written, by account and kind.",
        );
        for ((account, kind), n) in &self.changes {
            let _ = writeln!(
                o,
                "iam_inventory_changes_total{{account=\"{}\",kind=\"{kind}\"}} {n}",
                esc(account)
            );
        }
        two_labels(
            &mut o,
            "iam_inventory_aws_calls_total",
            "AWS API attempts (retries included), by account and operation.",
            &self.calls,
        );
        two_labels(
            &mut o,
            "iam_inventory_aws_throttles_total",
            "AWS API attempts answered with Throttling.",
            &self.throttles,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_requests_total",
            "Requests (or writes) to each sink.",
            &self.sink_requests,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_failed_requests_total",
            "Requests that failed (non-2xx or transport error).",
            &self.sink_failed,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_records_sent_total",
            "Records sent to each sink.",
            &self.sink_sent,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_records_acknowledged_total",
            "Records each sink acknowledged.",
            &self.sink_acked,
        );
        gauge_by(
            &mut o,
            "iam_inventory_sink_pending_records",
            "Records each sink still needs after the last sync.",
            "sink",
            &self.sink_pending,
        );
        gauge_by(
            &mut o,
            "iam_inventory_sink_rejected_records",
            "Records each sink refuses in their current content (held back until they change).",
            "sink",
            &self.sink_rejected,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_rejections_total",
            "Records a sink rejected on their own (a 4xx for that record alone).",
            &self.sink_rejections,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_events_sent_total",
            "OCSF 3001 change events sent to each sink.",
            &self.events_sent,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_events_acknowledged_total",
            "OCSF 3001 change events each sink acknowledged.",
            &self.events_acked,
        );
        gauge_by(
            &mut o,
            "iam_inventory_sink_changes_pending",
            "Change-log rows whose events each sink still needs.",
            "sink",
            &self.changes_pending,
        );
        counter_by(
            &mut o,
            "iam_inventory_sink_events_pruned_undelivered_total",
            "Change events pruned by store.changes_retention_days before the sink delivered them.",
            &self.events_pruned,
        );
        metric(
            &mut o,
            "iam_inventory_bulk_fallbacks_total",
            "counter",
            "Bulk collections that fell back to per-user calls (missing permission, report not ready).",
        );
        for (account, n) in &self.bulk_fallbacks {
            let _ = writeln!(
                o,
                "iam_inventory_bulk_fallbacks_total{{account=\"{}\"}} {n}",
                esc(account)
            );
        }
        if !self.refreshes.is_empty() || self.source_errors > 0 {
            metric(
                &mut o,
                "iam_inventory_iam_events_total",
                "counter",
                "IAM write events read by the incremental refresh, by outcome.",
            );
            for (outcome, n) in &self.iam_events {
                let _ = writeln!(
                    o,
                    "iam_inventory_iam_events_total{{outcome=\"{}\"}} {n}",
                    esc(outcome)
                );
            }
            metric(
                &mut o,
                "iam_inventory_refreshes_total",
                "counter",
                "Incremental refreshes, by status.",
            );
            for (status, n) in &self.refreshes {
                let _ = writeln!(
                    o,
                    "iam_inventory_refreshes_total{{status=\"{status}\"}} {n}"
                );
            }
            metric(
                &mut o,
                "iam_inventory_users_refreshed_total",
                "counter",
                "Users read again because IAM events named them.",
            );
            let _ = writeln!(
                o,
                "iam_inventory_users_refreshed_total {}",
                self.users_refreshed
            );
            metric(
                &mut o,
                "iam_inventory_events_source_errors_total",
                "counter",
                "Failed reads of the events source, or refreshes that could not be stored.",
            );
            let _ = writeln!(
                o,
                "iam_inventory_events_source_errors_total {}",
                self.source_errors
            );
            metric(
                &mut o,
                "iam_inventory_refresh_lag_seconds",
                "summary",
                "From the oldest event of a refresh (CloudTrail's eventTime) to its changes delivered.",
            );
            let _ = writeln!(o, "iam_inventory_refresh_lag_seconds_sum {}", self.lag_sum);
            let _ = writeln!(
                o,
                "iam_inventory_refresh_lag_seconds_count {}",
                self.lag_count
            );
            if let Some(last) = self.lag_last {
                metric(
                    &mut o,
                    "iam_inventory_last_refresh_lag_seconds",
                    "gauge",
                    "Lag of the last refresh: oldest event time to delivered.",
                );
                let _ = writeln!(o, "iam_inventory_last_refresh_lag_seconds {last}");
            }
        }
        o
    }
}

fn metric(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge_by(o: &mut String, name: &str, help: &str, label: &str, values: &BTreeMap<String, u64>) {
    metric(o, name, "gauge", help);
    for (k, v) in values {
        let _ = writeln!(o, "{name}{{{label}=\"{}\"}} {v}", esc(k));
    }
}

fn counter_by(o: &mut String, name: &str, help: &str, values: &BTreeMap<String, u64>) {
    metric(o, name, "counter", help);
    for (k, v) in values {
        let _ = writeln!(o, "{name}{{sink=\"{}\"}} {v}", esc(k));
    }
}

fn two_labels(o: &mut String, name: &str, help: &str, values: &BTreeMap<(String, String), u64>) {
    metric(o, name, "counter", help);
    for ((account, op), v) in values {
        let _ = writeln!(
            o,
            "{name}{{account=\"{}\",operation=\"{}\"}} {v}",
            esc(account),
            esc(op)
        );
    }
}

/// Label values escape backslash, quote and newline.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

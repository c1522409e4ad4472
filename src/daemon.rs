//! `iam-inventory run`: syncs on `[schedule] cron`, never two at once, serves `/healthz` and
//! `/metrics`, and stops gracefully on SIGINT/SIGTERM. With `[events_source]` it also runs the
//! incremental refresh ([`crate::refresh`]) between syncs: a sync waits for a refresh batch in
//! flight, and the refresh takes no new events while a sync runs.
//!
//! Shutdown: the signal stops the scheduler and asks the running sync to stop at its next safe
//! point (after the account write in flight commits, or between sink batches). Account writes are
//! single transactions, so even the hard deadline ([`SHUTDOWN_GRACE`]) cannot leave half a snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::clock::{now_ms, rfc3339};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{RunOptions, RunReport, run_once};
use crate::store::{OpenMode, Store};

/// How long a running sync gets to reach a safe point after SIGINT/SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How late a sync may be before `/healthz` calls the schedule overdue.
const OVERDUE_GRACE_MS: i64 = 5 * 60 * 1000;

/// What `/healthz` and `/metrics` read.
pub struct DaemonState {
    pub metrics: std::sync::Mutex<Metrics>,
    /// True while a full sync runs (shared with the incremental refresh, which waits for it).
    running: Arc<AtomicBool>,
    last: std::sync::Mutex<Option<LastRun>>,
    cron: croner::Cron,
    started_ms: i64,
}

impl DaemonState {
    /// A daemon's state before its first sync, on schedule `cron`.
    pub fn new(cron: croner::Cron) -> DaemonState {
        DaemonState {
            metrics: std::sync::Mutex::new(Metrics::default()),
            running: Arc::new(AtomicBool::new(false)),
            last: std::sync::Mutex::new(None),
            cron,
            started_ms: now_ms(),
        }
    }
}

/// What `[server] listen` serves: `/healthz` and `/metrics` (public so the health benchmark serves
/// the daemon's own endpoints).
pub fn http_app(state: Arc<DaemonState>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state)
}

#[derive(Debug, Clone)]
struct LastRun {
    started_ms: i64,
    finished_ms: i64,
    ok: bool,
    reason: Option<String>,
}

pub async fn run(config: Config) -> anyhow::Result<i32> {
    let cron = crate::schedule::parse_cron(&config.schedule.cron)
        .map_err(|m| anyhow::anyhow!("schedule.cron: {:?} {m}", config.schedule.cron))?;
    let store = Arc::new(Store::open(&config.store.path, OpenMode::ReadWrite)?);
    let state = Arc::new(DaemonState::new(cron));
    let (stop_tx, stop_rx) = watch::channel(false);

    let server = match config.server.listen_addr() {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("server.listen: cannot listen on {addr}"))?;
            tracing::info!(%addr, "serving /healthz and /metrics");
            let app = http_app(state.clone());
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
            }))
        }
        None => None,
    };

    let config = Arc::new(config);
    let gate = Arc::new(Mutex::new(()));
    // Held by whatever writes the store: a sync, or an incremental refresh's batch.
    let writer = Arc::new(Mutex::new(()));
    let trigger = Syncer {
        config: config.clone(),
        store: store.clone(),
        state: state.clone(),
        gate: gate.clone(),
        writer: writer.clone(),
        stop: stop_rx.clone(),
    };

    let mut scheduler = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;
    let tick = trigger.clone();
    let job = Job::new_async(config.schedule.cron.as_str(), move |_id, _sched| {
        let tick = tick.clone();
        Box::pin(async move {
            // Detached, so the scheduler keeps ticking (and can report skipped ticks) while a sync runs.
            tokio::spawn(tick.sync("schedule"));
        })
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "schedule.cron: {:?} is not usable: {e}",
            config.schedule.cron
        )
    })?;
    scheduler
        .add(job)
        .await
        .context("cannot schedule the sync")?;
    scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    tracing::info!(cron = %config.schedule.cron, next = %next_tick(&state.cron, now_ms()).map(rfc3339).unwrap_or_default(), "scheduler started");
    if config.schedule.run_on_start {
        tokio::spawn(trigger.sync("start"));
    }
    let refresh = {
        let (on_report, on_error) = (state.clone(), state.clone());
        let hooks = crate::refresh::Hooks {
            gate: writer.clone(),
            busy: state.running.clone(),
            on_report: Arc::new(move |r| lock(&on_report.metrics).record_refresh(r)),
            on_error: Arc::new(move || lock(&on_error.metrics).record_source_error()),
        };
        crate::refresh::spawn(config.clone(), store.clone(), hooks, stop_rx.clone())
    };

    wait_for_signal().await;
    tracing::info!(
        "shutting down: no new syncs; waiting for the running one to reach a safe point"
    );
    let _ = stop_tx.send(true);
    let _ = scheduler.shutdown().await;
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _sync = gate.lock().await;
        let _refresh = writer.lock().await;
    })
    .await
    .is_ok();
    if let Some(task) = refresh {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if !drained {
        tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "the running sync did not stop in time; exiting (its open transaction is rolled back)"
        );
    }
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    tracing::info!("stopped");
    Ok(0)
}

/// Everything one scheduled sync needs; cloned into each tick.
#[derive(Clone)]
struct Syncer {
    config: Arc<Config>,
    store: Arc<Store>,
    state: Arc<DaemonState>,
    /// Held while a sync runs: never two at once.
    gate: Arc<Mutex<()>>,
    /// Held while the store is written (a sync, or a refresh batch).
    writer: Arc<Mutex<()>>,
    stop: watch::Receiver<bool>,
}

impl Syncer {
    async fn sync(self, reason: &'static str) {
        if *self.stop.borrow() {
            return;
        }
        // Never two syncs at once: a tick that finds one running is skipped.
        let Ok(_guard) = self.gate.try_lock() else {
            tracing::warn!(
                reason,
                "schedule tick skipped: the previous sync is still running"
            );
            lock(&self.state.metrics).record_skipped_tick();
            return;
        };
        let state = &self.state;
        state.running.store(true, Ordering::SeqCst);
        // A refresh batch in flight finishes first (seconds); no new one starts meanwhile.
        let _writer = self.writer.lock().await;
        let started = now_ms();
        let options = RunOptions {
            dry_run: false,
            stop: Some(self.stop.clone()),
        };
        match run_once(&self.config, &self.store, options).await {
            Ok((report, _)) => finish(state, &report),
            Err(e) => {
                tracing::error!(error = %e, "sync failed");
                lock(&state.metrics).record_fatal(started, now_ms());
                *lock(&state.last) = Some(LastRun {
                    started_ms: started,
                    finished_ms: now_ms(),
                    ok: false,
                    reason: Some(e.to_string()),
                });
            }
        }
        state.running.store(false, Ordering::SeqCst);
    }
}

fn finish(state: &DaemonState, report: &RunReport) {
    crate::summary::log_summary(report);
    lock(&state.metrics).record_run(report);
    let reason = (report.exit_code() != 0).then(|| failure_reason(report));
    *lock(&state.last) = Some(LastRun {
        started_ms: report.started_ms,
        finished_ms: report.finished_ms,
        ok: reason.is_none(),
        reason,
    });
}

fn failure_reason(r: &RunReport) -> String {
    let mut parts: Vec<String> = r
        .accounts
        .iter()
        .filter(|a| !a.ok)
        .map(|a| {
            format!(
                "account {} failed: {}",
                a.account_id,
                a.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    parts.extend(
        r.sinks
            .iter()
            .filter(|s| s.pending > 0 || s.error.is_some())
            .map(|s| {
                format!(
                    "sink {} has {} pending records{}",
                    s.name,
                    s.pending,
                    s.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            }),
    );
    parts.join("; ")
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn next_tick(cron: &croner::Cron, after_ms: i64) -> Option<i64> {
    let after = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms)?;
    cron.find_next_occurrence(&after, false)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Health: `None` = healthy, `Some(reason)` = unhealthy. `last` = (finished_ms, ok, reason). Pure.
///
/// Overdue is measured from the end of the last sync: a tick skipped because that sync was still
/// running is not a missed sync.
pub(crate) fn health(
    cron: &croner::Cron,
    daemon_started_ms: i64,
    last: Option<(i64, bool, Option<String>)>,
    running: bool,
    now_ms: i64,
) -> Option<String> {
    if let Some((_, false, reason)) = &last {
        return Some(format!(
            "last sync failed: {}",
            reason.as_deref().unwrap_or("unknown")
        ));
    }
    if running {
        return None;
    }
    let since = last
        .as_ref()
        .map_or(daemon_started_ms, |(finished, _, _)| *finished);
    match next_tick(cron, since) {
        Some(due) if now_ms > due + OVERDUE_GRACE_MS => Some(format!(
            "schedule overdue: a sync was due at {}",
            rfc3339(due)
        )),
        _ => None,
    }
}

async fn healthz(State(state): State<Arc<DaemonState>>) -> Response {
    let last = lock(&state.last).clone();
    let running = state.running.load(Ordering::SeqCst);
    let verdict = health(
        &state.cron,
        state.started_ms,
        last.clone().map(|l| (l.finished_ms, l.ok, l.reason)),
        running,
        now_ms(),
    );
    let body = serde_json::json!({
        "status": if verdict.is_none() { "ok" } else { "unhealthy" },
        "reason": verdict,
        "sync_running": running,
        "last_sync_started": last.as_ref().map(|l| rfc3339(l.started_ms)),
        "last_sync_finished": last.as_ref().map(|l| rfc3339(l.finished_ms)),
        "last_sync_ok": last.as_ref().map(|l| l.ok),
    });
    let code = if verdict.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<DaemonState>>) -> Response {
    let text = lock(&state.metrics).render(state.running.load(Ordering::SeqCst));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_verdicts() {
        let cron = crate::schedule::parse_cron("0 0 2 * * *").unwrap();
        let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z; next tick 02:00
        let hour = 3_600_000;
        assert_eq!(health(&cron, start, None, false, start + hour), None);
        assert!(
            health(&cron, start, None, false, start + 3 * hour)
                .unwrap()
                .contains("overdue")
        );
        assert_eq!(
            health(&cron, start, None, true, start + 3 * hour),
            None,
            "running: not overdue"
        );
        assert_eq!(
            health(
                &cron,
                start,
                Some((start + 2 * hour, true, None)),
                false,
                start + 3 * hour
            ),
            None
        );
        // A sync that started at 01:58 and ran past 02:00 skipped that tick: due again tomorrow.
        let late = start + 2 * hour + 600_000;
        assert_eq!(
            health(
                &cron,
                start,
                Some((late, true, None)),
                false,
                start + 5 * hour
            ),
            None
        );
        let failed = health(
            &cron,
            start,
            Some((start, false, Some("account 1 failed".into()))),
            false,
            start + 60_000,
        );
        assert_eq!(
            failed.as_deref(),
            Some("last sync failed: account 1 failed")
        );
    }
}

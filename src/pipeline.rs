//! One sync = one pass of data through the stages:
//! config → collect (per account) → transform → store (snapshot + diff) → deliver (per sink).

use std::sync::Arc;

use aws_config::SdkConfig;
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::collect::accounts::ConnectedAccount;
use crate::collect::bulk::{AUTO_BULK_THRESHOLD, collect_bulk};
use crate::collect::calls::CallCounter;
use crate::collect::enrich::enrich_all;
use crate::collect::users::list_users;
use crate::collect::{
    AccountError, AccountTarget, AccountUsers, CallStats, Provenance, accounts, build_base_config,
    resolve_accounts,
};
use crate::config::{Config, Strategy};
use crate::deliver::{SinkReport, deliver_all};
use crate::store::snapshot::AccountWrite;
use crate::store::{ChangeRow, PreparedRecord, Store, StoreError};
use crate::transform::to_ocsf;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Collect, transform and diff; write nothing, send nothing.
    pub dry_run: bool,
    /// Set to `true` to stop at the next safe point (the daemon's graceful shutdown): no further
    /// account is started or written, no further sink batch is sent.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

fn stopping(stop: &Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    stop.as_ref().is_some_and(|s| *s.borrow())
}

/// What one account did in a run.
#[derive(Debug, Clone, Serialize)]
pub struct AccountReport {
    pub account_id: String,
    pub role_arn: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    /// The AWS error code of the failure, when AWS answered.
    pub error_code: Option<String>,
    pub users: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Users deleted while the sync ran (seen by ListUsers, gone by enrichment).
    pub vanished: usize,
    pub calls: CallStats,
    pub duration_ms: i64,
    /// `per-user` or `bulk`; `None` when the account failed before choosing.
    pub strategy: Option<&'static str>,
}

/// Everything a run did; `sync` prints it, the daemon turns it into metrics.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub accounts: Vec<AccountReport>,
    pub sinks: Vec<SinkReport>,
    /// Stopped early by a shutdown.
    pub interrupted: bool,
    /// The process's peak resident memory so far (Linux), for the summary and benchmarks.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (`VmHWM`), where /proc is available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every account collected and every sink delivered.
    Ok,
    /// An account failed or a sink still has pending records; the store is consistent.
    Partial,
    /// Stopped at a safe point by a shutdown; what was not done is done by the next sync.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl RunReport {
    pub fn status(&self) -> RunStatus {
        if self.interrupted {
            return RunStatus::Interrupted;
        }
        let account_failed = self.accounts.iter().any(|a| !a.ok);
        let sink_behind = self
            .sinks
            .iter()
            .any(|s| s.pending > 0 || s.error.is_some());
        if account_failed || sink_behind {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        }
    }

    /// 0 = all good, 2 = partial (the contract's exit codes; 1 is for fatal errors, before a report).
    pub fn exit_code(&self) -> i32 {
        match self.status() {
            RunStatus::Ok => 0,
            RunStatus::Partial | RunStatus::Interrupted => 2,
        }
    }

    pub fn total_calls(&self) -> CallStats {
        let mut all = CallStats::default();
        for a in &self.accounts {
            all.merge(&a.calls);
        }
        all
    }
}

/// Runs one sync. Errors are fatal (the store is unusable); account and sink failures are in the
/// report instead. Returns the change rows too (for `--dry-run`, which prints them).
pub async fn run_once(
    config: &Config,
    store: &Arc<Store>,
    options: RunOptions,
) -> Result<(RunReport, Vec<ChangeRow>), StoreError> {
    let started_ms = now_ms();
    let run_id = if options.dry_run {
        0
    } else {
        store.begin_run(started_ms)?
    };
    let span = tracing::info_span!("sync", run_id = run_id, dry_run = options.dry_run);
    async move {
        tracing::info!("sync started");
        let base = build_base_config(&config.aws).await;
        let mut reports: Vec<AccountReport> = Vec::new();
        let mut changes = Vec::new();

        // 1. Who is who: every target's identity first, in config order, so an account reached twice
        //    (the caller's account also listed as a role) is collected once, always the same way.
        let mut targets = resolve_accounts(&config.aws);
        let mut discovery_failure: Option<Collected> = None;
        if let Some(org) = &config.aws.organization {
            let counter = CallCounter::default();
            let started = now_ms();
            match accounts::discover_organization(&base, org, counter.clone()).await {
                Ok(found) => {
                    tracing::info!(
                        accounts = found.len(),
                        "accounts discovered in the organization"
                    );
                    // Explicit [[aws.roles]] win for their accounts.
                    let explicit: std::collections::HashSet<String> =
                        targets.iter().map(AccountTarget::label).collect();
                    targets.extend(found.into_iter().filter(|t| !explicit.contains(&t.label())));
                }
                Err(error) => {
                    let failure = AccountError {
                        account_id: "organization".into(),
                        role_arn: None,
                        error,
                    };
                    discovery_failure =
                        Some((Err(failure), counter.snapshot(), now_ms() - started));
                }
            }
        }
        let connecting = connect_all(&base, targets, config.collect.account_concurrency);
        let connected = match options.stop.clone() {
            Some(mut stop) => tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Vec::new(),
                connected = connecting => connected,
            },
            None => connecting.await,
        };
        let (ready, failed) = dedupe(connected);
        for item in discovery_failure.into_iter().chain(failed) {
            record(
                store,
                run_id,
                options.dry_run,
                item,
                &mut reports,
                &mut changes,
            )
            .await?;
        }

        // 2. Collection runs in its own task, so it goes on while this one writes finished accounts.
        // Room for every account: a finished collection never waits for the writer, so the others
        // keep being polled.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Collected>(ready.len().max(1));
        let shared = Arc::new(config.clone());
        let concurrency = config.collect.account_concurrency;
        let mut collector = AbortOnDrop(tokio::spawn(
            async move {
                let mut results = futures::stream::iter(ready)
                    .map(|(acc, counter, connect_ms)| {
                        collect_connected(acc, counter, connect_ms, shared.clone())
                    })
                    .buffer_unordered(concurrency);
                while let Some(item) = results.next().await {
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
            }
            .instrument(tracing::Span::current()),
        ));
        let mut stop_wait = options.stop.clone();
        loop {
            let next = match &mut stop_wait {
                Some(stop) => tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    next = rx.recv() => next,
                },
                None => rx.recv().await,
            };
            let Some(item) = next else { break };
            record(
                store,
                run_id,
                options.dry_run,
                item,
                &mut reports,
                &mut changes,
            )
            .await?;
        }
        if stopping(&options.stop) {
            // Collections still in flight are dropped (AbortOnDrop): nothing of theirs was written.
            drop(collector);
        } else if let Err(e) = (&mut collector.0).await {
            // The channel closed because the collector ended; if it panicked, say so rather than
            // report a run that silently skipped accounts.
            return Err(StoreError(format!(
                "internal error: the collection task failed: {e}"
            )));
        }
        reports.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        if stopping(&options.stop) {
            tracing::warn!(
                accounts_done = reports.len(),
                "stopping: the remaining accounts are left for the next sync"
            );
        }

        let sinks = if options.dry_run || stopping(&options.stop) {
            Vec::new()
        } else {
            let client = crate::deliver::http::client();
            deliver_all(
                store,
                &config.effective_sinks(),
                &client,
                now_ms,
                options.stop.clone(),
            )
            .await
        };
        let report = RunReport {
            run_id: (!options.dry_run).then_some(run_id),
            dry_run: options.dry_run,
            started_ms,
            finished_ms: now_ms(),
            accounts: reports,
            sinks,
            interrupted: stopping(&options.stop),
            peak_rss_bytes: peak_rss_bytes(),
        };
        if !options.dry_run {
            let status = report.status().as_str();
            let summary = serde_json::to_string(&report).unwrap_or_default();
            store.finish_run(run_id, report.finished_ms, status, &summary)?;
        }
        tracing::info!(status = report.status().as_str(), "sync finished");
        Ok((report, changes))
    }
    .instrument(span)
    .await
}

/// Transforms one collected account and writes it to the store (one transaction).
pub fn write_account(
    store: &Store,
    run_id: i64,
    acc: AccountUsers,
    dry_run: bool,
) -> Result<crate::store::AccountOutcome, StoreError> {
    let collected_ms = now_ms();
    let records = acc
        .users
        .iter()
        .map(|u| PreparedRecord::from_record(to_ocsf(u, &acc.provenance, collected_ms)));
    store.apply_account(
        &AccountWrite {
            run_id,
            account_id: &acc.provenance.account_id,
            role_arn: acc.provenance.role_arn.as_deref(),
            path_prefix: &acc.provenance.path_prefix,
            collected_ms,
            dry_run,
        },
        records,
    )
}

/// One account's collection: its result, its call counts, and how long it took (ms).
type Collected = (Result<AccountUsers, AccountError>, CallStats, i64);
/// A connected account, its call counter, and how long connecting took (ms).
type Ready = (ConnectedAccount, CallCounter, i64);

/// Aborts the task when dropped, so an early return (a store error) stops its AWS calls too.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects every target (identity, AssumeRole), `concurrency` at a time, keeping config order.
async fn connect_all(
    base: &SdkConfig,
    targets: Vec<AccountTarget>,
    concurrency: usize,
) -> Vec<(Result<ConnectedAccount, AccountError>, CallCounter, i64)> {
    futures::stream::iter(targets)
        .map(|target| async move {
            let started = now_ms();
            let counter = CallCounter::default();
            let span = tracing::info_span!("account", account = %target.label());
            let result = accounts::connect(base, &target, counter.clone())
                .instrument(span)
                .await;
            (result, counter, now_ms() - started)
        })
        .buffered(concurrency)
        .collect()
        .await
}

/// Splits connections into accounts to collect and failures to report. An account reached a second
/// time is dropped with a warning, and so is a failed target whose account another target reached.
fn dedupe(
    connected: Vec<(Result<ConnectedAccount, AccountError>, CallCounter, i64)>,
) -> (Vec<Ready>, Vec<Collected>) {
    let reached: std::collections::HashSet<String> = connected
        .iter()
        .filter_map(|(r, _, _)| r.as_ref().ok().map(|a| a.account_id.clone()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let (mut ready, mut failed) = (Vec::new(), Vec::new());
    for (result, counter, connect_ms) in connected {
        match result {
            Ok(acc) if !seen.insert(acc.account_id.clone()) => {
                tracing::warn!(account = %acc.account_id, role = acc.role_arn.as_deref().unwrap_or("caller"), "account already reached by an earlier target (the caller's account listed as a role too?); collected once");
            }
            Ok(acc) => ready.push((acc, counter, connect_ms)),
            Err(e) if reached.contains(&e.account_id) => {
                tracing::warn!(account = %e.account_id, error = %e.error, "a second way into an account failed; the account was reached another way");
            }
            Err(e) => failed.push((Err(e), counter.snapshot(), connect_ms)),
        }
    }
    (ready, failed)
}

/// Writes a collected account (one transaction) or records its failure, and reports it.
async fn record(
    store: &Arc<Store>,
    run_id: i64,
    dry_run: bool,
    (result, calls, duration_ms): Collected,
    reports: &mut Vec<AccountReport>,
    changes: &mut Vec<ChangeRow>,
) -> Result<(), StoreError> {
    match result {
        Ok(acc) => {
            let id = acc.provenance.account_id.clone();
            let (vanished, strategy, role_arn) =
                (acc.vanished, acc.strategy, acc.provenance.role_arn.clone());
            let store = Arc::clone(store);
            let outcome =
                tokio::task::spawn_blocking(move || write_account(&store, run_id, acc, dry_run))
                    .await
                    .map_err(|e| StoreError(format!("store write task failed: {e}")))??;
            tracing::info!(account = %id, users = outcome.users, created = outcome.created, updated = outcome.updated, deleted = outcome.deleted, "account collected");
            reports.push(AccountReport {
                account_id: id,
                role_arn,
                ok: true,
                error: None,
                error_code: None,
                users: outcome.users,
                created: outcome.created,
                updated: outcome.updated,
                deleted: outcome.deleted,
                vanished,
                calls,
                duration_ms,
                strategy: Some(strategy),
            });
            changes.extend(outcome.changes);
        }
        Err(e) => {
            tracing::error!(account = %e.account_id, error = %e.error, "account failed; its snapshot is left as it was");
            if !dry_run {
                store.record_failed_account(
                    run_id,
                    &e.account_id,
                    e.role_arn.as_deref(),
                    &e.error.message,
                )?;
            }
            reports.push(AccountReport {
                account_id: e.account_id.clone(),
                role_arn: e.role_arn.clone(),
                ok: false,
                error: Some(e.error.message.clone()),
                error_code: e.error.code.clone(),
                users: 0,
                created: 0,
                updated: 0,
                deleted: 0,
                vanished: 0,
                calls,
                duration_ms,
                strategy: None,
            });
        }
    }
    Ok(())
}

/// Collects one connected account: ListUsers, then enrichment by the configured strategy.
async fn collect_connected(
    acc: ConnectedAccount,
    counter: CallCounter,
    connect_ms: i64,
    config: Arc<Config>,
) -> Collected {
    let started = now_ms();
    let span = tracing::info_span!("account", account = %acc.account_id);
    let result = async {
        let fail = |error| AccountError {
            account_id: acc.account_id.clone(),
            role_arn: acc.role_arn.clone(),
            error,
        };
        let prefix = &config.aws.path_prefix;
        let users = list_users(&acc.iam, prefix).await.map_err(fail)?;
        tracing::debug!(users = users.len(), "listed users");
        let bulk = match config.collect.strategy {
            Strategy::Bulk => true,
            Strategy::PerUser => false,
            Strategy::Auto => users.len() > AUTO_BULK_THRESHOLD,
        };
        let concurrency = config.collect.user_concurrency;
        let (users, vanished) = if bulk {
            let (users, vanished, fallbacks) = collect_bulk(
                &acc.iam,
                users,
                concurrency,
                (config.collect.report_max_age_secs as i64).saturating_mul(1000),
            )
            .await
            .map_err(fail)?;
            tracing::debug!(
                fallbacks,
                "users collected per user (missing from the credential report or GAAD)"
            );
            (users, vanished)
        } else {
            enrich_all(&acc.iam, users, concurrency)
                .await
                .map_err(fail)?
        };
        Ok(AccountUsers {
            provenance: Provenance {
                account_id: acc.account_id.clone(),
                role_arn: acc.role_arn.clone(),
                path_prefix: prefix.clone(),
            },
            users,
            vanished,
            strategy: if bulk { "bulk" } else { "per-user" },
        })
    }
    .instrument(span)
    .await;
    (result, counter.snapshot(), connect_ms + now_ms() - started)
}

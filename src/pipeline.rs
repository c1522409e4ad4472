//! One sync = one pass of data through the stages:
//! config → collect (per account) → transform → store (snapshot + diff) → deliver (per sink).

use std::sync::Arc;

use aws_config::SdkConfig;
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::collect::accounts::ConnectedAccount;
use crate::collect::bulk::{ChangedSince, bulk_only_failure, collect_bulk};
use crate::collect::calls::CallCounter;
use crate::collect::enrich::enrich_all;
use crate::collect::extras::{Extras, FromBulk};
use crate::collect::users::list_users;
use crate::collect::{
    AccountError, AccountTarget, AccountUsers, CallStats, Provenance, accounts, build_base_config,
};
use crate::config::{Config, Strategy};
use crate::deliver::{SinkReport, deliver_all};
use crate::store::snapshot::AccountWrite;
use crate::store::{ChangeRow, PreparedRecord, Store, StoreError, SyncLock};
use crate::transform::{input_hash, root_to_ocsf, to_ocsf};

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
    /// Users outside the path prefix, removed from the snapshot (not IAM deletions).
    pub retired: usize,
    /// Users deleted while the sync ran (seen by ListUsers, gone by enrichment).
    pub vanished: usize,
    pub calls: CallStats,
    pub duration_ms: i64,
    /// `per-user` or `bulk`; `None` when the account failed before choosing.
    pub strategy: Option<&'static str>,
    /// Why `auto` fell back from bulk to per-user calls for this account (a missing permission, a
    /// credential report not ready in time).
    pub fallback: Option<String>,
    /// bulk: how old the credential report was (seconds).
    pub report_age_secs: Option<i64>,
    /// bulk: per-user calls made because the credential report was older than
    /// `collect.report_max_age_secs` (GetLoginProfile, ListMFADevices, ListAccessKeys).
    pub fresh_checks: usize,
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
    /// Users retired because their account is no longer collected (left the config or the
    /// organization's scope); users retired by a narrower path prefix are in their account's report.
    pub retired_accounts: std::collections::BTreeMap<String, usize>,
    /// Change-log rows pruned by `store.changes_retention_days`.
    pub pruned: Pruned,
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
    /// The run could not finish (the store failed); the snapshot is the last one committed.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

impl RunReport {
    pub fn status(&self) -> RunStatus {
        if self.interrupted {
            return RunStatus::Interrupted;
        }
        let account_failed = self.accounts.iter().any(|a| !a.ok);
        // A record rejected in this sync was not delivered: partial, so cron and alerts notice.
        // Later syncs count it (`rejected`) without failing again until its content changes.
        let sink_behind = self.sinks.iter().any(|s| {
            s.pending > 0
                || s.changes_pending > 0
                || s.error.is_some()
                || !s.rejected_now.is_empty()
        });
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
            RunStatus::Failed => 1,
        }
    }

    pub fn users(&self) -> usize {
        self.accounts.iter().map(|a| a.users).sum()
    }
    pub fn created(&self) -> usize {
        self.accounts.iter().map(|a| a.created).sum()
    }
    pub fn updated(&self) -> usize {
        self.accounts.iter().map(|a| a.updated).sum()
    }
    pub fn deleted(&self) -> usize {
        self.accounts.iter().map(|a| a.deleted).sum()
    }
    /// Out of scope (path prefix or account), not deleted.
    pub fn retired(&self) -> usize {
        self.retired_accounts.values().sum::<usize>()
            + self.accounts.iter().map(|a| a.retired).sum::<usize>()
    }

    pub fn total_calls(&self) -> CallStats {
        let mut all = CallStats::default();
        for a in &self.accounts {
            all.merge(&a.calls);
        }
        all
    }
}

/// Runs one sync. Errors are fatal (the store is unusable or in use); account and sink failures are
/// in the report instead. Returns the change rows too (for `--dry-run`, which prints them).
///
/// A sync holds the store's lock (`<store>.lock`) from start to end, so a `sync` beside a running
/// daemon waits for it (up to `store.lock_wait_secs`) instead of interleaving. Every run it records
/// ends as `ok`, `partial`, `interrupted` or `failed`, whatever happens after it started.
pub async fn run_once(
    config: &Config,
    store: &Arc<Store>,
    options: RunOptions,
) -> Result<(RunReport, Vec<ChangeRow>), StoreError> {
    if options.dry_run {
        // A dry run writes nothing, so it neither needs nor takes the lock.
        return run_locked(config, store, options, 0).await;
    }
    let _lock = SyncLock::acquire_async(
        store.path(),
        std::time::Duration::from_secs(config.store.lock_wait_secs),
    )
    .await?;
    let started_ms = now_ms();
    let run_id = store.begin_run(started_ms)?;
    match run_locked(config, store, options, run_id).await {
        Ok((report, changes)) => {
            let status = report.status().as_str();
            let summary = serde_json::to_string(&report).unwrap_or_default();
            store.finish_run(run_id, report.finished_ms, status, &summary)?;
            Ok((report, changes))
        }
        Err(e) => {
            let summary = serde_json::json!({ "error": e.to_string() }).to_string();
            if let Err(also) =
                store.finish_run(run_id, now_ms(), RunStatus::Failed.as_str(), &summary)
            {
                tracing::error!(error = %also, "cannot record the failed run");
            }
            Err(e)
        }
    }
}

/// The sync itself, under the lock, for run `run_id` (0 for a dry run).
async fn run_locked(
    config: &Config,
    store: &Arc<Store>,
    options: RunOptions,
    run_id: i64,
) -> Result<(RunReport, Vec<ChangeRow>), StoreError> {
    let started_ms = now_ms();
    let span = tracing::info_span!("sync", run_id = run_id, dry_run = options.dry_run);
    async move {
        tracing::info!("sync started");
        let base = build_base_config(&config.aws).await;
        let mut reports: Vec<AccountReport> = Vec::new();
        let mut changes = Vec::new();

        // 1. Who is who: every target's identity first, in config order, so an account reached twice
        //    (the caller's account also listed as a role) is collected once, always the same way.
        // Sharded: only this shard's accounts (a role's account is known from its ARN; the
        // caller's once connected).
        let shard = config.shard;
        let counter = CallCounter::default();
        let started = now_ms();
        let (targets, discovery) =
            accounts::configured_targets(&base, &config.aws, shard, counter.clone()).await;
        let discovery_failure: Option<Collected> = discovery.map(|error| {
            let failure = AccountError {
                account_id: "organization".into(),
                role_arn: None,
                error,
            };
            (Err(failure), counter.snapshot(), now_ms() - started)
        });
        let connecting = connect_all(&base, targets, config.collect.account_concurrency);
        let connected = match options.stop.clone() {
            Some(mut stop) => tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Vec::new(),
                connected = connecting => connected,
            },
            None => connecting.await,
        };
        let (mut ready, failed) = dedupe(connected);
        if shard.is_sharded() {
            ready.retain(|(acc, _, _)| {
                let owned = shard.owns(&acc.account_id);
                if !owned {
                    tracing::debug!(account = %acc.account_id, "the caller's account belongs to another shard");
                }
                owned
            });
            tracing::info!(shard = shard.index, of = shard.count, accounts = ready.len() + failed.len(), "collecting this shard's accounts");
        }
        // Which accounts this configuration covers, when that is known for sure: every target's
        // account id is known (the caller's comes from GetCallerIdentity) and discovery worked.
        let scope: Option<std::collections::HashSet<String>> = {
            let ids: Vec<Option<String>> = ready
                .iter()
                .map(|(a, _, _)| Some(a.account_id.clone()))
                .chain(failed.iter().map(|(r, _, _)| {
                    r.as_ref()
                        .err()
                        .map(|e| e.account_id.clone())
                        .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()))
                }))
                .collect();
            (discovery_failure.is_none() && ids.iter().all(Option::is_some) && !stopping(&options.stop))
                .then(|| ids.into_iter().flatten().collect())
        };
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

        // Users of accounts no longer collected are retired (not deleted). Only when the scope is
        // known and the run was not cut short: an account that merely failed to connect is in scope.
        let mut retired_accounts = std::collections::BTreeMap::new();
        match scope.filter(|_| !stopping(&options.stop)) {
            Some(scope) => {
                let store = Arc::clone(store);
                let dry_run = options.dry_run;
                let rows = tokio::task::spawn_blocking(move || {
                    store.retire_accounts(run_id, &scope, now_ms(), dry_run)
                })
                .await
                .map_err(|e| StoreError(format!("store write task failed: {e}")))??;
                for r in &rows {
                    *retired_accounts.entry(r.account_id.clone()).or_default() += 1;
                }
                if !rows.is_empty() {
                    tracing::warn!(users = rows.len(), accounts = ?retired_accounts.keys().collect::<Vec<_>>(), "accounts no longer in the configuration: their users are retired from the snapshot (not deleted)");
                }
                changes.extend(rows);
            }
            None => tracing::debug!(
                "not every account's id is known this run; accounts that left the configuration are retired by a later sync"
            ),
        }

        let sinks = if options.dry_run || stopping(&options.stop) {
            Vec::new()
        } else {
            let client = crate::deliver::client();
            deliver_all(
                store,
                &config.effective_sinks(),
                &client,
                now_ms,
                run_id,
                options.stop.clone(),
            )
            .await
        };
        let pruned = if options.dry_run || config.store.changes_retention_days == 0 {
            Pruned::default()
        } else {
            prune(config, store).await?
        };
        let report = RunReport {
            run_id: (!options.dry_run).then_some(run_id),
            dry_run: options.dry_run,
            started_ms,
            finished_ms: now_ms(),
            accounts: reports,
            sinks,
            retired_accounts,
            pruned,
            interrupted: stopping(&options.stop),
            peak_rss_bytes: peak_rss_bytes(),
        };
        tracing::info!(status = report.status().as_str(), "sync finished");
        Ok((report, changes))
    }
    .instrument(span)
    .await
}

/// What retention pruned from the change log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    pub changes: u64,
    /// Sinks that take change events and had not delivered some of the pruned rows: events lost
    /// to retention (the sink was down longer than `store.changes_retention_days`).
    pub undelivered: std::collections::BTreeMap<String, u64>,
}

/// Drops change rows older than the retention, saying so when an events sink had not delivered
/// them yet.
async fn prune(config: &Config, store: &Arc<Store>) -> Result<Pruned, StoreError> {
    let days = i64::try_from(config.store.changes_retention_days).unwrap_or(i64::MAX / 2);
    let before = now_ms().saturating_sub(days.saturating_mul(86_400_000));
    let events_sinks: Vec<String> = config
        .effective_sinks()
        .into_iter()
        .filter(|s| s.takes(crate::config::EventStream::Changes))
        .map(|s| s.name)
        .collect();
    let store = Arc::clone(store);
    let (changes, lost) = tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = events_sinks.iter().map(String::as_str).collect();
        store.prune_changes(before, &names)
    })
    .await
    .map_err(|e| StoreError(format!("store write task failed: {e}")))??;
    for (sink, n) in &lost {
        tracing::warn!(sink = %sink, changes = n, retention_days = days, "change events pruned before this sink delivered them (it was behind longer than store.changes_retention_days)");
    }
    if changes > 0 {
        tracing::info!(changes, retention_days = days, "old change-log rows pruned");
    }
    Ok(Pruned {
        changes,
        undelivered: lost.into_iter().collect(),
    })
}

/// Transforms one collected account and writes it to the store (one transaction).
pub fn write_account(
    store: &Store,
    run_id: i64,
    acc: AccountUsers,
    dry_run: bool,
) -> Result<crate::store::AccountOutcome, StoreError> {
    let collected_ms = now_ms();
    let root = acc
        .root
        .as_ref()
        .map(|r| PreparedRecord::from_record(root_to_ocsf(r, &acc.provenance, collected_ms)));
    let records = acc
        .users
        .iter()
        .map(|u| {
            let provenance = &acc.provenance;
            PreparedRecord::lazy(
                u.arn.as_str(),
                u.user_name.as_str(),
                u.path.as_str(),
                input_hash(u, provenance),
                move || to_ocsf(u, provenance, collected_ms),
            )
        })
        .chain(root);
    store.apply_account(
        &AccountWrite {
            run_id,
            account_id: &acc.provenance.account_id,
            role_arn: acc.provenance.role_arn.as_deref(),
            path_prefix: &acc.provenance.path_prefix,
            collected_ms,
            dry_run,
            only_users: None,
            actor: None,
        },
        records,
    )
}

/// One account's collection: its result, its call counts, and how long it took (ms).
pub(crate) type Collected = (Result<AccountUsers, AccountError>, CallStats, i64);
/// A connected account, its call counter, and how long connecting took (ms).
pub(crate) type Ready = (ConnectedAccount, CallCounter, i64);

/// Aborts the task when dropped, so an early return (a store error) stops its AWS calls too.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects every target (identity, AssumeRole), `concurrency` at a time, keeping config order.
pub(crate) async fn connect_all(
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
pub(crate) fn dedupe(
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
            let (fallback, report_age_secs, fresh_checks) =
                (acc.fallback.clone(), acc.report_age_secs, acc.fresh_checks);
            let store = Arc::clone(store);
            let outcome =
                tokio::task::spawn_blocking(move || write_account(&store, run_id, acc, dry_run))
                    .await
                    .map_err(|e| StoreError(format!("store write task failed: {e}")))??;
            tracing::info!(account = %id, users = outcome.users, created = outcome.created, updated = outcome.updated, deleted = outcome.deleted, retired = outcome.retired, "account collected");
            if outcome.retired > 0 {
                tracing::warn!(account = %id, users = outcome.retired, "users outside collect path_prefix are retired from the snapshot (not deleted)");
            }
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
                retired: outcome.retired,
                vanished,
                calls,
                duration_ms,
                strategy: Some(strategy),
                fallback,
                report_age_secs,
                fresh_checks,
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
                retired: 0,
                vanished: 0,
                calls,
                duration_ms,
                strategy: None,
                fallback: None,
                report_age_secs: None,
                fresh_checks: 0,
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
        let mut users = list_users(&acc.iam, prefix).await.map_err(fail)?;
        tracing::debug!(users = users.len(), "listed users");
        let c = &config.collect;
        let bulk = match c.strategy {
            Strategy::Bulk => true,
            Strategy::PerUser => false,
            Strategy::Auto => users.len() > c.bulk_threshold,
        };
        let mut collected = None;
        let mut fallback = None;
        if bulk {
            let report_wait = std::time::Duration::from_secs(c.report_wait_secs);
            let max_age_ms = (c.report_max_age_secs as i64).saturating_mul(1000);
            let may_fall_back = c.strategy == Strategy::Auto;
            // Bulk consumes the list; auto keeps a copy for a fallback.
            let for_bulk = if may_fall_back {
                users.clone()
            } else {
                std::mem::take(&mut users)
            };
            // With an events source, CloudTrail narrows an older report's fresh checks to the
            // users changed since it (the refresh fixes anything CloudTrail shows later).
            let source = config.events_source.as_ref();
            let region = source.map(crate::config::EventsSourceConfig::trail_region);
            let changed_since = source.zip(region.as_deref()).map(|(source, region)| ChangedSince {
                sdk: &acc.sdk,
                region,
                counter: acc.counter.clone(),
                pace: source.lookup_pace(),
            });
            match collect_bulk(&acc.iam, for_bulk, c.user_concurrency, max_age_ms, report_wait, changed_since).await {
                Ok(out) => {
                    tracing::debug!(
                        fallbacks = out.fallbacks,
                        fresh_checks = out.fresh_checks,
                        "users collected per user (missing from the credential report or GAAD)"
                    );
                    collected = Some(out);
                }
                // In auto, what only bulk needs (GAAD, the credential report) must not fail an
                // account that per-user calls can collect.
                Err(e) => match bulk_only_failure(&e).filter(|_| may_fall_back) {
                    Some(why) => {
                        tracing::warn!(error = %e, "bulk collection unavailable ({why}); collecting this account with per-user calls");
                        fallback = Some(format!("{why}: {}", e.message));
                    }
                    _ => return Err(fail(e)),
                },
            }
        }
        let (users, vanished, report_age_secs, fresh_checks, strategy, from_bulk) = match collected
        {
            Some(out) => (
                out.users,
                out.vanished,
                out.report_age_secs,
                out.fresh_checks,
                "bulk",
                Some(FromBulk {
                    policies: out.policies,
                    own_policies: out.own_policies,
                    cert_holders: out.cert_holders,
                    in_report: out.in_report,
                    root: out.root,
                    report_stale: out.report_stale,
                    changed_since_report: out.changed_since_report,
                }),
            ),
            None => {
                let (users, vanished) = enrich_all(&acc.iam, users, c.user_concurrency)
                    .await
                    .map_err(fail)?;
                (users, vanished, None, 0, "per-user", None)
            }
        };
        // Permissions, the other credentials and the root user, for either strategy.
        let extras = Extras {
            iam: &acc.iam,
            partition: &acc.partition,
            account_id: &acc.account_id,
            credential_types: &c.credential_types,
            root_user: c.root_user,
            concurrency: c.user_concurrency,
            known_boundaries: None,
        };
        let (users, vanished_later, root) =
            extras.complete(users, from_bulk).await.map_err(fail)?;
        let vanished = vanished + vanished_later;
        Ok(AccountUsers {
            provenance: Provenance {
                account_id: acc.account_id.clone(),
                role_arn: acc.role_arn.clone(),
                path_prefix: prefix.clone(),
            },
            users,
            vanished,
            strategy,
            fallback,
            report_age_secs,
            fresh_checks,
            root,
        })
    }
    .instrument(span)
    .await;
    (result, counter.snapshot(), connect_ms + now_ms() - started)
}

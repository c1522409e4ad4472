//! Incremental refresh: between full syncs, the users that IAM write events name are collected
//! again, diffed, stored and delivered — the same path as a sync, for a few users
//! (design.md: "incremental refresh is the same path as a sync, for one user").
//!
//! The sources ([`sqs`], [`cloudtrail`]) turn messages or LookupEvents pages into [`IamEvent`]s
//! and hand them to [`Refresher::apply`]; they acknowledge (delete the message, move the cursor)
//! only what it reports stored. The full sync on the cron schedule stays the source of truth.

pub mod cloudtrail;
pub mod sqs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::collect::accounts::ConnectedAccount;
use crate::collect::calls::CallStats;
use crate::collect::events::{Actor, IamEvent, Target};
use crate::collect::extras::Extras;
use crate::collect::single::{refresh_users, resolve_targets};
use crate::collect::{CollectError, Provenance, accounts, build_base_config};
use crate::config::Config;
use crate::deliver::{SinkReport, deliver_all};
use crate::pipeline::{connect_all, dedupe};
use crate::store::snapshot::AccountWrite;
use crate::store::{PreparedRecord, Store, StoreError, SyncLock};
use crate::transform::{input_hash, to_ocsf};

/// What one refresh did: the run summary of a `refresh` run, the daemon's metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshReport {
    pub run_id: Option<i64>,
    pub source: &'static str,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Messages or CloudTrail events read.
    pub received: usize,
    /// Not readable as IAM events (left to the queue's redrive, or skipped).
    pub malformed: usize,
    /// Well-formed events that ask for nothing, by reason (`read-only call`, `account not
    /// collected`, `outside path prefix`…).
    pub ignored: BTreeMap<String, usize>,
    /// Events acted on (a user, group or policy refreshed).
    pub events: usize,
    pub accounts: Vec<AccountRefresh>,
    pub sinks: Vec<SinkReport>,
    /// The oldest and newest event time of the refresh (ms): lag = `finished_ms` − oldest.
    pub oldest_event_ms: Option<i64>,
    pub newest_event_ms: Option<i64>,
    /// Accounts of another shard named by events: left for that shard (not acknowledged).
    pub held: BTreeSet<String>,
}

/// The `ignored` reason of events for another shard's account.
pub const ANOTHER_SHARD: &str = "another shard's account";

#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountRefresh {
    pub account_id: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Users read afresh (gone ones included).
    pub users: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub calls: CallStats,
}

impl RefreshReport {
    pub fn ignore(&mut self, reason: &str) {
        *self.ignored.entry(reason.to_string()).or_default() += 1;
    }
    pub fn users(&self) -> usize {
        self.accounts.iter().map(|a| a.users).sum()
    }
    pub fn changes(&self) -> usize {
        self.accounts
            .iter()
            .map(|a| a.created + a.updated + a.deleted)
            .sum()
    }
    /// Accounts whose refresh failed: their events are not acknowledged (they come again).
    pub fn failed_accounts(&self) -> BTreeSet<String> {
        self.accounts
            .iter()
            .filter(|a| !a.ok)
            .map(|a| a.account_id.clone())
            .collect()
    }

    /// Accounts whose events must not be acknowledged: failed here, or another shard's.
    pub fn unacknowledged(&self) -> BTreeSet<String> {
        let mut all = self.failed_accounts();
        all.extend(self.held.iter().cloned());
        all
    }
    pub fn lag_ms(&self) -> Option<i64> {
        self.oldest_event_ms.map(|t| self.finished_ms - t)
    }
}

/// The accounts a refresh can reach: the configuration's, connected once (roles' sessions
/// refresh by themselves) and again when an event names an account not reached yet.
pub struct Refresher {
    config: Arc<Config>,
    store: Arc<Store>,
    accounts: HashMap<String, Arc<ConnectedAccount>>,
    connected_ms: i64,
    client: Result<reqwest::Client, String>,
}

/// How long an unknown account in an event waits before the configuration's accounts are
/// connected again (an organization account added since, a role that failed).
const RECONNECT_AFTER_MS: i64 = 10 * 60 * 1000;

impl Refresher {
    pub async fn connect(config: Arc<Config>, store: Arc<Store>) -> Refresher {
        let mut r = Refresher {
            config,
            store,
            accounts: HashMap::new(),
            connected_ms: 0,
            client: crate::deliver::client(),
        };
        r.reconnect().await;
        r
    }

    /// Connects every configured account (organization discovery included). Failures are logged;
    /// events for those accounts are held back (not acknowledged) until they connect.
    pub async fn reconnect(&mut self) {
        let base = build_base_config(&self.config.aws).await;
        let shard = self.config.shard;
        let (targets, discovery) =
            accounts::configured_targets(&base, &self.config.aws, shard, Default::default()).await;
        if let Some(e) = discovery {
            tracing::warn!(error = %e, "incremental refresh: organization discovery failed; refreshing the accounts reached before");
        }
        let connected = connect_all(&base, targets, self.config.collect.account_concurrency).await;
        let (mut ready, failed) = dedupe(connected);
        ready.retain(|(acc, _, _)| shard.owns(&acc.account_id));
        for (result, _, _) in failed {
            if let Err(e) = result {
                tracing::warn!(account = %e.account_id, error = %e.error, "incremental refresh: account not reachable; its events wait for the next try");
            }
        }
        for (acc, _, _) in ready {
            self.accounts.insert(acc.account_id.clone(), Arc::new(acc));
        }
        self.connected_ms = now_ms();
    }

    /// The connected accounts (the CloudTrail source polls each).
    pub fn accounts(&self) -> Vec<Arc<ConnectedAccount>> {
        let mut v: Vec<_> = self.accounts.values().cloned().collect();
        v.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        v
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether the account is one this configuration collects (connecting again, at most every
    /// few minutes, when it is not known yet).
    async fn knows(&mut self, account_id: &str) -> bool {
        if self.accounts.contains_key(account_id) {
            return true;
        }
        if now_ms() - self.connected_ms > RECONNECT_AFTER_MS {
            self.reconnect().await;
        }
        self.accounts.contains_key(account_id)
    }

    /// Refreshes what `events` name, stores the changes (with who made them) and delivers them.
    /// `report` comes in with what the source counted (received, malformed, ignored) and goes out
    /// complete. An account whose refresh fails changes nothing and is listed as failed: its
    /// events must not be acknowledged.
    pub async fn apply(
        &mut self,
        events: Vec<IamEvent>,
        mut report: RefreshReport,
        stop: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<RefreshReport, StoreError> {
        report.started_ms = now_ms();
        // Per account: what to refresh, and for each user name the latest event about it.
        let mut by_account: BTreeMap<String, Vec<IamEvent>> = BTreeMap::new();
        for e in events {
            if !self.config.shard.owns(&e.account_id) {
                // Another shard's: not acknowledged here (its own shard's source must see it).
                report.ignore(ANOTHER_SHARD);
                report.held.insert(e.account_id.clone());
            } else if self.knows(&e.account_id).await {
                by_account.entry(e.account_id.clone()).or_default().push(e);
            } else {
                tracing::debug!(account = %e.account_id, event = %e.name, "event for an account this configuration does not collect; ignored");
                report.ignore("account not collected");
            }
        }
        report.events = by_account.values().map(Vec::len).sum();
        let times = by_account.values().flatten().map(|e| e.time_ms);
        report.oldest_event_ms = times.clone().min();
        report.newest_event_ms = times.max();
        if by_account.is_empty() {
            report.finished_ms = now_ms();
            return Ok(report);
        }

        let store = Arc::clone(&self.store);
        let _lock = SyncLock::acquire_async(
            store.path(),
            std::time::Duration::from_secs(self.config.store.lock_wait_secs),
        )
        .await?;
        let run_id = store.begin_refresh(report.started_ms)?;
        report.run_id = Some(run_id);
        let span = tracing::info_span!("refresh", run_id, source = report.source);
        let result = async {
            for (account_id, events) in by_account {
                let acc = Arc::clone(&self.accounts[&account_id]);
                let outcome = self
                    .refresh_account(&acc, &events, run_id, &mut report)
                    .await?;
                report.accounts.push(outcome);
            }
            if report.changes() > 0 {
                report.sinks = deliver_all(
                    &store,
                    &self.config.effective_sinks(),
                    &self.client,
                    now_ms,
                    run_id,
                    stop,
                )
                .await;
            }
            report.finished_ms = now_ms();
            Ok::<_, StoreError>(())
        }
        .instrument(span)
        .await;
        let (status, summary) = match &result {
            Ok(()) => {
                let failed = !report.failed_accounts().is_empty()
                    || report
                        .sinks
                        .iter()
                        .any(|s| s.pending > 0 || s.error.is_some());
                (
                    if failed { "partial" } else { "ok" },
                    serde_json::to_string(&report).unwrap_or_default(),
                )
            }
            Err(e) => (
                "failed",
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        };
        store.finish_run(run_id, now_ms(), status, &summary)?;
        result.map(|()| report)
    }

    /// One account: resolve the targets to user names, read those users, write them (one
    /// transaction per actor). A failed call leaves the account's snapshot as it was.
    async fn refresh_account(
        &self,
        acc: &ConnectedAccount,
        events: &[IamEvent],
        run_id: i64,
        report: &mut RefreshReport,
    ) -> Result<AccountRefresh, StoreError> {
        let before = acc.counter.snapshot();
        let mut out = AccountRefresh {
            account_id: acc.account_id.clone(),
            ..Default::default()
        };
        let c = &self.config.collect;
        let extras = Extras {
            iam: &acc.iam,
            partition: &acc.partition,
            account_id: &acc.account_id,
            credential_types: &c.credential_types,
            root_user: false,
            concurrency: c.user_concurrency,
            known_boundaries: None,
        };
        let collected = async {
            // The latest event about a name says who to credit (bursts coalesce to one refresh).
            let mut latest: HashMap<String, Actor> = HashMap::new();
            let mut sorted: Vec<&IamEvent> = events.iter().collect();
            sorted.sort_by_key(|e| e.time_ms);
            for e in sorted {
                for t in &e.targets {
                    let names = match t {
                        Target::User(n) => BTreeSet::from([n.clone()]),
                        other => {
                            resolve_targets(&acc.iam, &BTreeSet::from([other.clone()])).await?
                        }
                    };
                    for n in names {
                        // The latest event is credited; the others it covers are listed.
                        let mut actor = e.actor.clone();
                        if let Some(before) = latest.remove(&n) {
                            actor.coalesced = before.coalesced;
                            if !actor.coalesced.contains(&before.event_name) {
                                actor.coalesced.push(before.event_name);
                            }
                            let credited = actor.event_name.clone();
                            actor.coalesced.retain(|c| *c != credited);
                        }
                        latest.insert(n, actor);
                    }
                }
            }
            let names: BTreeSet<String> = latest.keys().cloned().collect();
            let refreshed = refresh_users(&extras, &names, &self.config.aws.path_prefix).await?;
            Ok::<_, CollectError>((latest, refreshed))
        }
        .instrument(tracing::info_span!("account", account = %acc.account_id))
        .await;
        out.calls = acc.counter.snapshot().since(&before);
        let (latest, refreshed) = match collected {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(account = %acc.account_id, error = %e, "incremental refresh failed; the account's events are kept for a retry and its snapshot is unchanged");
                out.error = Some(e.message);
                return Ok(out);
            }
        };
        for _ in &refreshed.outside_prefix {
            report.ignore("outside path prefix");
        }
        out.ok = true;
        out.users = latest.len();
        // Group the users by who changed them: one write (transaction) per actor.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, actor) in &latest {
            let key = serde_json::to_string(actor).unwrap_or_default();
            groups.entry(key).or_default().push(name.clone());
        }
        let provenance = Provenance {
            account_id: acc.account_id.clone(),
            role_arn: acc.role_arn.clone(),
            path_prefix: self.config.aws.path_prefix.clone(),
        };
        let mut users: HashMap<String, crate::collect::IamUser> = refreshed
            .users
            .into_iter()
            .map(|u| (u.user_name.clone(), u))
            .collect();
        for (actor, mut names) in groups {
            names.sort();
            let collected_ms = now_ms();
            let records: Vec<PreparedRecord> = names
                .iter()
                .filter_map(|n| users.remove(n))
                .map(|u| {
                    let provenance = provenance.clone();
                    let hash = input_hash(&u, &provenance);
                    PreparedRecord::lazy(
                        u.arn.clone(),
                        u.user_name.clone(),
                        u.path.clone(),
                        hash,
                        move || to_ocsf(&u, &provenance, collected_ms),
                    )
                })
                .collect();
            let store = Arc::clone(&self.store);
            let (account_id, role_arn, prefix) = (
                acc.account_id.clone(),
                acc.role_arn.clone(),
                self.config.aws.path_prefix.clone(),
            );
            let written = tokio::task::spawn_blocking(move || {
                store.apply_account(
                    &AccountWrite {
                        run_id,
                        account_id: &account_id,
                        role_arn: role_arn.as_deref(),
                        path_prefix: &prefix,
                        collected_ms,
                        dry_run: false,
                        only_users: Some(&names),
                        actor: Some(&actor),
                    },
                    records,
                )
            })
            .await
            .map_err(|e| StoreError(format!("store write task failed: {e}")))??;
            out.created += written.created;
            out.updated += written.updated;
            out.deleted += written.deleted;
        }
        tracing::info!(account = %acc.account_id, users = out.users, created = out.created, updated = out.updated, deleted = out.deleted, calls = out.calls.total_attempts(), "users refreshed");
        Ok(out)
    }
}

/// What the source loops share with the daemon.
#[derive(Clone)]
pub struct Hooks {
    /// Held while a refresh writes: a full sync waits for it, and it for a sync.
    pub gate: Arc<tokio::sync::Mutex<()>>,
    /// True while a full sync runs: the sources do not take new events meanwhile (an SQS message
    /// received and then held for a long sync would be handed out again, and count toward the
    /// dead-letter queue).
    pub busy: Arc<std::sync::atomic::AtomicBool>,
    /// Each finished refresh (metrics).
    pub on_report: Arc<dyn Fn(&RefreshReport) + Send + Sync>,
    /// A source call failed (ReceiveMessage, LookupEvents) or a refresh could not be stored.
    pub on_error: Arc<dyn Fn() + Send + Sync>,
}

impl Hooks {
    /// Waits until no full sync runs. `false` when shutdown came first.
    pub async fn wait_idle(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        while self.busy.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return false,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
        !*stop.borrow()
    }

    pub fn source_error(&self) {
        (self.on_error)();
    }
}

/// Starts the configured source's loop (a task that ends at shutdown). Connecting the accounts
/// happens in the task, so the daemon is listening for signals and serving /healthz meanwhile.
pub fn spawn(
    config: Arc<Config>,
    store: Arc<Store>,
    hooks: Hooks,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let source = config.events_source.clone()?;
    Some(tokio::spawn(async move {
        let refresher = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = Refresher::connect(config, store) => r,
        };
        match source.kind {
            crate::config::EventsSourceType::Sqs => sqs::run(refresher, source, hooks, stop).await,
            crate::config::EventsSourceType::Cloudtrail => {
                cloudtrail::run(refresher, source, hooks, stop).await
            }
        }
    }))
}

/// One line per refresh in the log.
pub fn log_report(r: &RefreshReport) {
    if r.events == 0 && r.malformed == 0 {
        tracing::debug!(received = r.received, ignored = ?r.ignored, "IAM events read; nothing to refresh");
        return;
    }
    let failed = r.failed_accounts();
    tracing::info!(
        source = r.source,
        received = r.received,
        events = r.events,
        malformed = r.malformed,
        ignored = ?r.ignored,
        users = r.users(),
        changes = r.changes(),
        failed_accounts = ?failed,
        lag_ms = r.lag_ms(),
        "incremental refresh finished"
    );
}

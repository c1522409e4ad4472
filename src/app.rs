//! Command dispatch: each command loads what it needs and returns the process exit code.
//! Errors a user can cause come back as one line on stderr and exit code 1.

use std::io::Write;
use std::sync::Arc;

use crate::cli::{ChangesFormat, Cli, Command, LogFormat};
use crate::clock::{now_ms, parse_since, rfc3339};
use crate::config::Config;
use crate::pipeline::{RunOptions, RunReport, run_once};
use crate::store::{ChangeFilter, ChangeRow, OpenMode, Store};

/// Exit code for fatal errors: bad config, unusable store.
pub const EXIT_FATAL: i32 = 1;

pub async fn run(cli: Cli) -> i32 {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iam-inventory: {e}");
            EXIT_FATAL
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config.to_redacted_toml());
            eprintln!("config {} is valid", cli.config.display());
            Ok(0)
        }
        Command::Sync { dry_run } => {
            let mode = if dry_run {
                OpenMode::DryRun
            } else {
                OpenMode::ReadWrite
            };
            let store = Arc::new(Store::open(&config.store.path, mode)?);
            let (report, changes) = run_once(
                &config,
                &store,
                RunOptions {
                    dry_run,
                    stop: None,
                },
            )
            .await?;
            if dry_run {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                for c in &changes {
                    writeln!(out, "{}", change_json(c))?;
                }
            }
            match cli.log_format {
                LogFormat::Text => eprint!("{}", summary(&report)),
                // Every stderr line stays a JSON object for log pipelines.
                LogFormat::Json => log_summary(&report),
            }
            Ok(report.exit_code())
        }
        Command::Run => crate::daemon::run(config).await,
        Command::Export => {
            let store = Store::open(&config.store.path, OpenMode::ReadOnly)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = store.export(&mut out)?;
            out.flush()?;
            tracing::debug!(records = n, "exported");
            Ok(0)
        }
        Command::Changes {
            since,
            account,
            user,
            format,
        } => {
            let since_ms = since
                .as_deref()
                .map(|s| parse_since(s, now_ms()))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let store = Store::open(&config.store.path, OpenMode::ReadOnly)?;
            let rows = store.changes(&ChangeFilter {
                since_ms,
                account,
                user,
            })?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match format {
                ChangesFormat::Json => {
                    for r in &rows {
                        writeln!(out, "{}", change_json(r))?;
                    }
                }
                ChangesFormat::Table => write!(out, "{}", changes_table(&rows))?,
            }
            out.flush()?;
            Ok(0)
        }
    }
}

/// One change as a JSON object (`changes --format json`, `sync --dry-run`).
pub fn change_json(c: &ChangeRow) -> serde_json::Value {
    serde_json::json!({
        "run_id": c.run_id,
        "time": rfc3339(c.at),
        "account_id": c.account_id,
        "user": c.user_name,
        "uid": c.uid,
        "kind": c.kind.as_str(),
        "fields": c.fields,
    })
}

/// The change log for people: one line per change, one indented line per changed field.
pub fn changes_table(rows: &[ChangeRow]) -> String {
    if rows.is_empty() {
        return "no changes\n".into();
    }
    let mut s = String::new();
    for r in rows {
        s.push_str(&format!(
            "{}  {:<7}  {}  {}  ({})\n",
            rfc3339(r.at),
            r.kind.as_str(),
            r.account_id,
            r.user_name,
            r.uid
        ));
        for f in &r.fields {
            let line = match (&f.old, &f.new) {
                (serde_json::Value::Null, new) => format!("+ {}: {}", f.path, new),
                (old, serde_json::Value::Null) => format!("- {}: {}", f.path, old),
                (old, new) => format!("~ {}: {} → {}", f.path, old, new),
            };
            s.push_str("      ");
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

/// The run summary as structured log events: one for the run, one per account, one per sink.
pub fn log_summary(r: &RunReport) {
    let calls = r.total_calls();
    tracing::info!(
        run_id = r.run_id,
        status = r.status().as_str(),
        duration_ms = r.finished_ms - r.started_ms,
        accounts_ok = r.accounts.iter().filter(|a| a.ok).count(),
        accounts_failed = r.accounts.iter().filter(|a| !a.ok).count(),
        users = r.accounts.iter().map(|a| a.users).sum::<usize>(),
        created = r.accounts.iter().map(|a| a.created).sum::<usize>(),
        updated = r.accounts.iter().map(|a| a.updated).sum::<usize>(),
        deleted = r.accounts.iter().map(|a| a.deleted).sum::<usize>(),
        calls = calls.total_attempts(),
        throttled = calls.total_throttles(),
        "sync summary"
    );
    for a in &r.accounts {
        tracing::info!(
            account = %a.account_id,
            role = a.role_arn.as_deref().unwrap_or("caller"),
            ok = a.ok,
            strategy = a.strategy.unwrap_or("-"),
            error = a.error.as_deref().unwrap_or(""),
            users = a.users,
            created = a.created,
            updated = a.updated,
            deleted = a.deleted,
            calls = a.calls.total_attempts(),
            throttled = a.calls.total_throttles(),
            "account summary"
        );
    }
    for k in &r.sinks {
        tracing::info!(
            sink = %k.name,
            mode = k.mode,
            sent = k.sent,
            acknowledged = k.acknowledged,
            pending = k.pending,
            error = k.error.as_deref().unwrap_or(""),
            "sink summary"
        );
    }
}

/// The run summary printed on stderr after `sync`.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let ok = r.accounts.iter().filter(|a| a.ok).count();
    let failed = r.accounts.len() - ok;
    let users: usize = r.accounts.iter().map(|a| a.users).sum();
    let created: usize = r.accounts.iter().map(|a| a.created).sum();
    let updated: usize = r.accounts.iter().map(|a| a.updated).sum();
    let deleted: usize = r.accounts.iter().map(|a| a.deleted).sum();
    let calls = r.total_calls();
    let head = match (r.dry_run, r.run_id) {
        (true, _) => "dry run (nothing written, nothing sent)".to_string(),
        (false, Some(id)) => format!("sync run {id}"),
        (false, None) => "sync".to_string(),
    };
    s.push_str(&format!(
        "{head}: {} in {:.1}s — accounts ok {ok}, failed {failed}; users {users}; created {created}, updated {updated}, deleted {deleted}; IAM/STS calls {} (throttled {})\n",
        r.status().as_str(),
        (r.finished_ms - r.started_ms) as f64 / 1000.0,
        calls.total_attempts(),
        calls.total_throttles(),
    ));
    for a in &r.accounts {
        let via = a.role_arn.as_deref().unwrap_or("caller");
        if a.ok {
            s.push_str(&format!(
                "  account {} ({via}): ok ({}), users {}, created {}, updated {}, deleted {}, calls {} (throttled {})\n",
                a.account_id,
                a.strategy.unwrap_or("-"),
                a.users,
                a.created,
                a.updated,
                a.deleted,
                a.calls.total_attempts(),
                a.calls.total_throttles()
            ));
        } else {
            s.push_str(&format!(
                "  account {} ({via}): FAILED: {}\n",
                a.account_id,
                a.error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    for k in &r.sinks {
        s.push_str(&format!(
            "  sink {} ({}): sent {}, acknowledged {}, pending {}{}\n",
            k.name,
            k.mode,
            k.sent,
            k.acknowledged,
            k.pending,
            k.error
                .as_deref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        ));
    }
    s
}

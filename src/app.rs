//! Command dispatch: each command loads what it needs and returns the process exit code.
//! Errors a user can cause come back as one line on stderr and exit code 1.

use std::io::Write;
use std::sync::Arc;

use crate::cli::{ChangesFormat, Cli, Command, LogFormat};
use crate::clock::{now_ms, parse_since, rfc3339};
use crate::config::Config;
use crate::pipeline::{RunOptions, run_once};
use crate::store::{ChangeFilter, ChangeRow, OpenMode, Store};
use crate::summary::{log_summary, summary};

/// Exit code for fatal errors: bad config, unusable store.
pub const EXIT_FATAL: i32 = 1;

pub async fn run(cli: Cli) -> i32 {
    match dispatch(cli).await {
        Ok(code) => code,
        // `export | head`: the reader has what it wanted; stopping is not an error.
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("iam-inventory: {e}");
            EXIT_FATAL
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let mut config = Config::load(&cli.config)?;
    if let Some(shard) = &cli.shard {
        config.shard = crate::config::ShardConfig::parse(shard).map_err(anyhow::Error::msg)?;
    }
    match cli.command {
        Command::CheckConfig { connect } => {
            {
                let mut out = std::io::stdout().lock();
                out.write_all(config.to_redacted_toml().as_bytes())?;
                // Where each sink's requests go, as TOML comments (the output stays valid TOML).
                writeln!(out, "\n# Resolved sink endpoints")?;
                for sink in config.effective_sinks() {
                    for e in crate::deliver::probe::endpoints(&sink) {
                        writeln!(out, "# sink {} ({}): {e}", sink.name, sink.kind.as_str())?;
                    }
                }
                out.flush()?;
            }
            eprintln!("config {} is valid", cli.config.display());
            if !connect {
                return Ok(0);
            }
            let sinks = config.effective_sinks();
            let (aws, sinks) = tokio::join!(
                crate::collect::probe::probe_aws(&config.aws, config.events_source.as_ref()),
                crate::deliver::probe::probe_sinks(&sinks)
            );
            let mut failed = 0;
            for (target, result) in aws.into_iter().chain(sinks) {
                match result {
                    Ok(found) => eprintln!("ok      {target}: {found}"),
                    Err(wrong) => {
                        failed += 1;
                        eprintln!("FAILED  {target}: {wrong}");
                    }
                }
            }
            Ok(if failed > 0 { EXIT_FATAL } else { 0 })
        }
        Command::Sync { dry_run } => {
            let mode = if dry_run {
                OpenMode::DryRun
            } else {
                OpenMode::ReadWrite
            };
            let store = Arc::new(Store::open(&config.store.path, mode)?);
            // SIGINT/SIGTERM stop the sync at its next safe point, as in the daemon: the run is
            // recorded as interrupted and the rest is left for the next sync.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let signals = tokio::spawn(async move {
                crate::daemon::wait_for_signal().await;
                tracing::warn!("signal received: stopping at the next safe point");
                let _ = stop_tx.send(true);
            });
            let result = run_once(
                &config,
                &store,
                RunOptions {
                    dry_run,
                    stop: Some(stop_rx),
                },
            )
            .await;
            signals.abort();
            let (report, changes) = result?;
            if dry_run {
                // What each sink with a field mapping would receive for a created or updated user.
                let views: Vec<(String, crate::mapping::Mapping)> = config
                    .effective_sinks()
                    .iter()
                    .filter_map(|s| s.mapping().map(|m| (s.name.clone(), m)))
                    .collect();
                let now = now_ms();
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                for c in &changes {
                    let mut line = change_json(c);
                    if let (Some(record), false) = (&c.record, views.is_empty()) {
                        let mut per_sink = serde_json::Map::new();
                        for (name, m) in &views {
                            let view = m
                                .apply(record, now)
                                .unwrap_or_else(|e| serde_json::json!({ "error": e }));
                            per_sink.insert(name.clone(), view);
                        }
                        line["sinks"] = serde_json::Value::Object(per_sink);
                    }
                    writeln!(out, "{line}")?;
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
        Command::Export { sink } => {
            // Resolved before the store is opened: a misspelt sink is a usage error.
            let mapping = match &sink {
                None => None,
                Some(name) => config
                    .effective_sinks()
                    .into_iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "export --sink {name:?}: no such sink in {} (sinks: {})",
                            cli.config.display(),
                            config
                                .effective_sinks()
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?
                    .mapping(),
            };
            let store = Store::open(&config.store.path, OpenMode::ReadOnly)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let now = now_ms();
            let n = store.export(&mut |record| {
                match &mapping {
                    None => out.write_all(record.as_bytes())?,
                    Some(m) => {
                        let value = serde_json::from_str(record)
                            .map_err(std::io::Error::other)
                            .and_then(|v| m.apply(&v, now).map_err(std::io::Error::other))?;
                        serde_json::to_writer(&mut out, &value)?;
                    }
                }
                out.write_all(b"\n")
            })?;
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
                with_records: format == ChangesFormat::Ocsf,
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
                ChangesFormat::Ocsf => {
                    for event in rows.iter().flat_map(ChangeRow::events) {
                        writeln!(out, "{event}")?;
                    }
                }
            }
            out.flush()?;
            Ok(0)
        }
    }
}

/// One change as a JSON object (`changes --format json`, `sync --dry-run`).
pub fn change_json(c: &ChangeRow) -> serde_json::Value {
    let mut v = serde_json::json!({
        "run_id": c.run_id,
        "time": rfc3339(c.at),
        "account_id": c.account_id,
        "user": c.user_name,
        "uid": c.uid,
        "kind": c.kind.as_str(),
        "fields": c.fields,
    });
    // Who did it, when an IAM event named the change (incremental refresh).
    if let Some(a) = &c.actor {
        let mut actor = serde_json::to_value(a).unwrap_or_default();
        actor["event_time"] = serde_json::json!(rfc3339(a.event_time));
        v["actor"] = actor;
    }
    v
}

/// The change log for people: one line per change, one indented line per changed field.
pub fn changes_table(rows: &[ChangeRow]) -> String {
    if rows.is_empty() {
        return "no changes\n".into();
    }
    let mut s = String::new();
    for r in rows {
        let by = r
            .actor
            .as_ref()
            .map(|a| {
                let mut calls = a.coalesced.clone();
                calls.push(a.event_name.clone());
                format!("  by {} ({})", a.label(), calls.join(", "))
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "{}  {:<7}  {}  {}  ({}){by}\n",
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

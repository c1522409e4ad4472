//! The run summary, for people (`sync` on stderr) and for log pipelines (one JSON event per run,
//! account and sink). Both `sync` and the daemon print it, so it lives below both.

use crate::pipeline::RunReport;

/// The run summary as structured log events: one for the run, one per account, one per sink.
pub fn log_summary(r: &RunReport) {
    let calls = r.total_calls();
    tracing::info!(
        run_id = r.run_id,
        status = r.status().as_str(),
        duration_ms = r.finished_ms - r.started_ms,
        accounts_ok = r.accounts.iter().filter(|a| a.ok).count(),
        accounts_failed = r.accounts.iter().filter(|a| !a.ok).count(),
        users = r.users(),
        created = r.created(),
        updated = r.updated(),
        deleted = r.deleted(),
        retired = r.retired(),
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
            retired = a.retired,
            fallback = a.fallback.as_deref().unwrap_or(""),
            fresh_checks = a.fresh_checks,
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
            rejected = k.rejected,
            events_sent = k.events_sent,
            events_acknowledged = k.events_acknowledged,
            changes_pending = k.changes_pending,
            error = k.error.as_deref().unwrap_or(""),
            "sink summary"
        );
        for x in &k.rejected_now {
            tracing::warn!(sink = %k.name, user = %x.user, uid = %x.uid, reason = %x.reason, "record rejected");
        }
    }
}

/// The run summary printed on stderr after `sync`.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let ok = r.accounts.iter().filter(|a| a.ok).count();
    let failed = r.accounts.len() - ok;
    let (users, created, updated, deleted, retired) = (
        r.users(),
        r.created(),
        r.updated(),
        r.deleted(),
        r.retired(),
    );
    let calls = r.total_calls();
    let head = match (r.dry_run, r.run_id) {
        (true, _) => "dry run (nothing written, nothing sent)".to_string(),
        (false, Some(id)) => format!("sync run {id}"),
        (false, None) => "sync".to_string(),
    };
    s.push_str(&format!(
        "{head}: {} in {:.1}s — accounts ok {ok}, failed {failed}; users {users}; created {created}, updated {updated}, deleted {deleted}, retired {retired}; IAM/STS calls {} (throttled {})\n",
        r.status().as_str(),
        (r.finished_ms - r.started_ms) as f64 / 1000.0,
        calls.total_attempts(),
        calls.total_throttles(),
    ));
    for a in &r.accounts {
        let via = a.role_arn.as_deref().unwrap_or("caller");
        if a.ok {
            let mut how = a.strategy.unwrap_or("-").to_string();
            if let Some(why) = &a.fallback {
                how.push_str(&format!(", bulk unavailable: {why}"));
            }
            if let Some(age) = a.report_age_secs {
                how.push_str(&format!(", credential report {}", age_text(age)));
            }
            if a.fresh_checks > 0 {
                how.push_str(&format!(", {} fresh checks", a.fresh_checks));
            }
            let retired = if a.retired > 0 {
                format!(", retired {} (outside path_prefix)", a.retired)
            } else {
                String::new()
            };
            s.push_str(&format!(
                "  account {} ({via}): ok ({how}), users {}, created {}, updated {}, deleted {}{retired}, calls {} (throttled {})\n",
                a.account_id,
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
    for (sink, n) in &r.pruned.undelivered {
        s.push_str(&format!(
            "  sink {sink}: {n} change events were older than store.changes_retention_days and pruned before it delivered them\n"
        ));
    }
    for (account, n) in &r.retired_accounts {
        s.push_str(&format!(
            "  account {account}: no longer in the configuration; retired {n} users (not deleted)\n"
        ));
    }
    for k in &r.sinks {
        let deletes = if k.deleted > 0 || k.deletes_pending > 0 {
            format!(
                ", deleted {}, deletes pending {}",
                k.deleted, k.deletes_pending
            )
        } else {
            String::new()
        };
        let events = if k.takes_changes {
            format!(
                "; events sent {}, acknowledged {}, changes pending {}",
                k.events_sent, k.events_acknowledged, k.changes_pending
            )
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  sink {} ({}): sent {}, acknowledged {}, pending {}, rejected {}{deletes}{events}{}\n",
            k.name,
            k.mode,
            k.sent,
            k.acknowledged,
            k.pending,
            k.rejected,
            k.error
                .as_deref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        ));
        for x in &k.rejected_now {
            s.push_str(&format!(
                "    rejected {} ({}): {}\n",
                x.user, x.uid, x.reason
            ));
        }
    }
    s
}

/// "12s old", "3h 20m old", "unknown age".
fn age_text(secs: i64) -> String {
    match secs {
        s if s < 0 => "unknown age".into(),
        s if s < 120 => format!("{s}s old"),
        s if s < 7200 => format!("{}m old", s / 60),
        s => format!("{}h {}m old", s / 3600, s % 3600 / 60),
    }
}

//! Many-accounts benchmark: BENCH_ACCOUNTS accounts (default 1,000) reached by AssumeRole in one
//! moto, BENCH_USERS users each (default 1), collected with `account_concurrency` 4, 16 and 64,
//! then once more with one account held to 2 IAM calls per second by the proxy (as IAM throttles
//! one busy account). Prints wall time, calls (total and per account, from the proxy's count by
//! access key), and how long the throttled account took next to the others.
//! `cargo bench --bench accounts` (needs ./.venv from scripts/bootstrap.sh).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;
use support::moto::{Moto, role_arn};

struct Figures {
    secs: f64,
    calls: u64,
    per_account: Vec<(String, i64)>,
    ok: usize,
}

/// Writes `config.toml` in `dir`: every account through its role, a store and a file sink there,
/// and `extra` sections.
fn write_config(
    dir: &std::path::Path,
    endpoint: &str,
    accounts: &[String],
    concurrency: usize,
    extra: &str,
) -> std::path::PathBuf {
    let mut config = format!(
        "[aws]\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\ninclude_caller_account = false\n[collect]\naccount_concurrency = {concurrency}\ncredential_types = [\"signing_certificates\"]\n[store]\npath = \"{}\"\n{extra}[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("store.db").display(),
        dir.join("out.ndjson").display()
    );
    for a in accounts {
        config.push_str(&format!("[[aws.roles]]\narn = \"{}\"\n", role_arn(a)));
    }
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    cfg
}

async fn run(endpoint: &str, accounts: &[String], concurrency: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), endpoint, accounts, concurrency, "");
    let started = Instant::now();
    let out = common::binary(&cfg, &["sync"]).output().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let summary: String = conn
        .query_row("SELECT summary FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    let mut calls = 0;
    let mut per_account = Vec::new();
    let mut ok = 0;
    for a in summary["accounts"].as_array().unwrap() {
        for n in a["calls"]["attempts"].as_object().unwrap().values() {
            calls += n.as_u64().unwrap();
        }
        ok += usize::from(a["ok"] == true);
        per_account.push((
            a["account_id"].as_str().unwrap().to_string(),
            a["duration_ms"].as_i64().unwrap(),
        ));
    }
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Figures {
        secs,
        calls,
        per_account,
        ok,
    }
}

/// Runs the daemon (sync at start) and probes /healthz every 50 ms until the sync is done.
/// Returns the probe latencies (ms) and the sync's duration (s).
async fn healthz_during_sync(endpoint: &str, accounts: &[String]) -> (Vec<f64>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(
        dir.path(),
        endpoint,
        accounts,
        16,
        &format!(
            "[schedule]\ncron = \"0 0 2 1 1 *\"\nrun_on_start = true\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let mut daemon = common::binary(&cfg, &["run"]).spawn().unwrap();
    let client = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut seen_running = false;
    while started.elapsed().as_secs() < 1800 {
        let t = Instant::now();
        let answer = client.get(&health).send().await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if let Ok(r) = answer {
            let body: Value =
                serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
            if body["sync_running"] == true {
                seen_running = true;
                latencies.push(ms);
            } else if seen_running || body["last_sync_finished"].is_string() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    (latencies, secs)
}

#[tokio::main]
async fn main() {
    let env = common::env_usize;
    let n = env("BENCH_ACCOUNTS", 1000);
    let users = env("BENCH_USERS", 1);
    let accounts: Vec<String> = (0..n)
        .map(|i| format!("{:012}", 300_000_000_000u64 + i as u64))
        .collect();
    let moto = Moto::start();
    let seeding = Instant::now();
    futures::stream::iter(&accounts)
        .map(|a| {
            let moto = &moto;
            async move {
                let iam = moto.iam_in(a).await;
                for u in 0..users {
                    iam.create_user()
                        .user_name(format!("user-{u}"))
                        .send()
                        .await
                        .expect("create user");
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    println!(
        "accounts benchmark: {n} accounts × {users} user(s) through AssumeRole on moto (seeded in {:.0}s; {})",
        seeding.elapsed().as_secs_f64(),
        common::machine()
    );
    let proxy = support::proxy::Proxy::start(&moto.endpoint, Default::default()).await;
    println!(
        "{:<36} {:>9} {:>10} {:>14} {:>12}",
        "run", "seconds", "calls", "calls/account", "accounts ok"
    );
    for concurrency in [4, 16, 64] {
        let f = run(&proxy.endpoint, &accounts, concurrency).await;
        println!(
            "{:<36} {:>9.1} {:>10} {:>14.1} {:>12}",
            format!("account_concurrency = {concurrency}"),
            f.secs,
            f.calls,
            f.calls as f64 / n as f64,
            f.ok
        );
    }
    // One account throttled by IAM: it is slower; the others are not held up by it.
    let slow = accounts[n / 2].clone();
    proxy.set_rules(support::proxy::Rules {
        account_rate_limit: vec![(slow.clone(), 2.0)],
        ..Default::default()
    });
    let f = run(&proxy.endpoint, &accounts, 16).await;
    let mut others: Vec<i64> = f
        .per_account
        .iter()
        .filter(|(a, _)| *a != slow)
        .map(|(_, ms)| *ms)
        .collect();
    others.sort_unstable();
    let throttled_ms = f
        .per_account
        .iter()
        .find(|(a, _)| *a == slow)
        .map_or(0, |(_, ms)| *ms);
    println!(
        "{:<36} {:>9.1} {:>10} {:>14.1} {:>12}",
        "16, one account at 2 calls/s",
        f.secs,
        f.calls,
        f.calls as f64 / n as f64,
        f.ok
    );
    println!(
        "throttled account: {:.1} s (throttled answers: {}); the others: median {:.2} s, 99th percentile {:.2} s",
        throttled_ms as f64 / 1000.0,
        proxy.throttled().values().sum::<u64>(),
        others[others.len() / 2] as f64 / 1000.0,
        others[others.len() * 99 / 100] as f64 / 1000.0,
    );
    // /healthz while the daemon syncs every account: the sync must not stall the server.
    proxy.set_rules(Default::default());
    let (latencies, secs) = healthz_during_sync(&proxy.endpoint, &accounts).await;
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    if !sorted.is_empty() {
        println!(
            "/healthz during a daemon sync of {n} accounts ({secs:.0} s, {} probes every 50 ms): median {:.1} ms, 99th percentile {:.1} ms, max {:.1} ms",
            sorted.len(),
            sorted[sorted.len() / 2],
            sorted[sorted.len() * 99 / 100],
            sorted[sorted.len() - 1]
        );
    }
    let by_account = proxy.calls_by_account();
    println!(
        "proxy's count by access key: {} accounts seen, {} IAM calls in all",
        by_account.len(),
        by_account.values().sum::<u64>()
    );
}

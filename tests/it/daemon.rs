//! `iam-inventory run`: schedule, skipped ticks, /healthz, /metrics, SIGTERM.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::fixtures::{aws_section, seed_standard};
use crate::support::cli::Workspace;
use crate::support::free_port;
use crate::support::moto::{Moto, Seed, role_arn, seed_user};
use crate::support::proxy::{Proxy, Rules};

/// Parses Prometheus text exposition strictly enough to catch format errors: every sample's family
/// has a `# TYPE` line before it, names and labels are well formed, values are numbers.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        // A summary's samples are `<name>_sum` and `<name>_count`.
        let family = [name.strip_suffix("_sum"), name.strip_suffix("_count")]
            .into_iter()
            .flatten()
            .find(|f| typed.contains(*f))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no # TYPE before it");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), v);
    }
    samples
}

pub(crate) async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

pub(crate) async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub(crate) fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_run_summary_and_healthz_flips_after_a_failed_sync() {
    const B: &str = "222222222222";
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    seed_user(
        &moto.iam_in(B).await,
        &Seed {
            name: "b1",
            path: "/engineering/",
            active_keys: 1,
            ..Default::default()
        },
    )
    .await;
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let ws = Workspace::new();
    let port = free_port();
    let cfg = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n[schedule]\ncron = \"*/3 * * * * *\"\nrun_on_start = true\n[server]\nlisten = \"127.0.0.1:{port}\"\n[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = {:?}\n",
        aws_section(&proxy.endpoint, "/engineering/"),
        role_arn(B),
        ws.path("out.ndjson").display().to_string()
    ));
    let mut child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let synced = wait_until(Duration::from_secs(30), || async {
        let (_, text) = get(&format!("{base}/metrics")).await;
        text.contains("iam_inventory_syncs_total{status=\"ok\"} 1")
    })
    .await;
    assert!(synced, "a first sync should finish");
    let (code, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    // The metrics are the run summary's numbers. (A second, unchanged sync may have run meanwhile:
    // only the call counters can have grown.)
    let (_, text) = get(&format!("{base}/metrics")).await;
    let m = parse_prometheus(&text);
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let summary: String = conn
        .query_row("SELECT summary FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    for account in summary["accounts"].as_array().unwrap() {
        let id = account["account_id"].as_str().unwrap();
        assert_eq!(
            m[&format!("iam_inventory_users{{account=\"{id}\"}}")],
            account["users"].as_f64().unwrap()
        );
        assert_eq!(
            m[&format!("iam_inventory_changes_total{{account=\"{id}\",kind=\"created\"}}")],
            account["created"].as_f64().unwrap()
        );
        for (op, n) in account["calls"]["attempts"].as_object().unwrap() {
            let key =
                format!("iam_inventory_aws_calls_total{{account=\"{id}\",operation=\"{op}\"}}");
            assert!(m[&key] >= n.as_f64().unwrap(), "{key}");
        }
    }
    let sink = &summary["sinks"][0];
    assert_eq!(
        m["iam_inventory_sink_records_acknowledged_total{sink=\"file\"}"],
        sink["acknowledged"].as_f64().unwrap()
    );
    assert_eq!(
        m["iam_inventory_sink_records_acknowledged_total{sink=\"file\"}"],
        5.0
    );
    assert_eq!(m["iam_inventory_last_sync_success"], 1.0);

    // The next tick fails account B: /healthz says so.
    proxy.set_rules(Rules {
        deny_assume_role: vec![role_arn(B)],
        ..Default::default()
    });
    let flipped = wait_until(Duration::from_secs(30), || async {
        let (code, _) = get(&format!("{base}/healthz")).await;
        code == 503
    })
    .await;
    assert!(flipped, "healthz should turn 503 after a failed sync");
    let (_, body) = get(&format!("{base}/healthz")).await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("account {B} failed")),
        "{body}"
    );
    let (_, text) = get(&format!("{base}/metrics")).await;
    let m = parse_prometheus(&text);
    assert_eq!(
        m[&format!("iam_inventory_account_up{{account=\"{B}\"}}")],
        0.0
    );
    assert_eq!(m["iam_inventory_last_sync_success"], 0.0);

    sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_syncs_and_skips_ticks_while_a_slow_sync_runs() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    // ~27 IAM calls at 120 ms each, one at a time: a sync takes over 3 s; ticks come every 2 s.
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            delay: Duration::from_millis(120),
            ..Default::default()
        },
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[collect]\nuser_concurrency = 1\n[schedule]\ncron = \"*/2 * * * * *\"\nrun_on_start = false\n",
        aws_section(&proxy.endpoint, "/engineering/"),
    ));
    let child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let store = ws.store();
    let two_done = wait_until(Duration::from_secs(40), || {
        let store = store.clone();
        async move {
            rusqlite::Connection::open(&store)
                .and_then(|c| {
                    c.query_row("SELECT COUNT(*) FROM runs WHERE status = 'ok'", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .unwrap_or(0)
                >= 2
        }
    })
    .await;
    assert!(two_done, "two scheduled syncs should finish");
    sigterm(child.id().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schedule tick skipped"), "{stderr}");
    // Never two at once: no run started before the previous one finished.
    let conn = rusqlite::Connection::open(&store).unwrap();
    let mut stmt = conn
        .prepare("SELECT started_at, finished_at FROM runs ORDER BY id")
        .unwrap();
    let runs: Vec<(i64, Option<i64>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for w in runs.windows(2) {
        assert!(w[1].0 >= w[0].1.unwrap(), "overlapping runs: {runs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sync_stops_at_a_safe_point_and_the_next_start_is_consistent() {
    const B: &str = "222222222222";
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let b = moto.iam_in(B).await;
    for i in 0..6 {
        seed_user(
            &b,
            &Seed {
                name: &format!("b{i}"),
                path: "/engineering/",
                ..Default::default()
            },
        )
        .await;
    }
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            delay: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n[collect]\naccount_concurrency = 1\nuser_concurrency = 1\n[schedule]\nrun_on_start = true\n",
        aws_section(&proxy.endpoint, "/engineering/"),
        role_arn(B)
    ));
    let child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let store = ws.store();
    let first_account = wait_until(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            rusqlite::Connection::open(&store)
                .and_then(|c| {
                    c.query_row("SELECT COUNT(*) FROM run_accounts", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .unwrap_or(0)
                >= 1
        }
    })
    .await;
    assert!(first_account);
    let signalled = Instant::now();
    sigterm(child.id().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(signalled.elapsed() < Duration::from_secs(35));

    let conn = rusqlite::Connection::open(&store).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let status: String = conn
        .query_row("SELECT status FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        status, "interrupted",
        "stopped between accounts, recorded as such"
    );
    let users: i64 = conn
        .query_row("SELECT COUNT(*) FROM snapshot", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        users, 4,
        "the caller's account committed whole, B not started or rolled back whole"
    );
    drop(conn);

    proxy.set_rules(Rules::default());
    let next = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_eq!(ws.run(&cfg, &["export"], &[]).await.json_lines().len(), 10);
}

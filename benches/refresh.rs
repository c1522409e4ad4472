//! Incremental refresh benchmark: BENCH_USERS users (default 2,000) in one moto account, then
//! BENCH_CHANGES (default 20) of them changed. Prints, side by side: a full bulk sync, and the
//! daemon's incremental refresh of the changed users from SQS messages (moto's SQS, EventBridge-
//! shaped bodies): IAM calls, calls per changed user, and time from the messages being sent to the
//! last changed record written by the sink.
//! `cargo bench --bench refresh` (needs ./.venv from scripts/bootstrap.sh).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::moto::{CALLER_ACCOUNT, Moto, eventbridge_message, events_queue, trail_record};

async fn seed(iam: &aws_sdk_iam::Client, users: usize) {
    for g in ["developers", "admins", "readonly"] {
        let _ = iam.create_group().group_name(g).send().await;
    }
    futures::stream::iter(0..users)
        .map(|i| {
            let iam = iam.clone();
            async move {
                let name = format!("user-{i:05}");
                iam.create_user()
                    .user_name(&name)
                    .path(format!("/team-{:02}/", i % 20))
                    .send()
                    .await
                    .expect("create user");
                if i % 3 == 0 {
                    iam.create_access_key()
                        .user_name(&name)
                        .send()
                        .await
                        .expect("key");
                }
                if i % 5 == 0 {
                    iam.add_user_to_group()
                        .group_name(["developers", "admins", "readonly"][i % 3])
                        .user_name(&name)
                        .send()
                        .await
                        .expect("group");
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

fn calls_of(summary: &Value) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for a in summary["accounts"].as_array().into_iter().flatten() {
        for (op, n) in a["calls"]["attempts"].as_object().into_iter().flatten() {
            *calls.entry(op.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    calls
}

/// The calls of the store's last full sync, by operation (from its run summary).
fn last_sync_calls(conn: &rusqlite::Connection) -> BTreeMap<String, u64> {
    let summary: String = conn
        .query_row(
            "SELECT summary FROM runs WHERE kind = 'sync' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    calls_of(&serde_json::from_str(&summary).unwrap())
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let env = common::env_usize;
    let users = env("BENCH_USERS", 2000);
    let changes = env("BENCH_CHANGES", 20);
    let moto = Moto::start();
    let iam = moto.iam().await;
    let seeding = Instant::now();
    seed(&iam, users).await;
    let sqs = moto.sqs().await;
    let (queue, _) = events_queue(&sqs, "iam-inventory-events", 5, 30).await;
    println!(
        "refresh benchmark: {users} users on moto, {changes} changed (seeded in {:.0}s; {})",
        seeding.elapsed().as_secs_f64(),
        common::machine()
    );
    // moto answers ListServiceSpecificCredentials with a 500: the proxy answers it, empty.
    let proxy = support::proxy::Proxy::start(
        &moto.endpoint,
        support::proxy::Rules {
            service_credentials: Some(Vec::new()),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[collect]\nstrategy = \"bulk\"\nuser_concurrency = 16\n[store]\npath = \"{}\"\n[schedule]\ncron = \"0 0 2 1 1 *\"\nrun_on_start = false\n[server]\nlisten = \"127.0.0.1:{port}\"\n[events_source]\ntype = \"sqs\"\nqueue_url = \"{queue}\"\nwait_secs = 1\ncoalesce_ms = 500\n[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\n",
        proxy.endpoint,
        dir.path().join("store.db").display(),
        out.display()
    );
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, &config).unwrap();
    // The baseline sync knows nothing of events (an events source lets CloudTrail narrow the
    // older report's checks: measured separately below).
    let plain = dir.path().join("plain.toml");
    let events_at = config.find("[events_source]").unwrap();
    let sinks_at = config.find("[[sinks]]").unwrap();
    std::fs::write(
        &plain,
        format!("{}{}", &config[..events_at], &config[sinks_at..]),
    )
    .unwrap();
    let command_with = common::binary;
    let command = |args: &[&str]| command_with(&cfg, args);

    // 1. The full bulk sync (the baseline: what a cron-only setup pays to see any change).
    let started = Instant::now();
    let sync = command_with(&plain, &["sync"]).output().await.unwrap();
    let full_secs = started.elapsed().as_secs_f64();
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let full_calls = last_sync_calls(&conn);
    let written = lines(&out);

    // 2. The daemon, refreshing from the queue.
    let mut daemon = command(&["run"]).spawn().unwrap();
    let health = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..300 {
        if reqwest::get(&health).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Connected and polling (the first ReceiveMessage).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changed: Vec<String> = (0..changes)
        .map(|i| format!("user-{:05}", i * (users / changes.max(1)).max(1) + 1))
        .collect();
    for name in &changed {
        iam.tag_user()
            .user_name(name)
            .tags(
                aws_sdk_iam::types::Tag::builder()
                    .key("changed")
                    .value("yes")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let now = iam_inventory::clock::rfc3339(iam_inventory::clock::now_ms());
    let sent = Instant::now();
    for (i, name) in changed.iter().enumerate() {
        let record = trail_record(
            CALLER_ACCOUNT,
            "TagUser",
            &format!("bench-{i}"),
            &now,
            json!({"userName": name, "tags": [{"key": "changed", "value": "yes"}]}),
        );
        sqs.send_message()
            .queue_url(&queue)
            .message_body(eventbridge_message(&record))
            .send()
            .await
            .unwrap();
    }
    let mut delivered = None;
    for _ in 0..1200 {
        if lines(&out) >= written + changes {
            delivered = Some(sent.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    let mut refresh_calls: BTreeMap<String, u64> = BTreeMap::new();
    let mut refreshes = 0;
    let mut stmt = conn
        .prepare("SELECT summary FROM runs WHERE kind = 'refresh'")
        .unwrap();
    for s in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        refreshes += 1;
        for (op, n) in calls_of(&serde_json::from_str(&s.unwrap()).unwrap()) {
            *refresh_calls.entry(op).or_default() += n;
        }
    }

    // 3. A full sync with the events source: moto's report is always "old", and CloudTrail
    // (the LookupEvents fake, holding the same 20 events) names the only users it cannot vouch for.
    let trail = support::cloudtrail::CloudTrail::new();
    for name in &changed {
        trail.record(support::cloudtrail::TrailEvent::by_role(
            CALLER_ACCOUNT,
            "Admin",
            "jane",
            "TagUser",
            json!({"userName": name}),
        ));
    }
    proxy.attach_cloudtrail(&trail);
    let started = Instant::now();
    let sync = command(&["sync"]).output().await.unwrap();
    let narrowed_secs = started.elapsed().as_secs_f64();
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let narrowed_calls = last_sync_calls(&conn);

    let total = |c: &BTreeMap<String, u64>| c.values().sum::<u64>();
    println!(
        "{:<34} {:>10} {:>12} {:>22}",
        "", "seconds", "IAM calls", "calls/changed user"
    );
    println!(
        "{:<34} {:>10.2} {:>12} {:>22.1}",
        "full bulk sync (baseline)",
        full_secs,
        total(&full_calls),
        total(&full_calls) as f64 / changes as f64
    );
    println!(
        "{:<34} {:>10} {:>12} {:>22.1}",
        format!("incremental refresh ({refreshes} runs)"),
        delivered
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "timeout".into()),
        total(&refresh_calls),
        total(&refresh_calls) as f64 / changes as f64
    );
    println!(
        "{:<34} {:>10.2} {:>12} {:>22.1}",
        "full bulk sync, CloudTrail-narrowed",
        narrowed_secs,
        total(&narrowed_calls),
        total(&narrowed_calls) as f64 / changes as f64
    );
    println!(
        "(refresh seconds: from the messages sent to the last changed record written by the sink)"
    );
    println!("calls by operation:");
    println!(
        "  {:<32} {:>10} {:>10} {:>10}",
        "", "full", "refresh", "narrowed"
    );
    let ops: std::collections::BTreeSet<&String> = full_calls
        .keys()
        .chain(refresh_calls.keys())
        .chain(narrowed_calls.keys())
        .collect();
    for op in ops {
        let n = |c: &BTreeMap<String, u64>| c.get(op).copied().unwrap_or(0);
        println!(
            "  {:<32} {:>10} {:>10} {:>10}",
            op,
            n(&full_calls),
            n(&refresh_calls),
            n(&narrowed_calls)
        );
    }
    println!("goal: calls ∝ changes, ≤ 10 per changed user; delivered ≤ 5 s");
    assert!(
        delivered.is_some(),
        "the refresh did not deliver every change"
    );
}

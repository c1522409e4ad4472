//! Collection benchmark: seeds a moto server with BENCH_ACCOUNTS accounts × BENCH_USERS users
//! (default 3 × 2,000), then runs the real binary once per strategy in the same run and prints, for
//! each: wall time, IAM/STS calls (total, per user, by operation), peak RSS, and the ratio.
//! It also checks that both strategies produced the same records.
//! `cargo bench --bench collect` (needs ./.venv from scripts/bootstrap.sh).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;
use support::moto::{Moto, role_arn};

const CALLER: &str = "123456789012";

async fn seed(moto: &Moto, account: &str, users: usize) {
    let iam = moto.iam_in(account).await;
    for g in ["developers", "admins", "readonly"] {
        let _ = iam.create_group().group_name(g).send().await;
    }
    futures::stream::iter(0..users)
        .map(|i| {
            let iam = iam.clone();
            async move {
                let name = format!("user-{i:05}");
                let path = format!("/team-{:02}/", i % 20);
                iam.create_user()
                    .user_name(&name)
                    .path(&path)
                    .tags(
                        aws_sdk_iam::types::Tag::builder()
                            .key("team")
                            .value(format!("t{}", i % 20))
                            .build()
                            .unwrap(),
                    )
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
                if i % 4 == 0 {
                    iam.create_login_profile()
                        .user_name(&name)
                        .password("Bench-pass-1!")
                        .send()
                        .await
                        .expect("login");
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

struct Figures {
    secs: f64,
    calls: BTreeMap<String, u64>,
    rss: Option<u64>,
    records: Vec<Value>,
}

/// `extra`: more `[collect]` keys.
async fn run(endpoint: &str, accounts: &[String], strategy: &str, extra: &str) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[aws]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n[collect]\nstrategy = \"{strategy}\"\nuser_concurrency = 16\n{extra}[store]\npath = \"{}\"\n[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\n",
        endpoint,
        dir.path().join("store.db").display(),
        dir.path().join("out.ndjson").display()
    );
    for a in accounts.iter().filter(|a| *a != CALLER) {
        config.push_str(&format!("[[aws.roles]]\narn = \"{}\"\n", role_arn(a)));
    }
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let started = Instant::now();
    let out = common::binary(&cfg, &["sync"]).output().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{strategy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let summary: String = conn
        .query_row("SELECT summary FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    let mut calls = BTreeMap::new();
    for a in summary["accounts"].as_array().unwrap() {
        for (op, n) in a["calls"]["attempts"].as_object().unwrap() {
            *calls.entry(op.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let mut records: Vec<Value> = std::fs::read_to_string(dir.path().join("out.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("time");
            // moto stamps a virtual MFA device's EnableDate twice, microseconds apart (device and
            // user list); compare whole seconds.
            if let Some(devices) = v["unmapped"]["user"]["mfa_devices"].as_array_mut() {
                for d in devices {
                    let ms = d["enabled_time"].as_i64().unwrap_or_default();
                    d["enabled_time"] = Value::from(ms / 1000);
                }
            }
            v
        })
        .collect();
    records.sort_by_key(|r| r["user"]["uid"].to_string());
    Figures {
        secs,
        calls,
        rss: summary["peak_rss_bytes"].as_u64(),
        records,
    }
}

#[tokio::main]
async fn main() {
    let accounts_n: usize = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let users: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let accounts: Vec<String> = std::iter::once(CALLER.to_string())
        .chain((1..accounts_n).map(|i| format!("{:012}", 200_000_000_000u64 + i as u64)))
        .collect();
    let moto = Moto::start();
    let seeding = Instant::now();
    for a in &accounts {
        seed(&moto, a, users).await;
    }
    let total_users = (accounts.len() * users) as f64;
    println!(
        "collect benchmark: {} accounts × {users} users on moto (seeded in {:.0}s; {})",
        accounts.len(),
        seeding.elapsed().as_secs_f64(),
        common::machine()
    );
    // moto answers ListServiceSpecificCredentials (a default credential type) with a 500: a proxy
    // answers it, empty, in IAM's shape; every other call goes through to moto.
    let proxy = support::proxy::Proxy::start(
        &moto.endpoint,
        support::proxy::Rules {
            service_credentials: Some(Vec::new()),
            ..Default::default()
        },
    )
    .await;
    let endpoint = proxy.endpoint.as_str();
    let per_user = run(endpoint, &accounts, "per-user", "").await;
    // moto's report claims to be from 2015: a very large report_max_age_secs makes bulk trust it, as
    // it trusts a report IAM generates for the sync itself; the default (60 s) treats it as an
    // older report and lists every user's keys.
    let bulk = run(
        endpoint,
        &accounts,
        "bulk",
        "report_max_age_secs = 2000000000\n",
    )
    .await;
    let bulk_older = run(endpoint, &accounts, "bulk", "").await;
    // Every credential type on (SSH keys cost one ListSSHPublicKeys per user: IAM has no
    // account-wide call for them).
    let bulk_all = run(
        endpoint,
        &accounts,
        "bulk",
        "report_max_age_secs = 2000000000\ncredential_types = [\"ssh_keys\", \"signing_certificates\", \"service_specific\"]\n",
    )
    .await;
    assert_eq!(per_user.records.len(), bulk.records.len());
    let identical = per_user.records == bulk.records && per_user.records == bulk_older.records;
    assert_eq!(bulk_all.records.len(), bulk.records.len());

    let total = |f: &Figures| f.calls.values().sum::<u64>();
    println!(
        "{:<28} {:>10} {:>12} {:>14} {:>12}",
        "strategy", "seconds", "API calls", "calls/user", "peak RSS"
    );
    let runs = [
        ("per-user", &per_user),
        ("bulk, fresh report", &bulk),
        ("bulk, older report", &bulk_older),
        ("bulk, every credential type", &bulk_all),
    ];
    for (name, f) in runs {
        println!(
            "{:<28} {:>10.1} {:>12} {:>14.2} {:>12}",
            name,
            f.secs,
            total(f),
            total(f) as f64 / total_users,
            common::mib(f.rss)
        );
    }
    for (name, f) in &runs[1..] {
        println!(
            "per-user / {name}: {:.1}× faster, {:.1}× fewer calls",
            per_user.secs / f.secs,
            total(&per_user) as f64 / total(f) as f64
        );
    }
    println!(
        "identical records: {}",
        if identical { "yes" } else { "NO" }
    );
    println!("calls by operation:");
    println!(
        "  {:<32} {:>10} {:>10} {:>10} {:>10}",
        "", "per-user", "bulk", "bulk-older", "bulk-all"
    );
    let ops: std::collections::BTreeSet<&String> = per_user
        .calls
        .keys()
        .chain(bulk_older.calls.keys())
        .chain(bulk_all.calls.keys())
        .collect();
    for op in ops {
        let n = |f: &Figures| f.calls.get(op).copied().unwrap_or(0);
        println!(
            "  {:<32} {:>10} {:>10} {:>10} {:>10}",
            op,
            n(&per_user),
            n(&bulk),
            n(&bulk_older),
            n(&bulk_all)
        );
    }
    let users_with_keys = (users as f64 / 3.0).ceil() as u64 * accounts.len() as u64;
    let bound = accounts.len() as u64 * (2 * (users as u64).div_ceil(1000) + 5) + users_with_keys;
    println!("bulk target: at most {bound} calls (2·⌈U/1000⌉ + 5 per account + users with keys)");
    assert!(identical, "strategies disagree");
}

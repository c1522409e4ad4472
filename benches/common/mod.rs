//! Shared by the benchmark programs: synthetic users and figures.
#![allow(dead_code)]

use iam_inventory::collect::{
    AccessKey, AccountUsers, Group, IamUser, KeyLastUsed, MfaDevice, Provenance, Tag,
};

/// A deterministic synthetic account: `n` users shaped like a real estate (a third with keys, half
/// with MFA, a few tags and groups each).
pub fn synthetic_account(account: &str, n: usize, generation: u64) -> AccountUsers {
    let users = (0..n)
        .map(|i| {
            let name = format!("user-{i:06}");
            let path = format!("/team-{:02}/", i % 37);
            IamUser {
                arn: format!("arn:aws:iam::{account}:user{path}{name}"),
                user_id: format!("AIDA{account}{i:08}"),
                user_name: name.clone(),
                path,
                create_date: 1_600_000_000_000 + i as i64 * 1000,
                password_last_used: (i % 2 == 0).then_some(1_700_000_000_000 + generation as i64),
                access_keys: if i % 3 == 0 {
                    vec![AccessKey {
                        id: format!("AKIA{i:016}"),
                        status: "Active".into(),
                        created: Some(1_650_000_000_000),
                        last_used: Some(KeyLastUsed {
                            date: 1_700_000_000_000,
                            service: Some("s3".into()),
                            region: Some("eu-west-1".into()),
                        }),
                    }]
                } else {
                    Vec::new()
                },
                mfa_devices: if i % 2 == 0 {
                    vec![MfaDevice {
                        serial: format!("arn:aws:iam::{account}:mfa/{name}"),
                        enabled: 1_650_000_000_000,
                    }]
                } else {
                    Vec::new()
                },
                console_password: i % 2 == 0,
                tags: vec![
                    Tag {
                        key: "team".into(),
                        value: format!("team-{}", i % 37),
                    },
                    Tag {
                        key: "owner".into(),
                        value: format!("owner-{}@example.com", i % 101),
                    },
                ],
                groups: vec![Group {
                    name: format!("group-{}", i % 11),
                    arn: Some(format!("arn:aws:iam::{account}:group/group-{}", i % 11)),
                }],
                permissions: Default::default(),
                credentials: Vec::new(),
            }
        })
        .collect();
    AccountUsers {
        provenance: Provenance {
            account_id: account.into(),
            role_arn: None,
            path_prefix: "/".into(),
        },
        users,
        vanished: 0,
        strategy: "bulk",
        fallback: None,
        report_age_secs: None,
        fresh_checks: 0,
        root: None,
    }
}

pub fn mib(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.0} MiB", b as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores, {model}, {}", iam_inventory::ALLOCATOR_NAME)
}

/// A count from the environment (`BENCH_USERS`…), or the default.
pub fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The binary under test, `--config <config> <args>`, with moto's test credentials and quiet logs.
pub fn binary(config: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_iam-inventory"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    c
}

/// A local HTTP receiver that acknowledges every POST and counts the NDJSON lines it got: the sink
/// end of the delivery and health benchmarks.
pub async fn receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::Ordering;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let c = c.clone();
        async move {
            c.fetch_add(
                body.iter().filter(|b| **b == b'\n').count() as u64,
                Ordering::Relaxed,
            );
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/ingest"), count)
}

//! The seeded IAM estate most tests start from.

use crate::support::moto::{Seed, seed_user};

/// Users under /engineering/ (the prefix most tests collect) and two outside it.
pub async fn seed_standard(iam: &aws_sdk_iam::Client) {
    for seed in [
        Seed {
            name: "alice",
            path: "/engineering/",
            tags: &[("team", "platform"), ("cost-centre", "R&D ✓ 研究")],
            active_keys: 1,
            inactive_keys: 0,
            mfa: true,
            console: true,
            groups: &["admins"],
        },
        Seed {
            name: "bob",
            path: "/engineering/",
            tags: &[("team", "données")],
            active_keys: 1,
            inactive_keys: 1,
            mfa: true,
            console: true,
            groups: &["developers", "oncall"],
        },
        Seed {
            name: "carol",
            path: "/engineering/",
            console: true,
            groups: &["developers"],
            ..Default::default()
        },
        Seed {
            name: "ci-deploy",
            path: "/engineering/automation/",
            active_keys: 2,
            ..Default::default()
        },
        Seed {
            name: "erin",
            path: "/finance/",
            console: true,
            ..Default::default()
        },
        Seed {
            name: "frank",
            path: "/engineering-old/",
            active_keys: 1,
            ..Default::default()
        },
    ] {
        seed_user(iam, &seed).await;
    }
}

pub const ENGINEERING: &[&str] = &["alice", "bob", "carol", "ci-deploy"];

/// `[aws]` for a test: the endpoint and prefix given, caller account only unless roles are added.
pub fn aws_section(endpoint: &str, prefix: &str) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\npath_prefix = \"{prefix}\"\nmax_attempts = 3\n"
    )
}

/// User names in a list of OCSF records, sorted.
pub fn names(records: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| r["user"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// Sets user's `team` tag (a typical IAM change for the tests).
pub async fn retag(iam: &aws_sdk_iam::Client, user: &str, value: &str) {
    iam.tag_user()
        .user_name(user)
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("team")
                .value(value)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// Records without `time`, sorted by ARN, with MFA enable times in whole seconds: moto stamps a
/// virtual device's EnableDate twice, microseconds apart (once on the device, which
/// ListVirtualMFADevices shows, once on the user's device list, which ListMFADevices shows), so two
/// strategies can see times that straddle a millisecond. AWS stores one time.
pub fn comparable(records: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = records
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.remove("time");
            }
            if let Some(devices) = r["unmapped"]["user"]["mfa_devices"].as_array_mut() {
                for d in devices {
                    let ms = d["enabled_time"].as_i64().unwrap_or_default();
                    d["enabled_time"] = serde_json::Value::from(ms / 1000);
                }
            }
            r
        })
        .collect();
    out.sort_by_key(|r| r["user"]["uid"].to_string());
    out
}

/// One `sync` of the accounts behind `endpoint` under /engineering/ with a collection strategy (and
/// more `[collect]` keys in `extra`): asserts it succeeded with that strategy and that every record
/// passes the strict schema; returns the workspace (its store) and the records, [`comparable`].
pub async fn sync_with_strategy(
    endpoint: &str,
    strategy: &str,
    extra: &str,
) -> (crate::support::cli::Workspace, Vec<serde_json::Value>) {
    let ws = crate::support::cli::Workspace::new();
    let cfg = ws.config(&format!(
        "{}[collect]\nstrategy = \"{strategy}\"\n{extra}",
        aws_section(endpoint, "/engineering/")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{strategy} via {endpoint}: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!("ok ({strategy}")),
        "{}",
        out.stderr
    );
    let records = out.json_lines();
    records
        .iter()
        .for_each(crate::support::schema::assert_valid);
    (ws, comparable(records))
}

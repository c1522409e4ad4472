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

//! `--shard I/N`: shards together hold exactly what one unsharded sync holds, and changing N
//! retires (never deletes) the accounts that moved.

use std::collections::BTreeMap;

use iam_inventory::config::shard_of;
use serde_json::Value;

use crate::fixtures::aws_section;
use crate::support::cli::Workspace;
use crate::support::moto::{CALLER_ACCOUNT, Moto, Seed, role_arn, seed_user};

/// Records by ARN, without their `time`.
fn records(lines: Vec<Value>) -> BTreeMap<String, Value> {
    lines
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("time");
            (r["user"]["uid"].as_str().unwrap().to_string(), r)
        })
        .collect()
}

/// Five member accounts (and the caller's) spread over 2 and over 3 shards, with at least one
/// account changing shard between the two.
fn accounts() -> Vec<String> {
    let mut picked: Vec<String> = Vec::new();
    let mut all = vec![CALLER_ACCOUNT.to_string()];
    for i in 0..200u64 {
        let id = format!("{:012}", 210_000_000_000u64 + i);
        all.push(id.clone());
        picked.push(id);
        if picked.len() >= 5 {
            let spread = |n: u32| (0..n).all(|s| all.iter().any(|a| shard_of(a, n) == s));
            let moved = all.iter().any(|a| shard_of(a, 2) != shard_of(a, 3));
            if spread(2) && spread(3) && moved {
                return picked;
            }
            all.pop();
            picked.pop();
        }
    }
    panic!("no spread of accounts found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_together_hold_one_syncs_records_and_a_reshard_deletes_nothing() {
    let moto = Moto::start();
    let members = accounts();
    seed_user(
        &moto.iam().await,
        &Seed {
            name: "root-admin",
            path: "/",
            active_keys: 1,
            ..Default::default()
        },
    )
    .await;
    for (i, account) in members.iter().enumerate() {
        let iam = moto.iam_in(account).await;
        for u in 0..=i % 3 {
            seed_user(
                &iam,
                &Seed {
                    name: &format!("u{u}"),
                    path: "/",
                    active_keys: u % 2,
                    mfa: u == 0,
                    ..Default::default()
                },
            )
            .await;
        }
    }
    let mut body = aws_section(&moto.endpoint, "/");
    for a in &members {
        body.push_str(&format!("[[aws.roles]]\narn = \"{}\"\n", role_arn(a)));
    }
    body.push_str("[[sinks]]\nname = \"out\"\ntype = \"file\"\npath = \"out.ndjson\"\n");

    let whole = Workspace::new();
    let cfg = whole.config(&body);
    let out = whole.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let expected = records(whole.run(&cfg, &["export"], &[]).await.json_lines());
    assert!(expected.len() >= 7, "{}", expected.len());

    // Two shards, each with its own store: together exactly the unsharded records, each account
    // in one shard.
    let shards: Vec<Workspace> = (0..3).map(|_| Workspace::new()).collect();
    let configs: Vec<_> = shards.iter().map(|ws| ws.config(&body)).collect();
    let sync = |i: usize, n: u32| {
        let (ws, cfg) = (&shards[i], &configs[i]);
        async move {
            let out = ws
                .run(cfg, &["sync", "--shard", &format!("{i}/{n}")], &[])
                .await;
            assert_eq!(out.code, 0, "shard {i}/{n}: {}", out.stderr);
            records(ws.run(cfg, &["export"], &[]).await.json_lines())
        }
    };
    let mut union = BTreeMap::new();
    for i in 0..2 {
        let got = sync(i, 2).await;
        for (uid, r) in got {
            let account = r["cloud"]["account"]["uid"].as_str().unwrap().to_string();
            assert_eq!(shard_of(&account, 2), i as u32, "{uid} in shard {i}");
            assert!(
                union.insert(uid.clone(), r).is_none(),
                "{uid} in two shards"
            );
        }
    }
    assert_eq!(union, expected, "two shards = one unsharded sync");

    // Three shards, the first two on their old stores: accounts that moved are retired there
    // (never deleted), and the three together again hold exactly the same records.
    let mut union = BTreeMap::new();
    for i in 0..3 {
        union.extend(sync(i, 3).await);
    }
    assert_eq!(union, expected, "three shards = one unsharded sync");
    let mut retired = 0;
    for (i, ws) in shards.iter().enumerate().take(2) {
        let out = ws
            .run(&configs[i], &["changes", "--format", "json"], &[])
            .await;
        for c in out.json_lines() {
            assert_ne!(
                c["kind"], "deleted",
                "shard {i} deleted a user that only moved: {c}"
            );
            if c["kind"] == "retired" {
                let account = c["account_id"].as_str().unwrap();
                assert_ne!(shard_of(account, 3), i as u32, "{c}");
                retired += 1;
            }
        }
    }
    assert!(retired > 0, "some account moved between shards");
}

//! Bulk and per-user collection: the same records, far fewer calls.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fixtures::{aws_section, seed_standard, sync_with_strategy};
use crate::support::cli::Workspace;
use crate::support::moto::{Moto, Seed, seed_user};

fn calls_of_last_run(ws: &Workspace) -> BTreeMap<String, u64> {
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let summary: String = conn
        .query_row(
            "SELECT summary FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    let mut calls = BTreeMap::new();
    for a in summary["accounts"].as_array().unwrap() {
        for (op, n) in a["calls"]["attempts"].as_object().unwrap() {
            *calls.entry(op.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_per_user_produce_identical_records_and_bulk_makes_far_fewer_calls() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    // A hardware MFA device (not in ListVirtualMFADevices) and a crowd of plain users.
    seed_user(
        &iam,
        &Seed {
            name: "gina",
            path: "/engineering/",
            console: true,
            ..Default::default()
        },
    )
    .await;
    iam.enable_mfa_device()
        .user_name("gina")
        .serial_number("GAHT12345678")
        .authentication_code1("123456")
        .authentication_code2("654321")
        .send()
        .await
        .unwrap();
    for i in 0..30 {
        let name = format!("svc-{i:02}");
        let tags = [("n", name.as_str())];
        seed_user(
            &iam,
            &Seed {
                name: &name,
                path: "/engineering/svc/",
                tags: &tags,
                active_keys: usize::from(i % 3 == 0),
                ..Default::default()
            },
        )
        .await;
    }

    // moto's credential report always says it was generated in 2015: with the default
    // report_max_age_secs bulk treats it as stale and lists every user's keys; with a very large
    // one it trusts the report's key slots, as it does a report IAM has just generated.
    let mut results = Vec::new();
    for (strategy, extra) in [
        ("per-user", ""),
        ("bulk", "report_max_age_secs = 2000000000\n"),
        ("bulk", ""),
    ] {
        let (ws, records) = sync_with_strategy(&moto.endpoint, strategy, extra).await;
        results.push((records, calls_of_last_run(&ws)));
    }
    let (per_user, per_user_calls) = &results[0];
    let (bulk, bulk_calls) = &results[1];
    let (bulk_stale, bulk_stale_calls) = &results[2];
    assert_eq!(per_user.len(), 35);
    assert_eq!(bulk, per_user, "both strategies give the same records");
    assert_eq!(
        bulk_stale, per_user,
        "a stale report changes the calls, not the records"
    );

    let gina = bulk.iter().find(|r| r["user"]["name"] == "gina").unwrap();
    assert_eq!(gina["user"]["has_mfa"], true);
    assert_eq!(
        gina["unmapped"]["user"]["mfa_devices"][0]["serial"],
        "GAHT12345678"
    );

    // U = 35 users under the prefix; users with keys: alice, bob, ci-deploy, svc-00/03/…/27 (10) = 13;
    // one hardware-MFA user. Bound: 2·⌈U/1000⌉ + 5 + users with keys (+ ListMFADevices for the
    // non-virtual MFA user).
    let users_with_keys = 13;
    let total: u64 = bulk_calls.values().sum();
    assert!(total <= 2 + 5 + users_with_keys + 1, "{bulk_calls:?}");
    assert_eq!(bulk_calls.get("ListAccessKeys"), Some(&users_with_keys));
    assert_eq!(bulk_calls.get("ListMFADevices"), Some(&1));
    assert_eq!(bulk_calls.get("GetLoginProfile"), None);
    // A report older than report_max_age_secs vouches for nothing that changed since it was made:
    // every user's keys and console access are asked, and MFA for every user without a virtual
    // device (35 users, alice and bob have virtual devices).
    assert_eq!(bulk_stale_calls.get("ListAccessKeys"), Some(&35));
    assert_eq!(bulk_stale_calls.get("GetLoginProfile"), Some(&35));
    assert_eq!(bulk_stale_calls.get("ListMFADevices"), Some(&33));
    let per_user_total: u64 = per_user_calls.values().sum();
    assert!(per_user_total >= 5 * 35, "{per_user_calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_per_user_for_small_prefixes() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/engineering/"));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("ok (per-user)"), "{}", out.stderr);
}

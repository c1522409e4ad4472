//! Change events: every change reaches an `events = ["changes"]` sink as an OCSF 3001 Account
//! Change event, deletions included, in order, at least once, with a `metadata.uid` that is the
//! same on every re-send; an outage of two syncs loses nothing, even when a user changes back and
//! forth meanwhile.

use serde_json::Value;

use crate::fixtures::{aws_section, retag};
use crate::support::cli::Workspace;
use crate::support::moto::{Moto, Seed, add_mfa, seed_user};
use crate::support::receiver::Receiver;
use crate::support::schema::assert_valid;

/// Every request's records, in arrival order, only those the receiver acknowledged.
fn delivered(rx: &Receiver) -> Vec<Value> {
    rx.received()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status))
        .flat_map(|r| r.records)
        .collect()
}

fn activities(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["user"]["name"].as_str().unwrap_or("?").to_string(),
                e["activity_name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_an_event_and_an_outage_loses_none() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    for name in ["alice", "bob"] {
        seed_user(
            &iam,
            &Seed {
                name,
                path: "/engineering/",
                console: name == "alice",
                ..Default::default()
            },
        )
        .await;
    }
    let serial = add_mfa(&iam, "bob").await;
    let rx = Receiver::start().await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"soc\"\nurl = \"{}\"\nevents = [\"changes\"]\n[[sinks]]\nname = \"both\"\ntype = \"file\"\npath = {:?}\nevents = [\"inventory\", \"changes\"]\n",
        aws_section(&moto.endpoint, "/engineering/"),
        rx.url,
        ws.path("both.ndjson").display().to_string()
    ));

    // First sync: two Create events (a sink added now starts with this run's changes).
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = delivered(&rx);
    assert_eq!(
        activities(&first),
        pairs(&[("alice", "Create"), ("bob", "Create")])
    );
    assert!(
        out.stderr
            .contains("events sent 2, acknowledged 2, changes pending 0"),
        "{}",
        out.stderr
    );
    for r in rx.received() {
        assert_eq!(r.headers["x-iam-inventory-change"], "event");
    }

    // A day of changes: MFA off and on, a key created, deactivated and removed, a group, a tag, a
    // new user, a deleted user.
    rx.clear();
    iam.deactivate_mfa_device()
        .user_name("bob")
        .serial_number(&serial)
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("alice")
        .send()
        .await
        .unwrap()
        .access_key()
        .unwrap()
        .access_key_id()
        .to_string();
    let _ = iam.create_group().group_name("auditors").send().await;
    iam.add_user_to_group()
        .group_name("auditors")
        .user_name("alice")
        .send()
        .await
        .unwrap();
    retag(&iam, "alice", "security").await;
    seed_user(
        &iam,
        &Seed {
            name: "carol",
            path: "/engineering/",
            ..Default::default()
        },
    )
    .await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let day = delivered(&rx);
    let mut got = activities(&day);
    got.sort();
    assert_eq!(
        got,
        pairs(&[
            ("alice", "Access Key Created"),
            ("alice", "Group Membership Added"),
            ("alice", "Tags Changed"),
            ("bob", "MFA Factor Disable"),
            ("carol", "Create"),
        ])
    );
    let key_event = day
        .iter()
        .find(|e| e["activity_name"] == "Access Key Created")
        .unwrap();
    assert_eq!(
        key_event["severity"], "Medium",
        "a new key on a console user"
    );
    assert!(
        key_event["message"]
            .as_str()
            .unwrap()
            .contains(&format!("alice got a new access key {key}")),
        "{key_event}"
    );
    let mfa = day
        .iter()
        .find(|e| e["activity_name"] == "MFA Factor Disable")
        .unwrap();
    assert_eq!(mfa["activity_id"], 11);
    assert_eq!(mfa["user_result"]["has_mfa"], false);
    assert_eq!(mfa["cloud"]["account"]["uid"], "123456789012");
    assert!(
        mfa["unmapped"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "user.has_mfa" && c["old"] == true && c["new"] == false)
    );

    // Down for two syncs while bob's MFA goes back on, alice's key is deactivated then removed,
    // and carol is deleted: every one of those events arrives afterwards, in order.
    rx.clear();
    rx.set_default(503);
    iam.enable_mfa_device()
        .user_name("bob")
        .serial_number(&serial)
        .authentication_code1("123456")
        .authentication_code2("654321")
        .send()
        .await
        .unwrap();
    iam.update_access_key()
        .user_name("alice")
        .access_key_id(&key)
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .unwrap();
    let out = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__SINKS__0__MAX_RETRIES", "0")],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("changes pending 2"), "{}", out.stderr);
    iam.delete_access_key()
        .user_name("alice")
        .access_key_id(&key)
        .send()
        .await
        .unwrap();
    iam.delete_user().user_name("carol").send().await.unwrap();
    let out = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__SINKS__0__MAX_RETRIES", "0")],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("changes pending 4"), "{}", out.stderr);
    rx.set_default(200);
    rx.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let back = delivered(&rx);
    assert_eq!(
        activities(&back),
        pairs(&[
            ("alice", "Access Key Deactivated"),
            ("bob", "MFA Factor Enable"),
            ("alice", "Access Key Deleted"),
            ("carol", "Delete"),
        ])
    );
    let delete = &back[3];
    assert_eq!(delete["activity_id"], 6);
    assert!(
        delete["user"]["uid_alt"].is_string()
            && delete["user"]["ldap_person"]["created_time"].is_i64(),
        "a Delete event carries the user as last known: {delete}"
    );

    let all: Vec<Value> = first.iter().chain(&day).chain(&back).cloned().collect();
    all.iter().for_each(assert_valid);

    // A forced re-send (the sink's position moved back) carries the same metadata.uid for every
    // event, so a SIEM can drop the duplicates.
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    conn.execute(
        "UPDATE sink_event_cursors SET change_id = 0 WHERE sink = 'soc'",
        [],
    )
    .unwrap();
    drop(conn);
    rx.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let resent = delivered(&rx);
    let ids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| e["metadata"]["uid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&resent), ids(&all));
    assert_eq!(resent, all, "the same events, byte for byte in content");

    // `changes --format ocsf` prints the same events.
    let printed = ws
        .run(&cfg, &["changes", "--format", "ocsf"], &[])
        .await
        .json_lines();
    assert_eq!(ids(&printed), ids(&all));

    // The file sink takes both streams: 5003 records and 3001 events, told apart by class_uid.
    let text = std::fs::read_to_string(ws.path("both.ndjson")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.iter().for_each(assert_valid);
    let events = lines.iter().filter(|l| l["class_uid"] == 3001).count();
    let records = lines.iter().filter(|l| l["class_uid"] == 5003).count();
    assert_eq!(events, all.len());
    assert!(records >= 3, "{records}");
}

/// A receiver that refuses one event on its own does not hold back the ones after it: the event is
/// named and skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_named_and_skipped() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    for name in ["dave", "erin"] {
        seed_user(
            &iam,
            &Seed {
                name,
                path: "/",
                ..Default::default()
            },
        )
        .await;
    }
    let rx = Receiver::start().await;
    rx.poison(&["dave"]);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"soc\"\nurl = \"{}\"\nevents = [\"changes\"]\n",
        aws_section(&moto.endpoint, "/"),
        rx.url
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("rejected dave ("), "{}", out.stderr);
    assert!(out.stderr.contains("changes pending 0"), "{}", out.stderr);
    assert_eq!(activities(&delivered(&rx)), pairs(&[("erin", "Create")]));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "nothing left to send: {}", out.stderr);
}

/// Retention prunes old change rows after each sync; an events sink that was behind for longer than
/// the retention loses those events, and the summary says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_and_names_the_events_a_sink_never_got() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    let rx = Receiver::start().await;
    rx.set_default(503);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"soc\"\nurl = \"{}\"\nevents = [\"changes\"]\nmax_retries = 0\n[store]\npath = {:?}\nchanges_retention_days = 7\n",
        aws_section(&moto.endpoint, "/"),
        rx.url,
        ws.store().display().to_string()
    ));
    // Two changes while the sink is down.
    for name in ["frank", "hank"] {
        seed_user(
            &iam,
            &Seed {
                name,
                path: "/",
                ..Default::default()
            },
        )
        .await;
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 2, "{}", out.stderr);
    }
    // Ten days pass with the sink down.
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    conn.execute("UPDATE changes SET at = at - 10 * 86400000", [])
        .unwrap();
    drop(conn);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains(
            "sink soc: 1 change events were older than store.changes_retention_days and pruned before it delivered them"
        ),
        "{}",
        out.stderr
    );
    // The newest row is kept whatever its age: ids must keep growing past the sinks' positions.
    let left = ws
        .run(&cfg, &["changes", "--format", "json"], &[])
        .await
        .json_lines();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["user"], "hank");
    rx.set_default(200);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(activities(&delivered(&rx)), pairs(&[("hank", "Create")]));
}

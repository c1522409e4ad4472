//! Incremental refresh (`[events_source]`): the daemon refreshes the users that IAM events name,
//! between full syncs, and delivers the change with who made it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{get, wait_until};
use crate::fixtures::{aws_section, seed_standard};
use crate::support::cli::Workspace;
use crate::support::free_port;
use iam_inventory::clock::now_ms;

use crate::support::moto::{
    CALLER_ACCOUNT, Moto, delete_user, eventbridge_message, events_queue, queue_depth, trail_record,
};
use crate::support::proxy::{Proxy, Rules};
use crate::support::receiver::Receiver;
use crate::support::schema::assert_valid;

fn now_rfc3339() -> String {
    iam_inventory::clock::rfc3339(now_ms())
}

/// Every record and event the receiver got, in order.
fn received(rx: &Receiver) -> Vec<Value> {
    rx.received()
        .into_iter()
        .filter(|r| r.status / 100 == 2)
        .flat_map(|r| r.records)
        .collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Puts on the queue what EventBridge would for an IAM call by Admin/jane, now.
async fn announce(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    account: &str,
    event: &str,
    id: &str,
    params: Value,
) {
    let record = trail_record(account, event, id, &now_rfc3339(), params);
    send(sqs, url, eventbridge_message(&record)).await;
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: String) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("send message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_event_refreshes_one_user_and_names_who_did_it() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let sqs = moto.sqs().await;
    let (queue, dlq) = events_queue(&sqs, "iam-inventory-events", 2, 1).await;
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let rx = Receiver::start().await;
    let ws = Workspace::new();
    let port = free_port();
    let cfg = ws.config(&format!(
        "{}[schedule]\ncron = \"0 0 2 1 1 *\"\nrun_on_start = true\n[server]\nlisten = \"127.0.0.1:{port}\"\n[events_source]\ntype = \"sqs\"\nqueue_url = \"{queue}\"\nwait_secs = 1\ncoalesce_ms = 300\n[[sinks]]\nname = \"siem\"\nurl = \"{}\"\nevents = [\"inventory\", \"changes\"]\n",
        aws_section(&proxy.endpoint, "/engineering/"),
        rx.url
    ));
    let mut child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let synced = wait_until(Duration::from_secs(60), || async {
        let (_, text) = get(&format!("{base}/metrics")).await;
        text.contains("iam_inventory_syncs_total{status=\"ok\"} 1")
    })
    .await;
    assert!(synced, "the first sync did not finish");
    let first = received(&rx).len();
    assert!(
        first >= 4,
        "the first sync delivered the inventory ({first})"
    );
    let calls_before = proxy.calls();

    // alice gets a second access key; CloudTrail's record of it reaches the queue.
    iam.create_access_key()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let record = trail_record(
        CALLER_ACCOUNT,
        "CreateAccessKey",
        "11111111-aaaa-bbbb-cccc-000000000001",
        &now_rfc3339(),
        json!({"userName": "alice"}),
    );
    // A burst: the same event twice and a tag change of alice a moment later are one refresh.
    send(&sqs, &queue, eventbridge_message(&record)).await;
    send(&sqs, &queue, eventbridge_message(&record)).await;
    let mut tag = trail_record(
        CALLER_ACCOUNT,
        "TagUser",
        "11111111-aaaa-bbbb-cccc-000000000002",
        &now_rfc3339(),
        json!({"userName": "alice", "tags": [{"key": "x", "value": "y"}]}),
    );
    tag["readOnly"] = json!(false);
    send(&sqs, &queue, eventbridge_message(&tag)).await;

    let updated = wait_until(Duration::from_secs(30), || async {
        received(&rx).iter().skip(first).any(|r| {
            r["class_uid"] == 3001 && r["user"]["name"] == "alice" && r.get("actor").is_some()
        })
    })
    .await;
    assert!(
        updated,
        "no change event for alice: {:?}",
        received(&rx).iter().skip(first).collect::<Vec<_>>()
    );
    let new: Vec<Value> = received(&rx).into_iter().skip(first).collect();
    for r in &new {
        assert_valid(r);
    }
    let inventory: Vec<&Value> = new.iter().filter(|r| r["class_uid"] == 5003).collect();
    assert_eq!(
        inventory.len(),
        1,
        "only alice's record is sent again: {inventory:?}"
    );
    assert_eq!(inventory[0]["user"]["name"], "alice");
    let keys = inventory[0]["unmapped"]["user"]["access_keys"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(keys, 2, "{}", inventory[0]);
    let event = new
        .iter()
        .find(|r| r["class_uid"] == 3001 && r["activity_name"] == "Access Key Created")
        .unwrap_or_else(|| panic!("{new:?}"));
    assert_eq!(
        event["actor"]["user"]["uid"],
        "arn:aws:sts::123456789012:assumed-role/Admin/jane"
    );
    assert_eq!(
        event["actor"]["session"]["credential_uid"],
        "ASIAEXAMPLEJANE00001"
    );
    assert_eq!(event["actor"]["user"]["name"], "jane");
    // The burst was one refresh: the latest call is credited, the others are listed.
    assert_eq!(event["api"]["operation"], "TagUser");
    assert_eq!(
        event["unmapped"]["cloudtrail_events"],
        json!(["CreateAccessKey", "TagUser"])
    );

    // Only alice's calls: no listing, no report, no other user.
    let calls = proxy.calls();
    let delta =
        |op: &str| calls.get(op).copied().unwrap_or(0) - calls_before.get(op).copied().unwrap_or(0);
    for op in [
        "ListUsers",
        "GetAccountAuthorizationDetails",
        "GenerateCredentialReport",
    ] {
        assert_eq!(delta(op), 0, "{op}: {calls:?}");
    }
    assert_eq!(delta("GetUser"), 1, "one refresh of one user: {calls:?}");
    assert_eq!(delta("ListAccessKeys"), 1, "{calls:?}");
    let iam_calls: u64 = calls
        .iter()
        .filter(|(op, _)| {
            !["ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes"].contains(&op.as_str())
        })
        .map(|(op, n)| n - calls_before.get(op).copied().unwrap_or(0))
        .sum();
    assert!(iam_calls <= 15, "calls for one user: {iam_calls} {calls:?}");

    // The change log says who did it.
    let out = ws.run(&cfg, &["changes", "--user", "alice"], &[]).await;
    assert!(
        out.stdout.contains(
            "by arn:aws:sts::123456789012:assumed-role/Admin/jane (CreateAccessKey, TagUser)"
        ),
        "{}",
        out.stdout
    );

    // Deleted only when IAM confirms: a DeleteUser event for bob, who still exists, deletes
    // nothing; carol's, after she is gone, deletes her.
    let seen = received(&rx).len();
    announce(
        &sqs,
        &queue,
        CALLER_ACCOUNT,
        "DeleteUser",
        "e-del-bob",
        json!({"userName": "bob"}),
    )
    .await;
    delete_user(&iam, "carol").await;
    announce(
        &sqs,
        &queue,
        CALLER_ACCOUNT,
        "DeleteUser",
        "e-del-carol",
        json!({"userName": "carol"}),
    )
    .await;
    // Not ours: another account, and a message that is not an event at all.
    announce(
        &sqs,
        &queue,
        "999999999999",
        "CreateUser",
        "e-other",
        json!({"userName": "zed"}),
    )
    .await;
    send(&sqs, &queue, "this is not an EventBridge event".into()).await;
    let deleted = wait_until(Duration::from_secs(30), || async {
        received(&rx)
            .iter()
            .skip(seen)
            .any(|r| r["class_uid"] == 3001 && r["activity_name"] == "Delete")
    })
    .await;
    assert!(deleted, "no Delete event for carol");
    let after: Vec<Value> = received(&rx).into_iter().skip(seen).collect();
    let deletes: Vec<&Value> = after
        .iter()
        .filter(|r| r["activity_name"] == "Delete")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0]["user"]["name"], "carol");
    let export = ws.run(&cfg, &["export"], &[]).await;
    let names: Vec<String> = export
        .json_lines()
        .iter()
        .map(|r| r["user"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        names.contains(&"bob".to_string()) && !names.contains(&"carol".to_string()),
        "{names:?}"
    );

    // The malformed message goes to the dead-letter queue after maxReceiveCount; every other
    // message was deleted once its refresh was stored.
    let redriven = wait_until(Duration::from_secs(30), || async {
        queue_depth(&sqs, &dlq).await == 1 && queue_depth(&sqs, &queue).await == 0
    })
    .await;
    assert!(
        redriven,
        "queue {} / DLQ {}",
        queue_depth(&sqs, &queue).await,
        queue_depth(&sqs, &dlq).await
    );
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert!(
        metric(
            &text,
            "iam_inventory_iam_events_total{outcome=\"malformed\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "iam_inventory_iam_events_total{outcome=\"ignored: account not collected\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        metric(&text, "iam_inventory_users_refreshed_total") >= 3.0,
        "{text}"
    );
    assert!(
        metric(&text, "iam_inventory_refresh_lag_seconds_count") >= 2.0,
        "{text}"
    );
    let (status, _) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 200, "the daemon is healthy");

    crate::daemon::sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Starts the daemon with an SQS events source and waits for its first sync; returns the child,
/// the metrics base URL and how many records the receiver had by then.
async fn daemon_with_queue(
    ws: &Workspace,
    endpoint: &str,
    queue: &str,
    rx: &Receiver,
) -> (tokio::process::Child, std::path::PathBuf, usize) {
    let port = free_port();
    let cfg = ws.config(&format!(
        "{}[schedule]\ncron = \"0 0 2 1 1 *\"\nrun_on_start = true\n[server]\nlisten = \"127.0.0.1:{port}\"\n[events_source]\ntype = \"sqs\"\nqueue_url = \"{queue}\"\nwait_secs = 1\ncoalesce_ms = 200\n[[sinks]]\nname = \"siem\"\nurl = \"{}\"\nevents = [\"inventory\", \"changes\"]\n",
        aws_section(endpoint, "/"),
        rx.url
    ));
    let child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let synced = wait_until(Duration::from_secs(60), || async {
        let (_, text) = get(&format!("{base}/metrics")).await;
        text.contains("iam_inventory_syncs_total{status=\"ok\"} 1")
    })
    .await;
    assert!(synced, "the first sync did not finish");
    let first = received(rx).len();
    (child, cfg, first)
}

/// Waits until the receiver has change events after `from` for every user in `names`, and
/// returns the events after `from`.
async fn events_for(rx: &Receiver, from: usize, names: &[&str]) -> Vec<Value> {
    let ok = wait_until(Duration::from_secs(30), || async {
        let got = received(rx);
        names.iter().all(|n| {
            got.iter()
                .skip(from)
                .any(|r| r["class_uid"] == 3001 && r["user"]["name"] == *n)
        })
    })
    .await;
    let got: Vec<Value> = received(rx)
        .into_iter()
        .skip(from)
        .filter(|r| r["class_uid"] == 3001)
        .collect();
    assert!(ok, "no events for {names:?}: {got:?}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_policy_changes_refresh_the_members_and_a_rename_is_a_delete_and_a_create() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let policy = iam
        .create_policy()
        .policy_name("deploy")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    let policy_arn = policy.policy().unwrap().arn().unwrap().to_string();
    let sqs = moto.sqs().await;
    let (queue, _) = events_queue(&sqs, "iam-events-groups", 3, 1).await;
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let rx = Receiver::start().await;
    let ws = Workspace::new();
    let (mut child, _cfg, first) = daemon_with_queue(&ws, &proxy.endpoint, &queue, &rx).await;

    // A policy attached to a group: its members (bob, carol) change, alice does not.
    iam.attach_group_policy()
        .group_name("developers")
        .policy_arn(&policy_arn)
        .send()
        .await
        .unwrap();
    let before = proxy.calls();
    announce(
        &sqs,
        &queue,
        CALLER_ACCOUNT,
        "AttachGroupPolicy",
        "e-g1",
        json!({"groupName": "developers", "policyArn": policy_arn}),
    )
    .await;
    let got = events_for(&rx, first, &["bob", "carol"]).await;
    let mut users: Vec<&str> = got
        .iter()
        .map(|e| e["user"]["name"].as_str().unwrap())
        .collect();
    users.sort();
    users.dedup();
    assert_eq!(users, ["bob", "carol"], "{got:?}");
    for e in &got {
        assert_valid(e);
        assert_eq!(e["activity_id"], 7, "Attach Policy: {e}");
        assert_eq!(e["policies"][0]["name"], "deploy", "{e}");
        assert_eq!(e["api"]["operation"], "AttachGroupPolicy");
    }
    let calls = proxy.calls();
    let delta =
        |op: &str| calls.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    assert_eq!(delta("GetGroup"), 1, "{calls:?}");
    assert_eq!(delta("GetUser"), 2, "two members: {calls:?}");
    assert_eq!(delta("ListUsers"), 0, "{calls:?}");

    // The policy's new default version allows everything: every user it reaches (through the
    // group) becomes an administrator.
    iam.create_policy_version()
        .policy_arn(&policy_arn)
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    let seen = received(&rx).len();
    announce(
        &sqs,
        &queue,
        CALLER_ACCOUNT,
        "CreatePolicyVersion",
        "e-p1",
        json!({"policyArn": policy_arn, "setAsDefault": true}),
    )
    .await;
    let got = events_for(&rx, seen, &["bob", "carol"]).await;
    for n in ["bob", "carol"] {
        assert!(
            got.iter()
                .any(|e| e["user"]["name"] == n
                    && e["activity_name"] == "Administrator Access Granted"),
            "{n}: {got:?}"
        );
    }

    // A rename gives the user a new ARN: the old one is deleted, the new one created.
    iam.update_user()
        .user_name("ci-deploy")
        .new_user_name("ci-release")
        .send()
        .await
        .unwrap();
    let seen = received(&rx).len();
    announce(
        &sqs,
        &queue,
        CALLER_ACCOUNT,
        "UpdateUser",
        "e-u1",
        json!({"userName": "ci-deploy", "newUserName": "ci-release"}),
    )
    .await;
    let got = events_for(&rx, seen, &["ci-deploy", "ci-release"]).await;
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|e| {
            (
                e["user"]["name"].as_str().unwrap().to_string(),
                e["activity_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("ci-deploy".into(), "Delete".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("ci-release".into(), "Create".into())),
        "{kinds:?}"
    );

    crate::daemon::sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudtrail_polling_refreshes_from_a_stored_cursor_and_resumes_after_a_restart() {
    use crate::support::cloudtrail::{CloudTrail, TrailEvent};
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let trail = CloudTrail::new();
    // The IAM calls of the assumed role Admin, session jane, as CloudTrail records them.
    let by_jane = |event: &str, params: Value| {
        TrailEvent::by_role(CALLER_ACCOUNT, "Admin", "jane", event, params)
    };
    // Two events a page, forcing NextToken paging; CloudTrail's own limit of 2 requests a second.
    trail.set_page_size(2);
    trail.set_rate_limit(Some(2.0));
    proxy.attach_cloudtrail(&trail);
    // An hour old: before the first poll's window (now − overlap_secs), never refreshed.
    trail.record(by_jane("TagUser", json!({"userName": "alice"})).at_ms(now_ms() - 3_600_000));
    let rx = Receiver::start().await;
    let ws = Workspace::new();
    let port = free_port();
    let body = |run_on_start: bool| {
        format!(
            "{}[schedule]\ncron = \"0 0 2 1 1 *\"\nrun_on_start = {run_on_start}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[events_source]\ntype = \"cloudtrail\"\npoll_secs = 1\noverlap_secs = 600\n[[sinks]]\nname = \"siem\"\nurl = \"{}\"\nevents = [\"inventory\", \"changes\"]\n",
            aws_section(&proxy.endpoint, "/engineering/"),
            rx.url
        )
    };
    let cfg = ws.config(&body(true));
    let mut child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let synced = wait_until(Duration::from_secs(60), || async {
        let (_, text) = get(&format!("{base}/metrics")).await;
        text.contains("iam_inventory_syncs_total{status=\"ok\"} 1")
    })
    .await;
    assert!(synced, "the first sync did not finish");
    let first = received(&rx).len();

    // bob gets a tag; its record, a read-only call and two writes about nobody in the prefix
    // (more than one page) reach CloudTrail.
    iam.tag_user()
        .user_name("bob")
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("on-call")
                .value("yes")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    trail.record(by_jane("GetUser", json!({"userName": "bob"})));
    trail.record(by_jane("CreateRole", json!({"roleName": "x"})));
    trail.record(by_jane(
        "TagUser",
        json!({"userName": "bob", "tags": [{"key": "on-call", "value": "yes"}]}),
    ));
    let got = events_for(&rx, first, &["bob"]).await;
    assert!(
        got.iter().all(|e| e["user"]["name"] == "bob"),
        "only bob changed (alice's old event is outside the window): {got:?}"
    );
    let tagged = got
        .iter()
        .find(|e| e["activity_name"] == "Tags Changed")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_valid(tagged);
    assert_eq!(
        tagged["actor"]["user"]["uid"],
        "arn:aws:sts::123456789012:assumed-role/Admin/jane"
    );
    assert_eq!(
        trail.throttled(),
        0,
        "LookupEvents paced at 2 requests a second"
    );
    let asked = trail.last_request().unwrap();
    assert_eq!(
        asked["LookupAttributes"],
        json!([{"AttributeKey": "EventSource", "AttributeValue": "iam.amazonaws.com"}])
    );

    // Stop; while down, carol gets a key and CloudTrail records it. A restart (no sync at start)
    // picks it up from the stored cursor, and bob's event is not acted on again.
    crate::daemon::sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let cursor: i64 = rusqlite::Connection::open(ws.store())
        .unwrap()
        .query_row(
            "SELECT position FROM event_cursors WHERE source = 'cloudtrail:123456789012'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        cursor > now_ms() - 60_000,
        "the cursor was stored: {cursor}"
    );
    iam.create_access_key()
        .user_name("carol")
        .send()
        .await
        .unwrap();
    trail.record(TrailEvent::by_user(
        CALLER_ACCOUNT,
        "admin-bob",
        "CreateAccessKey",
        json!({"userName": "carol"}),
    ));
    let before = proxy.calls();
    let seen = received(&rx).len();
    let cfg = ws.config(&body(false));
    let mut child = ws.command(&cfg, &["run"], &[]).spawn().unwrap();
    let got = events_for(&rx, seen, &["carol"]).await;
    assert!(got.iter().all(|e| e["user"]["name"] == "carol"), "{got:?}");
    let created = got
        .iter()
        .find(|e| e["activity_name"] == "Access Key Created")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(created["actor"]["user"]["type"], "User");
    assert_eq!(created["actor"]["user"]["name"], "admin-bob");
    // Let a few more polls pass: nothing already done is done again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = proxy.calls();
    let delta =
        |op: &str| calls.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    assert_eq!(
        delta("GetUser"),
        1,
        "only carol was refreshed after the restart: {calls:?}"
    );
    assert!(delta("LookupEvents") >= 2, "{calls:?}");
    crate::daemon::sigterm(child.id().unwrap());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

//! Incremental refresh (`[events_source]`): the daemon refreshes the users that IAM events name,
//! between full syncs, and delivers the change with who made it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::{get, wait_until};
use crate::fixtures::{aws_section, seed_standard};
use crate::support::cli::Workspace;
use crate::support::free_port;
use crate::support::moto::{
    CALLER_ACCOUNT, Moto, eventbridge_message, events_queue, queue_depth, trail_record,
};
use crate::support::proxy::{Proxy, Rules};
use crate::support::receiver::Receiver;
use crate::support::schema::assert_valid;

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
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
    send(
        &sqs,
        &queue,
        eventbridge_message(&trail_record(
            CALLER_ACCOUNT,
            "DeleteUser",
            "e-del-bob",
            &now_rfc3339(),
            json!({"userName": "bob"}),
        )),
    )
    .await;
    for g in iam
        .list_groups_for_user()
        .user_name("carol")
        .send()
        .await
        .unwrap()
        .groups()
    {
        iam.remove_user_from_group()
            .group_name(g.group_name())
            .user_name("carol")
            .send()
            .await
            .unwrap();
    }
    iam.delete_login_profile()
        .user_name("carol")
        .send()
        .await
        .unwrap();
    iam.delete_user().user_name("carol").send().await.unwrap();
    send(
        &sqs,
        &queue,
        eventbridge_message(&trail_record(
            CALLER_ACCOUNT,
            "DeleteUser",
            "e-del-carol",
            &now_rfc3339(),
            json!({"userName": "carol"}),
        )),
    )
    .await;
    // Not ours: another account, and a message that is not an event at all.
    send(
        &sqs,
        &queue,
        eventbridge_message(&trail_record(
            "999999999999",
            "CreateUser",
            "e-other",
            &now_rfc3339(),
            json!({"userName": "zed"}),
        )),
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

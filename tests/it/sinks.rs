//! HTTP sinks against real receivers on 127.0.0.1: modes, retries, outages, and nothing lost.

use crate::fixtures::{ENGINEERING, aws_section, retag, seed_standard};
use crate::support::cli::{Workspace, last_line};
use crate::support::moto::Moto;
use crate::support::receiver::{Receiver, Reply};
use crate::support::schema::assert_valid;

fn sink(name: &str, url: &str, mode: &str, extra: &str) -> String {
    let retries = if extra.contains("max_retries") {
        ""
    } else {
        "max_retries = 2\n"
    };
    format!(
        "[[sinks]]\nname = \"{name}\"\nurl = \"{url}\"\nmode = \"{mode}\"\ntimeout_secs = 5\n{retries}{extra}\n"
    )
}

fn arns(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .map(|n| {
            let path = if *n == "ci-deploy" {
                "engineering/automation"
            } else {
                "engineering"
            };
            format!("arn:aws:iam::123456789012:user/{path}/{n}")
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_receives_exactly_its_records_across_create_update_and_no_change() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let (cu, co, uo) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let ws = Workspace::new();
    let sinks = |cu_mode: &str| {
        format!(
            "{}{}{}{}",
            aws_section(&moto.endpoint, "/engineering/"),
            sink("cu", &cu.url, cu_mode, "batch_size = 3"),
            sink(
                "co",
                &co.url,
                "create-only",
                "format = \"json\"\ncompression = \"gzip\""
            ),
            sink("uo", &uo.url, "update-only", ""),
        )
    };
    let cfg = ws.config(&sinks("create-update"));

    // 1. Everything is a create.
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout, "",
        "with sinks configured nothing goes to stdout"
    );
    assert_eq!(cu.acknowledged_uids(), arns(ENGINEERING));
    assert_eq!(co.acknowledged_uids(), arns(ENGINEERING));
    assert!(
        uo.received().is_empty(),
        "a brand-new update-only sink sends nothing"
    );
    let cu_reqs = cu.received();
    assert_eq!(cu_reqs.len(), 2, "4 records in batches of 3");
    for r in &cu_reqs {
        assert_eq!(r.headers["x-iam-inventory-change"], "create");
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert!(!r.headers["idempotency-key"].is_empty());
        r.records.iter().for_each(assert_valid);
    }
    assert_eq!(co.received()[0].headers["content-encoding"], "gzip");
    assert_eq!(co.received()[0].headers["content-type"], "application/json");
    assert!(
        out.stderr
            .contains("sink cu (create-update): sent 4, acknowledged 4, pending 0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sink uo (update-only): sent 0, acknowledged 0, pending 0"),
        "{}",
        out.stderr
    );

    // 2. One user changes: only create-update hears of it, as an update with the new content.
    for r in [&cu, &co, &uo] {
        r.clear();
    }
    retag(&iam, "alice", "security").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(cu.acknowledged_uids(), arns(&["alice"]));
    assert_eq!(cu.received()[0].headers["x-iam-inventory-change"], "update");
    let tags = &cu.received()[0].records[0]["user"]["ldap_person"]["tags"];
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .any(|t| t["value"] == "security")
    );
    assert!(co.received().is_empty() && uo.received().is_empty());

    // 3. Nothing changed: nothing sent anywhere.
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0);
    assert_eq!(cu.received().len(), 1);
    assert!(co.received().is_empty() && uo.received().is_empty());

    // 4. The same sink switched to update-only keeps its acknowledged state (keyed by name).
    let cfg = ws.config(&sinks("update-only"));
    retag(&iam, "bob", "security").await;
    cu.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(cu.acknowledged_uids(), arns(&["bob"]));
    assert!(uo.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_for_a_whole_sync_gets_exactly_the_missing_records_next_time() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let healthy = Receiver::start().await;
    let down = Receiver::start().await;
    down.set_default(503);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        sink("healthy", &healthy.url, "create-update", ""),
        sink("flaky", &down.url, "create-update", "max_retries = 1"),
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(
        out.code, 2,
        "a sink left with pending records is a partial sync: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sink flaky (create-update): sent 4, acknowledged 0, pending 4"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("HTTP 503"), "{}", out.stderr);
    assert_eq!(
        healthy.acknowledged_uids(),
        arns(ENGINEERING),
        "the other sink is not held back"
    );
    assert_eq!(
        down.received().len(),
        2,
        "first attempt + 1 retry, then the sink is left for next time"
    );

    // While it was down, alice changed: the next delivery carries her latest content.
    retag(&iam, "alice", "security").await;
    down.clear();
    down.set_default(200);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(down.acknowledged_uids(), arns(ENGINEERING));
    let alice = down
        .received()
        .iter()
        .flat_map(|r| r.records.clone())
        .find(|r| r["user"]["name"] == "alice")
        .unwrap();
    assert!(
        alice["user"]["ldap_person"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["value"] == "security")
    );
    // All 4 are creates for this sink (it never acknowledged them).
    assert!(
        down.received()
            .iter()
            .all(|r| r.headers["x-iam-inventory-change"] == "create")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_delivered_in_the_same_run_with_the_same_idempotency_key() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let rx = Receiver::start().await;
    rx.script([Reply::RetryAfter(429, 1)]);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        sink("siem", &rx.url, "create-update", "")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let reqs = rx.received();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].status, 429);
    assert_eq!(
        reqs[0].headers["idempotency-key"],
        reqs[1].headers["idempotency-key"]
    );
    assert_eq!(rx.acknowledged_uids(), arns(ENGINEERING));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_mid_delivery_loses_nothing() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let first = Receiver::start().await;
    first.script([Reply::Status(200), Reply::Die]);
    let ws = Workspace::new();
    let with_url = |url: &str| {
        format!(
            "{}{}",
            aws_section(&moto.endpoint, "/engineering/"),
            sink(
                "siem",
                url,
                "create-update",
                "batch_size = 1\nmax_retries = 1"
            )
        )
    };
    let cfg = ws.config(&with_url(&first.url));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(first.is_dead());
    let got_first = first.acknowledged_uids();
    assert_eq!(got_first.len(), 1);
    assert!(
        out.stderr.contains("acknowledged 1, pending 3"),
        "{}",
        out.stderr
    );

    // The sink comes back (at a new address); the next sync sends exactly what it never acknowledged.
    let second = Receiver::start().await;
    let cfg = ws.config(&with_url(&second.url));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got_second = second.acknowledged_uids();
    assert_eq!(got_second.len(), 3);
    let mut all = [got_first, got_second].concat();
    all.sort();
    assert_eq!(all, arns(ENGINEERING));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_secrets_never_reach_logs_or_the_store_and_rejections_are_not_retried() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let rx = Receiver::start().await;
    rx.set_default(401);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        sink(
            "siem",
            &rx.url,
            "create-update",
            "headers = { Authorization = \"Bearer ${SIEM_TOKEN}\" }"
        )
    ));
    let env = [("SIEM_TOKEN", "hunter2-token"), ("RUST_LOG", "trace")];
    let out = ws.run(&cfg, &["sync"], &env).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        rx.received().len(),
        1,
        "a 401 is a rejection: not retried within the run"
    );
    assert_eq!(
        rx.received()[0].headers["authorization"],
        "Bearer hunter2-token",
        "the header is sent"
    );
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "secret in logs");
    let db = std::fs::read(ws.store()).unwrap();
    let wal = std::fs::read(ws.path("store.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(7).any(|w| w == b"hunter2"),
            "secret in the store"
        );
    }
    let json_logs = ws.run(&cfg, &["--log-format", "json", "sync"], &env).await;
    assert!(!json_logs.stderr.contains("hunter2"));
    for line in json_logs.stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("--log-format json: a stderr line is not JSON ({e}): {line}")
        });
        assert!(event.get("level").is_some(), "{line}");
    }
    assert!(
        json_logs.stderr.contains("\"sync summary\""),
        "{}",
        json_logs.stderr
    );
    let missing = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(missing.code, 1);
    assert!(last_line(&missing.stderr).contains("SIEM_TOKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_acknowledges_nothing() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    // The redirect target answers 200 to anything: following the 302 (as a body-less GET) would
    // "acknowledge" records that never arrived.
    let elsewhere = Receiver::start().await;
    let rx = Receiver::start().await;
    rx.script([Reply::Redirect(302, elsewhere.url.clone())]);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        sink("siem", &rx.url, "create-update", "")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("redirects are not followed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("acknowledged 0, pending 4"),
        "{}",
        out.stderr
    );
    assert!(elsewhere.received().is_empty());
    assert_eq!(
        rx.received().len(),
        1,
        "the sink is left alone for this sync"
    );
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rx.acknowledged_uids(), arns(ENGINEERING));
}

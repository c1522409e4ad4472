//! SIEM sinks with real receivers: OpenSearch `_bulk` (osmem-server, a fault proxy in front of it)
//! and Splunk HEC (a strict fake written from Splunk's documented contract), each through create →
//! update → no change → outage → recovery, partial failures and refusals; and `check-config --connect`.

use serde_json::Value;

use crate::fixtures::{aws_section, retag, seed_standard};
use crate::support::bulk_proxy::{BulkProxy, BulkRules};
use crate::support::cli::{Workspace, last_line};
use crate::support::hec::Hec;
use crate::support::moto::{Moto, role_arn};
use crate::support::opensearch::OpenSearch;
use crate::support::proxy::{Proxy, Rules};
use crate::support::schema::assert_valid;

const INDEX: &str = "iam-users";

fn es_sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"{INDEX}\"\nmax_retries = 2\n{extra}\n"
    )
}

fn hec_sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{name}\"\ntype = \"splunk_hec\"\nurl = \"{url}\"\ntoken = \"hec-token-1\"\nmax_retries = 2\n{extra}\n"
    )
}

fn arn(user: &str) -> String {
    format!("arn:aws:iam::123456789012:user/engineering/{user}")
}

async fn tag_of(os: &OpenSearch, user: &str) -> Value {
    let doc = os.doc(INDEX, &arn(user)).await.expect("document");
    doc["user"]["ldap_person"]["tags"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_create_update_no_change_outage_recovery() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let mut os = OpenSearch::start();
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        es_sink("search", &os.url, "batch_size = 3\ncompression = \"gzip\"")
    ));

    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("sent 4, acknowledged 4, pending 0"),
        "{}",
        out.stderr
    );
    let docs = os.docs(INDEX).await;
    assert_eq!(docs.len(), 4, "one document per user, _id = ARN");
    for (id, doc) in &docs {
        assert_eq!(doc["user"]["uid"], id.as_str());
        assert_valid(doc);
    }

    retag(&iam, "alice", "search-team").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains("sent 1, acknowledged 1"),
        "{}",
        out.stderr
    );
    assert!(
        tag_of(&os, "alice")
            .await
            .to_string()
            .contains("search-team")
    );
    assert_eq!(
        os.count(INDEX).await,
        4,
        "an update overwrites, never duplicates"
    );

    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains("sent 0, acknowledged 0, pending 0"),
        "{}",
        out.stderr
    );

    os.stop().await;
    retag(&iam, "bob", "while-down").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("pending 1"), "{}", out.stderr);
    os.start_again();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("sent 1, acknowledged 1, pending 0"),
        "{}",
        out.stderr
    );
    assert!(tag_of(&os, "bob").await.to_string().contains("while-down"));
}

/// A 200 with `errors: true` acknowledges only the items that succeeded: a 429 item is sent again
/// alone (and lands), a 400 item is rejected and named, and nothing else is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_bulk_resends_exactly_the_failed_items() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let os = OpenSearch::start();
    let proxy = BulkProxy::start(
        &os.url,
        BulkRules::default()
            .fail_item_once("alice", 429, "es_rejected_execution_exception")
            .fail_item("bob", 400, "mapper_parsing_exception"),
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        es_sink("search", &proxy.url, "")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(
        out.code, 2,
        "a rejection makes the sync partial: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sent 4, acknowledged 3, pending 0, rejected 1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "rejected bob ({}): _bulk item 400 mapper_parsing_exception",
            arn("bob")
        )),
        "{}",
        out.stderr
    );
    let requests = proxy.bulk_requests();
    assert_eq!(requests.len(), 2, "the batch, then alice alone");
    let resent: Vec<String> = requests[1]
        .items
        .iter()
        .map(|i| i.id.clone().unwrap_or_default())
        .collect();
    assert_eq!(resent, [arn("alice")]);
    assert_eq!(os.count(INDEX).await, 3);
    assert!(os.doc(INDEX, &arn("bob")).await.is_none());

    // Nothing changed: bob is not sent again (held back), nothing else either.
    proxy.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(proxy.bulk_requests().is_empty());
    assert!(out.stderr.contains("rejected 1"), "{}", out.stderr);

    // bob's mapping is fixed and his content changes: he is sent and lands.
    proxy.set_rules(BulkRules::default());
    retag(&iam, "bob", "fixed").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("acknowledged 1, pending 0, rejected 0"),
        "{}",
        out.stderr
    );
    assert_eq!(os.count(INDEX).await, 4);
}

/// A cluster that accepts a `_bulk` request and never answers: the request times out, is sent again,
/// and lands once (`_id` = ARN, so a late first write would be overwritten, not duplicated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_bulk_request_times_out_and_is_sent_again() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let os = OpenSearch::start();
    let proxy = BulkProxy::start(
        &os.url,
        BulkRules {
            hang_next: true,
            ..Default::default()
        },
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        es_sink("search", &proxy.url, "timeout_secs = 1")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("retrying delivery"), "{}", out.stderr);
    assert_eq!(proxy.stats().hung, 1);
    assert_eq!(os.count(INDEX).await, 4);
}

/// 413 halves the batch; 503 is retried; create-only takes a 409 as "already there" and
/// update-only a 404 as "nothing to update".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_sizes_statuses_and_modes() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let os = OpenSearch::start();
    let proxy = BulkProxy::start(
        &os.url,
        BulkRules {
            max_body_bytes: Some(5_000),
            ..BulkRules::default().status_once([503])
        },
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/"),
        es_sink("search", &proxy.url, "batch_size = 6")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(os.count(INDEX).await, 6);
    let stats = proxy.stats();
    assert_eq!(stats.rejected.get(&503), Some(&1));
    assert!(
        stats.rejected.get(&413).copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    assert!(
        proxy
            .bulk_requests()
            .iter()
            .filter(|r| r.status == Some(200))
            .all(|r| r.body_bytes <= 5_000)
    );

    // A create-only sink over documents that are already there: 409s, all acknowledged.
    let ws2 = Workspace::new();
    let cfg2 = ws2.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/"),
        es_sink("search-create", &os.url, "mode = \"create-only\"")
    ));
    let out = ws2.run(&cfg2, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("sent 6, acknowledged 6, pending 0, rejected 0"),
        "{}",
        out.stderr
    );

    // An update-only sink that once acknowledged a user now missing from the index: its update
    // answers 404, which counts as done (nothing to update).
    let (status, _) = os
        .request(
            reqwest::Method::DELETE,
            &format!("/{INDEX}/_doc/{}", arn("alice").replace('/', "%2F")),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let conn = rusqlite::Connection::open(ws2.store()).unwrap();
    conn.execute(
        "UPDATE sink_acks SET sink = 'search-update', content_hash = 'old' WHERE uid = ?1",
        [arn("alice")],
    )
    .unwrap();
    drop(conn);
    let cfg3 = ws2.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/"),
        es_sink("search-update", &os.url, "mode = \"update-only\"")
    ));
    let out = ws2.run(&cfg3, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("sent 1, acknowledged 1, pending 0"),
        "{}",
        out.stderr
    );
    assert!(
        os.doc(INDEX, &arn("alice")).await.is_none(),
        "update never creates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_with_acks_create_update_no_change_outage_recovery() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let hec = Hec::start("hec-token-1", true).await;
    hec.set_ack_delay_polls(2);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        hec_sink(
            "splunk",
            &hec.url,
            "ack = true\nindex = \"security\"\nbatch_size = 3"
        )
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("sent 4, acknowledged 4, pending 0"),
        "{}",
        out.stderr
    );
    let indexed = hec.indexed();
    assert_eq!(indexed.len(), 4);
    let channels: std::collections::BTreeSet<Option<String>> =
        hec.requests().iter().map(|r| r.channel.clone()).collect();
    assert_eq!(channels.len(), 1, "one channel per sink: {channels:?}");
    assert!(hec.ack_polls() >= 4, "acks are polled until indexed");
    for e in &indexed {
        assert_eq!(e.sourcetype.as_deref(), Some("ocsf:user_inventory"));
        assert_eq!(e.source.as_deref(), Some("iam-inventory"));
        assert_eq!(e.index.as_deref(), Some("security"));
        assert_valid(&e.event);
        // HEC time is the record's own time, in seconds with millisecond decimals.
        let ms = e.event["time"].as_i64().unwrap();
        assert_eq!(e.time, Some(ms as f64 / 1000.0));
    }

    retag(&iam, "alice", "hec").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains("sent 1, acknowledged 1"),
        "{}",
        out.stderr
    );
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains("sent 0, acknowledged 0, pending 0"),
        "{}",
        out.stderr
    );
    assert_eq!(hec.indexed().len(), 5);

    // Down for a sync: nothing lost.
    hec.stop().await;
    retag(&iam, "bob", "hec-down").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("pending 1"), "{}", out.stderr);
    hec.restart().await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let last = hec.indexed().pop().unwrap();
    assert!(last.event.to_string().contains("hec-down"));

    // Splunk takes the data but never confirms it indexed: not acknowledged, sent again later.
    hec.lose_acks(true);
    retag(&iam, "carol", "lost").await;
    let out = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__SINKS__0__ACK_TIMEOUT_SECS", "1")],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("did not confirm ackId"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("pending 1"), "{}", out.stderr);
    hec.lose_acks(false);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        hec.indexed()
            .pop()
            .unwrap()
            .event
            .to_string()
            .contains("lost")
    );
}

/// HEC refusals: a bad token is one line naming the sink; a bad event is rejected alone (the events
/// before it were indexed, the ones after it are sent again); a busy HEC is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_refusals() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let hec = Hec::start("hec-token-1", false).await;

    let ws = Workspace::new();
    let bad = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        hec_sink("splunk", &hec.url, "").replace("hec-token-1", "wrong-token")
    ));
    let out = ws.run(&bad, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "sink \"splunk\": HTTP 403 (HEC code 4: Invalid token): Splunk refused the token"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong-token"),
        "the token is never shown"
    );
    assert!(hec.indexed().is_empty());

    hec.reject_events_with("/user/name", "bob");
    hec.push_reply(crate::support::hec::Reply::Code(9));
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        hec_sink("splunk", &hec.url, "")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("rejected bob ({}): HEC code", arn("bob"))),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("acknowledged 3, pending 0, rejected 1"),
        "{}",
        out.stderr
    );
    let mut names: Vec<String> = hec
        .indexed_events()
        .iter()
        .map(|e| e["user"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["alice", "carol", "ci-deploy"],
        "each once, bob never"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_probes_every_target() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let os = OpenSearch::start();
    let hec = Hec::start("hec-token-1", true).await;
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            deny_assume_role: vec![role_arn("333333333333")],
            ..Default::default()
        },
    )
    .await;
    let ws = Workspace::new();
    let good = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n{}{}",
        aws_section(&proxy.endpoint, "/"),
        role_arn("222222222222"),
        es_sink("search", &os.url, ""),
        hec_sink("splunk", &hec.url, "ack = true")
    ));
    let out = ws.run(&good, &["check-config", "--connect"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for line in [
        "ok      aws caller: account 123456789012, iam:ListUsers allowed",
        "ok      aws role arn:aws:iam::222222222222:role/IamInventoryReader: account 222222222222",
        "ok      sink search (elasticsearch): opensearch 3.8.0, index \"iam-users\"",
        "ok      sink splunk (splunk_hec): healthy, token accepted",
    ] {
        assert!(out.stderr.contains(line), "{line}\n{}", out.stderr);
    }
    assert!(hec.indexed().is_empty(), "a probe sends no record");
    // check-config also shows where each sink's requests go.
    for endpoint in [
        format!("# sink search (elasticsearch): POST {}/_bulk", os.url),
        format!(
            "# sink splunk (splunk_hec): POST {}/services/collector/ack",
            hec.url
        ),
    ] {
        assert!(out.stdout.contains(&endpoint), "{endpoint}\n{}", out.stdout);
    }
    assert_eq!(os.count(INDEX).await, 0);

    let bad = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n{}{}",
        aws_section(&proxy.endpoint, "/"),
        role_arn("333333333333"),
        es_sink("search", "http://127.0.0.1:9", ""),
        hec_sink("splunk", &hec.url, "").replace("hec-token-1", "wrong-token")
    ));
    let out = ws.run(&bad, &["check-config", "--connect"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("FAILED  aws role arn:aws:iam::333333333333:role/IamInventoryReader: AccessDenied on sts:AssumeRole"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("FAILED  sink search (elasticsearch): cannot connect"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("FAILED  sink splunk (splunk_hec): HTTP 403"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong-token"));
    assert!(
        last_line(&out.stderr).starts_with("FAILED"),
        "{}",
        out.stderr
    );
}

/// Change events on the SIEM kinds: Elasticsearch `create`s them in `<index>-changes` with
/// `_id` = `metadata.uid` (a re-send is a 409: already there), Splunk gets them with sourcetype
/// `ocsf:account_change`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_reach_elasticsearch_and_splunk() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let os = OpenSearch::start();
    let hec = Hec::start("hec-token-1", false).await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}{}{}",
        aws_section(&moto.endpoint, "/engineering/"),
        es_sink("search", &os.url, "events = [\"inventory\", \"changes\"]"),
        hec_sink("splunk", &hec.url, "events = [\"changes\"]")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(os.count(INDEX).await, 4);
    let events = os.docs("iam-users-changes").await;
    assert_eq!(events.len(), 4);
    for (id, e) in &events {
        assert_eq!(e["metadata"]["uid"], id.as_str());
        assert_eq!(e["activity_name"], "Create");
        assert_valid(e);
    }
    let splunk = hec.indexed();
    assert_eq!(splunk.len(), 4);
    assert!(
        splunk
            .iter()
            .all(|e| e.sourcetype.as_deref() == Some("ocsf:account_change"))
    );

    // A forced re-send: Elasticsearch answers 409 for every event (same _id), all acknowledged,
    // nothing duplicated.
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    conn.execute("UPDATE sink_event_cursors SET change_id = 0", [])
        .unwrap();
    drop(conn);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("events sent 4, acknowledged 4, changes pending 0"),
        "{}",
        out.stderr
    );
    assert_eq!(os.count("iam-users-changes").await, 4);
}

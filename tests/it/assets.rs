//! The daily sync into an asset database: field mapping, deletions at the destination, and the
//! Oomnitza and Sekoia presets, against strict fakes written from their wire formats.

use serde_json::{Value, json};

use crate::fixtures::{aws_section, retag, seed_standard};
use crate::support::cli::{Workspace, last_line};
use crate::support::moto::Moto;
use crate::support::oomnitza::Oomnitza;
use crate::support::opensearch::OpenSearch;
use crate::support::receiver::Receiver;
use crate::support::schema::assert_valid;
use crate::support::sekoia::Sekoia;

const CONNECTOR: &str = "8a2e5b5c-3f4d-4e6a-9b1c-2d3e4f5a6b7c";

/// The seed's asset-database mapping: email built from the user name, MFA, the account.
const FIELDS: &str = r#"[sinks.fields]
arn = "user.uid"
username = "user.name"
email = "user.name ~ '@example.com'"
mfa = "user.has_mfa"
account = "user.account.uid"
key_count = "user.programmatic_credentials | length"
groups = "user.groups | map(attribute='name') | join(', ')"
"#;

fn by(records: &[Value], key: &str, value: &str) -> Value {
    records
        .iter()
        .find(|r| r[key] == value)
        .cloned()
        .unwrap_or_else(|| panic!("no record with {key} = {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_mapping_sends_exactly_its_fields_and_a_change_resends_once_to_that_sink_only() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let (assets, siem) = (Receiver::start().await, Receiver::start().await);
    let ws = Workspace::new();
    let config = |fields: &str| {
        format!(
            "{}[[sinks]]\nname = \"siem\"\nurl = \"{}\"\n[[sinks]]\nname = \"assets\"\nurl = \"{}\"\n{fields}",
            aws_section(&moto.endpoint, "/engineering/"),
            siem.url,
            assets.url
        )
    };
    let cfg = ws.config(&config(FIELDS));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records: Vec<Value> = assets
        .received()
        .into_iter()
        .flat_map(|r| r.records)
        .collect();
    assert_eq!(records.len(), 4);
    let alice = by(&records, "username", "alice");
    assert_eq!(
        alice,
        json!({
            "arn": "arn:aws:iam::123456789012:user/engineering/alice",
            "username": "alice",
            "email": "alice@example.com",
            "mfa": true,
            "account": "123456789012",
            "key_count": 1,
            "groups": "admins",
        }),
        "exactly the mapped fields, with their types"
    );
    // The SIEM sink next to it still gets OCSF records.
    siem.received()
        .iter()
        .flat_map(|r| &r.records)
        .for_each(assert_valid);

    // `export --sink` shows what the sink gets; plain export is OCSF.
    let exported = ws.run(&cfg, &["export", "--sink", "assets"], &[]).await;
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    assert_eq!(by(&exported.json_lines(), "username", "alice"), alice);
    let bad = ws.run(&cfg, &["export", "--sink", "nope"], &[]).await;
    assert_eq!(bad.code, 1);
    assert!(
        last_line(&bad.stderr).contains("no such sink"),
        "{}",
        bad.stderr
    );

    // Nothing changed: nothing sent anywhere.
    assets.clear();
    siem.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(assets.received().is_empty() && siem.received().is_empty());
    assert_eq!(out.code, 0);

    // The mapping changes: every record goes once more to that sink, and to no other.
    let cfg = ws.config(&config(&format!(
        "{FIELDS}department = \"unmapped.user.path | replace('/', '') | upper\"\n"
    )));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let resent: Vec<Value> = assets
        .received()
        .into_iter()
        .flat_map(|r| r.records)
        .collect();
    assert_eq!(resent.len(), 4);
    assert_eq!(
        by(&resent, "username", "alice")["department"],
        "ENGINEERING"
    );
    assert!(siem.received().is_empty(), "the other sink is not touched");
    assets.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(assets.received().is_empty(), "{}", out.stderr);

    // A dry run shows, for a change, what each mapped sink would receive.
    retag(&moto.iam().await, "bob", "dry").await;
    let dry = ws.run(&cfg, &["sync", "--dry-run"], &[]).await;
    let lines = dry.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["sinks"]["assets"]["username"], "bob");
    assert!(lines[0]["sinks"].get("siem").is_none());

    // A bad expression is a configuration error naming the sink and the field.
    let broken = ws.config(&config(&format!("{FIELDS}oops = \"user.name | shout\"\n")));
    let out = ws.run(&broken, &["check-config"], &[]).await;
    assert_eq!(out.code, 1);
    let line = last_line(&out.stderr);
    assert!(
        line.contains("sinks[1].fields.oops") && line.contains("shout") && line.contains("assets"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oomnitza_create_update_no_change_delete_outage_recovery() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let oom = Oomnitza::start("oom-token").await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"oomnitza\"\ntype = \"oomnitza\"\nurl = \"{}\"\ntoken = \"oom-token\"\nconnector_name = \"AWS IAM (iam-inventory)\"\nbatch_size = 3\n{FIELDS}",
        aws_section(&moto.endpoint, "/engineering/"),
        oom.url
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let users = oom.records("users");
    assert_eq!(users.len(), 4);
    assert_eq!(
        by(&users, "username", "carol")["email"],
        "carol@example.com"
    );
    let portions = oom.portions();
    assert_eq!(portions.len(), 1, "one portion per sync");
    assert_eq!(portions[0].batches, 2, "4 records in batches of 3");
    assert!(portions[0].finalized);
    assert_eq!(portions[0].sync_field, ["arn"]);
    assert_eq!(portions[0].connector_name, "AWS IAM (iam-inventory)");
    assert!(!portions[0].insert_only && !portions[0].update_only);

    // Update, then nothing.
    retag(&iam, "alice", "x").await;
    iam.delete_login_profile()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let _ = iam.create_group().group_name("auditors").send().await;
    iam.add_user_to_group()
        .group_name("auditors")
        .user_name("alice")
        .send()
        .await
        .unwrap();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains("sent 1, acknowledged 1"),
        "{}",
        out.stderr
    );
    assert_eq!(
        by(&oom.records("users"), "username", "alice")["groups"],
        "admins, auditors"
    );
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(out.stderr.contains("sent 0"), "{}", out.stderr);
    assert_eq!(oom.portions().len(), 2, "an empty sync opens no portion");

    // A deleted user stays in the asset database (on_delete = keep, the default).
    crate::support::moto::delete_user(&iam, "carol").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(oom.records("users").len(), 4);

    // Down, then back: nothing lost.
    oom.stop().await;
    retag(&iam, "bob", "while-down").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("pending 1"), "{}", out.stderr);
    oom.restart().await;

    // The finalize fails: the portion's records are not acknowledged, and go again next sync under
    // a new portion.
    oom.fail_finalize_once(500);
    let out = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__SINKS__0__MAX_RETRIES", "0")],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("finalize of portion"), "{}", out.stderr);
    assert!(out.stderr.contains("pending 1"), "{}", out.stderr);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let last = oom.portions().pop().unwrap();
    assert!(last.finalized && last.records == 1, "{last:?}");
    let bob = by(&oom.records("users"), "username", "bob");
    assert_eq!(bob["arn"], "arn:aws:iam::123456789012:user/engineering/bob");

    // create-only and update-only become insert_only and update_only.
    let ws2 = Workspace::new();
    let cfg2 = ws2.config(&format!(
        "{}[[sinks]]\nname = \"oomnitza\"\ntype = \"oomnitza\"\nurl = \"{}\"\ntoken = \"oom-token\"\nconnector_name = \"c\"\nmode = \"create-only\"\n{FIELDS}",
        aws_section(&moto.endpoint, "/engineering/"),
        oom.url
    ));
    assert_eq!(ws2.run(&cfg2, &["sync"], &[]).await.code, 0);
    assert!(oom.portions().pop().unwrap().insert_only);

    // A wrong token: one line naming the sink.
    let ws3 = Workspace::new();
    let bad = ws3.config(
        &std::fs::read_to_string(&cfg2)
            .unwrap()
            .replace("oom-token", "wrong")
            .replace(
                &ws2.store().display().to_string(),
                &ws3.store().display().to_string(),
            ),
    );
    let out = ws3.run(&bad, &["sync"], &[]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("Oomnitza refused the token of sink \"oomnitza\""),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong"), "the token is never shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sekoia_assets_create_update_no_change_outage_recovery() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let sekoia = Sekoia::start("sekoia-key", CONNECTOR).await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"sekoia\"\ntype = \"sekoia_assets\"\nurl = \"{}\"\nconnector_uuid = \"{CONNECTOR}\"\napi_key = \"sekoia-key\"\n",
        aws_section(&moto.endpoint, "/engineering/"),
        sekoia.url
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let items = sekoia.items();
    assert_eq!(items.len(), 4);
    items.iter().for_each(assert_valid);

    retag(&iam, "carol", "assets").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        out.stderr.contains("sent 1, acknowledged 1"),
        "{}",
        out.stderr
    );
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(out.stderr.contains("sent 0"), "{}", out.stderr);
    assert_eq!(sekoia.items().len(), 5);

    sekoia.stop().await;
    retag(&iam, "bob", "down").await;
    let out = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__SINKS__0__MAX_RETRIES", "0")],
        )
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    sekoia.restart().await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(sekoia.items().last().unwrap().to_string().contains("down"));

    // A 201 is not Sekoia's success: nothing acknowledged.
    retag(&iam, "alice", "201").await;
    sekoia.push_reply(201);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("pending 1"), "{}", out.stderr);

    // A wrong connector: one line naming it.
    let bad = ws.config(
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(CONNECTOR, "00000000-0000-4000-8000-000000000000"),
    );
    let out = ws.run(&bad, &["sync"], &[]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("check connector_uuid"),
        "{}",
        out.stderr
    );
}

/// `on_delete = "delete"`: a user deleted from IAM is deleted from the destination (a 404 counts as
/// done); a sink that keeps deleted users, next to it, keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_removes_deleted_users_from_elasticsearch() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let os = OpenSearch::start();
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"search\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"users\"\non_delete = \"delete\"\n[[sinks]]\nname = \"archive\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"archive\"\n",
        aws_section(&moto.endpoint, "/engineering/"),
        url = os.url
    ));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    assert_eq!((os.count("users").await, os.count("archive").await), (4, 4));
    crate::support::moto::delete_user(&iam, "carol").await;
    // ci-deploy is gone from the index already (someone cleaned up): its delete is a 404, done.
    let ci = "arn:aws:iam::123456789012:user/engineering/automation/ci-deploy";
    let (status, _) = os
        .request(
            reqwest::Method::DELETE,
            &format!("/users/_doc/{}", ci.replace('/', "%2F")),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for k in iam
        .list_access_keys()
        .user_name("ci-deploy")
        .send()
        .await
        .unwrap()
        .access_key_metadata()
    {
        iam.delete_access_key()
            .user_name("ci-deploy")
            .access_key_id(k.access_key_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    iam.delete_user()
        .user_name("ci-deploy")
        .send()
        .await
        .unwrap();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("deleted 2, deletes pending 0"),
        "{}",
        out.stderr
    );
    assert_eq!(os.count("users").await, 2);
    assert_eq!(os.count("archive").await, 4, "on_delete = keep keeps them");
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        !out.stderr.contains("deleted 2"),
        "sent once: {}",
        out.stderr
    );

    // Kinds without a delete operation refuse on_delete = "delete" at load.
    let bad = ws.config(&format!(
        "{}[[sinks]]\nname = \"h\"\nurl = \"http://127.0.0.1:9/\"\non_delete = \"delete\"\n",
        aws_section(&moto.endpoint, "/")
    ));
    let out = ws.run(&bad, &["check-config"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(
        last_line(&out.stderr).contains("sinks[0].on_delete"),
        "{}",
        out.stderr
    );
}

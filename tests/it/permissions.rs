//! Who can do what: policies (own, inline, through groups), administrators, every IAM credential
//! type, and the root user — the same records from both strategies, each strict OCSF 5003.

use serde_json::Value;

use crate::fixtures::{aws_section, comparable};
use crate::support::cli::Workspace;
use crate::support::moto::{Moto, Seed, seed_user};
use crate::support::proxy::{Proxy, Rules};
use crate::support::receiver::Receiver;
use crate::support::schema::assert_valid;

const ALL_TYPES: &str = "credential_types = [\"ssh_keys\", \"signing_certificates\", \"service_specific\"]\nroot_user = true\n";

fn user<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["user"]["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}"))
}

fn policy_uids(r: &Value) -> Vec<String> {
    let mut v: Vec<String> = r["unmapped"]["user"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uid"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn seed(iam: &aws_sdk_iam::Client) {
    for (name, groups) in [
        ("ann", &["ops"][..]),
        ("dev", &["readers"][..]),
        ("power", &[][..]),
    ] {
        seed_user(
            iam,
            &Seed {
                name,
                path: "/",
                active_keys: usize::from(name == "dev"),
                groups,
                ..Default::default()
            },
        )
        .await;
    }
    // ann: an administrator through her group.
    iam.attach_group_policy()
        .group_name("ops")
        .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
        .send()
        .await
        .unwrap();
    // dev: a customer-managed policy of her own, an inline one, and the readers' policies.
    let s3 = iam
        .create_policy()
        .policy_name("s3-read")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    iam.attach_user_policy()
        .user_name("dev")
        .policy_arn(s3.policy().unwrap().arn().unwrap())
        .send()
        .await
        .unwrap();
    iam.put_user_policy()
        .user_name("dev")
        .policy_name("deploy")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"lambda:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    iam.attach_group_policy()
        .group_name("readers")
        .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
        .send()
        .await
        .unwrap();
    iam.put_group_policy()
        .group_name("readers")
        .policy_name("logs")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:Get*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    // power: Allow * on * in an inline policy, without AdministratorAccess.
    iam.put_user_policy()
        .user_name("power")
        .policy_name("everything")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    // dev's other credentials: an SSH key and an (inactive) signing certificate.
    iam.upload_ssh_public_key()
        .user_name("dev")
        .ssh_public_key_body(include_str!("../fixtures/ssh-key.pub").trim())
        .send()
        .await
        .unwrap();
    let cert = iam
        .upload_signing_certificate()
        .user_name("dev")
        .certificate_body(include_str!("../fixtures/signing-cert.pem"))
        .send()
        .await
        .unwrap();
    iam.update_signing_certificate()
        .user_name("dev")
        .certificate_id(cert.certificate().unwrap().certificate_id())
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_credentials_and_the_root_user_the_same_from_both_strategies() {
    let moto = Moto::start_with_managed_policies();
    let iam = moto.iam().await;
    seed(&iam).await;
    // moto answers ListServiceSpecificCredentials with a 500: the proxy answers it in IAM's shape.
    // moto's credential report leaves `cert_1_last_rotated` N/A even when a certificate exists;
    // IAM's has the date, active or not: the proxy writes it as IAM would.
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            report_edits: vec![(
                "dev".into(),
                "cert_1_last_rotated".into(),
                "2026-01-02T03:04:05+00:00".into(),
            )],
            service_credentials: Some(vec![(
                "dev".into(),
                "ACCAEXAMPLE1".into(),
                "codecommit.amazonaws.com".into(),
                "Active".into(),
            )]),
            ..Default::default()
        },
    )
    .await;
    let mut results = Vec::new();
    for strategy in ["per-user", "bulk"] {
        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "{}[collect]\nstrategy = \"{strategy}\"\n{ALL_TYPES}",
            aws_section(&proxy.endpoint, "/")
        ));
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 0, "{strategy}: {}", out.stderr);
        let records = out.json_lines();
        records.iter().for_each(assert_valid);
        assert_eq!(records.len(), 4, "three users and the root");

        let ann = user(&records, "ann");
        assert_eq!(ann["unmapped"]["user"]["is_admin"], true, "{strategy}");
        assert_eq!(
            ann["unmapped"]["user"]["admin_via"],
            serde_json::json!(["AdministratorAccess (group ops)"])
        );
        assert_eq!(
            ann["user"]["groups"][0]["privileges"],
            serde_json::json!(["AdministratorAccess"])
        );

        let dev = user(&records, "dev");
        assert_eq!(dev["unmapped"]["user"]["is_admin"], false);
        assert_eq!(
            policy_uids(dev),
            [
                "group/readers/inline/logs",
                "group/readers/managed/arn:aws:iam::aws:policy/ReadOnlyAccess",
                "user/inline/deploy",
                "user/managed/arn:aws:iam::123456789012:policy/s3-read",
            ]
        );
        let types: Vec<&str> = dev["user"]["programmatic_credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "AWS Access Key",
                "SSH Public Key",
                "X.509 Signing Certificate",
                "Service-Specific Credential"
            ],
            "{strategy}"
        );
        let other = dev["unmapped"]["user"]["credentials"].as_array().unwrap();
        assert_eq!(other[1]["status"], "Inactive", "inactive certificates too");
        assert_eq!(other[2]["service"], "codecommit.amazonaws.com");

        let power = user(&records, "power");
        assert_eq!(power["unmapped"]["user"]["is_admin"], true);
        assert_eq!(
            power["unmapped"]["user"]["admin_via"],
            serde_json::json!(["inline everything (user)"])
        );

        let root = user(&records, "<root_account>");
        assert_eq!(root["user"]["uid"], "arn:aws:iam::123456789012:root");
        assert_eq!(root["user"]["type_id"], 2);
        assert_eq!(root["user"]["has_mfa"], false);
        assert!(root["unmapped"]["user"]["access_keys_present"].is_boolean());
        results.push(comparable(records));
    }
    assert_eq!(
        results[0], results[1],
        "both strategies give identical records"
    );

    // A policy change is an Attach Policy event; a lost admin group is a Detach and a revocation.
    let rx = Receiver::start().await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[collect]\n{ALL_TYPES}[[sinks]]\nname = \"soc\"\nurl = \"{}\"\nevents = [\"changes\"]\n",
        aws_section(&proxy.endpoint, "/"),
        rx.url
    ));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    rx.clear();
    iam.attach_user_policy()
        .user_name("power")
        .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
        .send()
        .await
        .unwrap();
    iam.remove_user_from_group()
        .group_name("ops")
        .user_name("ann")
        .send()
        .await
        .unwrap();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Value> = rx.received().into_iter().flat_map(|r| r.records).collect();
    events.iter().for_each(assert_valid);
    let mut got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["user"]["name"].as_str().unwrap().to_string(),
                e["activity_name"].as_str().unwrap().to_string(),
                e["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, String)> = [
        ("ann", "Administrator Access Removed", "Informational"),
        ("ann", "Detach Policy", "Informational"),
        ("ann", "Group Membership Removed", "Informational"),
        // power was an administrator already (inline *:*); now also through AdministratorAccess.
        ("power", "Administrator Access Changed", "Low"),
        ("power", "Attach Policy", "High"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
}

/// A failed call for any of these fails the account: never an empty list or a false "no".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_permission_call_fails_the_account() {
    let moto = Moto::start();
    seed_user(
        &moto.iam().await,
        &Seed {
            name: "eve",
            path: "/",
            ..Default::default()
        },
    )
    .await;
    for (action, strategy) in [
        ("ListAttachedUserPolicies", "per-user"),
        ("ListSSHPublicKeys", "bulk"),
        ("GetAccountSummary", "per-user"),
    ] {
        let proxy = Proxy::start(
            &moto.endpoint,
            Rules {
                deny_actions: vec![(action.into(), None)],
                service_credentials: Some(vec![]),
                ..Default::default()
            },
        )
        .await;
        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "{}[collect]\nstrategy = \"{strategy}\"\n{ALL_TYPES}",
            aws_section(&proxy.endpoint, "/")
        ));
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 2, "{action}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("AccessDenied on iam:{action}")),
            "{action}: {}",
            out.stderr
        );
        assert!(out.json_lines().is_empty());
    }
}

//! Many accounts through assumed roles, failure isolation and throttling.

use crate::fixtures::{aws_section, names};
use crate::support::cli::Workspace;
use crate::support::moto::{CALLER_ACCOUNT, Moto, Seed, role_arn, seed_user};
use crate::support::proxy::{Proxy, Rules};
use crate::support::schema::assert_valid;

const B: &str = "222222222222";
const C: &str = "333333333333";

async fn seed_three(moto: &Moto) {
    for (account, users) in [
        (CALLER_ACCOUNT, ["a1", "a2"]),
        (B, ["b1", "b2"]),
        (C, ["c1", "c2"]),
    ] {
        let iam = moto.iam_in(account).await;
        for u in users {
            seed_user(
                &iam,
                &Seed {
                    name: u,
                    path: "/",
                    active_keys: 1,
                    mfa: u.ends_with('1'),
                    console: true,
                    groups: &["g"],
                    ..Default::default()
                },
            )
            .await;
        }
    }
}

fn three_account_config(endpoint: &str) -> String {
    format!(
        "{}[[aws.roles]]\narn = \"{}\"\nexternal_id = \"ext-1\"\n[[aws.roles]]\narn = \"{}\"\nsession_name = \"inventory-test\"\n",
        aws_section(endpoint, "/"),
        role_arn(B),
        role_arn(C)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_every_account_land_with_their_account_and_provenance() {
    let moto = Moto::start();
    seed_three(&moto).await;
    let ws = Workspace::new();
    let cfg = ws.config(&three_account_config(&moto.endpoint));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = out.json_lines();
    assert_eq!(names(&records), ["a1", "a2", "b1", "b2", "c1", "c2"]);
    for r in &records {
        assert_valid(r);
        let name = r["user"]["name"].as_str().unwrap();
        let account = match &name[..1] {
            "a" => CALLER_ACCOUNT,
            "b" => B,
            _ => C,
        };
        assert_eq!(r["user"]["account"]["uid"], account, "{name}");
        assert_eq!(r["cloud"]["account"]["uid"], account);
        assert_eq!(
            r["user"]["uid"],
            format!("arn:aws:iam::{account}:user/{name}")
        );
        assert_eq!(
            r["user"]["groups"][0]["uid"],
            format!("arn:aws:iam::{account}:group/g")
        );
        if account == CALLER_ACCOUNT {
            assert!(r["unmapped"]["source"].get("assumed_role_arn").is_none());
        } else {
            assert_eq!(
                r["unmapped"]["source"]["assumed_role_arn"],
                role_arn(account)
            );
        }
    }
    assert!(
        out.stderr.contains("accounts ok 3, failed 0; users 6"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("account {B} ({}): ok", role_arn(B))),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_be_assumed_fails_only_its_account_and_deletes_nothing() {
    let moto = Moto::start();
    seed_three(&moto).await;
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let ws = Workspace::new();
    let cfg = ws.config(&three_account_config(&proxy.endpoint));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);

    proxy.set_rules(Rules {
        deny_assume_role: vec![role_arn(B)],
        ..Default::default()
    });
    // Something changes in a healthy account meanwhile, and a user of B is really deleted.
    seed_user(
        &moto.iam_in(C).await,
        &Seed {
            name: "c3",
            path: "/",
            ..Default::default()
        },
    )
    .await;
    let b = moto.iam_in(B).await;
    let key = b.list_access_keys().user_name("b2").send().await.unwrap();
    b.delete_access_key()
        .user_name("b2")
        .access_key_id(key.access_key_metadata()[0].access_key_id().unwrap())
        .send()
        .await
        .unwrap();
    b.remove_user_from_group()
        .group_name("g")
        .user_name("b2")
        .send()
        .await
        .unwrap();
    b.delete_login_profile()
        .user_name("b2")
        .send()
        .await
        .unwrap();
    b.delete_user().user_name("b2").send().await.unwrap();

    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let failed_line = out
        .stderr
        .lines()
        .find(|l| l.contains(&format!("account {B}")))
        .unwrap();
    assert!(
        failed_line.contains("FAILED") && failed_line.contains("AccessDenied on sts:AssumeRole"),
        "{failed_line}"
    );
    assert!(
        failed_line.contains("trust policy"),
        "with a hint: {failed_line}"
    );
    assert_eq!(
        names(&out.json_lines()),
        ["c3"],
        "the healthy accounts went on"
    );
    let export = names(&ws.run(&cfg, &["export"], &[]).await.json_lines());
    assert_eq!(
        export,
        ["a1", "a2", "b1", "b2", "c1", "c2", "c3"],
        "B's users are kept as they were"
    );
    let changes = ws
        .run(&cfg, &["changes", "--format", "json", "--account", B], &[])
        .await
        .json_lines();
    assert!(
        changes.iter().all(|c| c["kind"] == "created"),
        "no deletion for a failed account"
    );

    // When B is reachable again, its real deletion is recorded.
    proxy.set_rules(Rules::default());
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let changes = ws
        .run(&cfg, &["changes", "--format", "json", "--account", B], &[])
        .await
        .json_lines();
    assert_eq!(changes.iter().filter(|c| c["kind"] == "deleted").count(), 1);
}

/// A sync under throttling must produce exactly what an unthrottled one does, and count the throttles.
async fn throttled_sync_matches_clean_sync(rules: Rules, retry: &str, min_throttles: u64) {
    let moto = Moto::start();
    seed_three(&moto).await;
    let clean_ws = Workspace::new();
    let clean = clean_ws
        .run(
            &clean_ws.config(&three_account_config(&moto.endpoint)),
            &["sync"],
            &[],
        )
        .await;
    assert_eq!(clean.code, 0, "{}", clean.stderr);

    let proxy = Proxy::start(&moto.endpoint, rules).await;
    let ws = Workspace::new();
    let cfg = ws.config(&three_account_config(&proxy.endpoint).replace(
        "max_attempts = 3",
        &format!("max_attempts = 10\nretry_mode = \"{retry}\""),
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("time");
        v
    };
    let mut want: Vec<_> = clean.json_lines().iter().map(strip).collect();
    let mut got: Vec<_> = out.json_lines().iter().map(strip).collect();
    want.sort_by_key(|v| v["user"]["uid"].to_string());
    got.sort_by_key(|v| v["user"]["uid"].to_string());
    assert_eq!(got, want, "throttling changes nothing in the result");
    let throttled: u64 = proxy.throttled().values().sum();
    assert!(throttled >= min_throttles, "{throttled}");
    assert!(
        out.stderr.contains(&format!("(throttled {throttled})\n")),
        "the summary counts the proxy's {throttled} throttles: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_of_all_calls_throttled_still_yields_the_complete_inventory() {
    // A fixed share, whatever the rate: the adaptive limiter would only slow down further, so this
    // one retries in standard mode.
    throttled_sync_matches_clean_sync(
        Rules {
            throttle_every: Some(3),
            ..Default::default()
        },
        "standard",
        10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_style_rate_limit_is_absorbed_by_adaptive_retry() {
    throttled_sync_matches_clean_sync(
        Rules {
            rate_limit: Some(5.0),
            ..Default::default()
        },
        "adaptive",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_account_listed_as_a_role_too_is_collected_once_as_the_caller() {
    let moto = Moto::start();
    seed_three(&moto).await;
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let ws = Workspace::new();
    // The StackSet put the reader role into the management account too.
    let cfg = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n",
        aws_section(&proxy.endpoint, "/"),
        role_arn(CALLER_ACCOUNT)
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = out.json_lines();
    assert_eq!(names(&records), ["a1", "a2"], "each user once");
    assert!(
        records
            .iter()
            .all(|r| r["unmapped"]["source"].get("assumed_role_arn").is_none()),
        "the caller's way wins"
    );
    assert!(
        out.stderr.contains("accounts ok 1, failed 0"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("collected once"), "{}", out.stderr);
    assert_eq!(
        proxy.calls().get("ListUsers"),
        Some(&1),
        "collected once, not twice"
    );

    // The duplicate role being denied is not a failure either: the account was reached.
    proxy.set_rules(Rules {
        deny_assume_role: vec![role_arn(CALLER_ACCOUNT)],
        ..Default::default()
    });
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("accounts ok 1, failed 0"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_discovered_from_the_organization() {
    let moto = Moto::start();
    seed_user(
        &moto.iam().await,
        &Seed {
            name: "a1",
            path: "/",
            ..Default::default()
        },
    )
    .await;
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "testing", "testing", None, None, "t",
        ))
        .load()
        .await;
    let orgs = aws_sdk_organizations::Client::new(&conf);
    orgs.create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await
        .unwrap();
    let mut members = Vec::new();
    for name in ["dev", "prod", "sandbox"] {
        let out = orgs
            .create_account()
            .account_name(name)
            .email(format!("{name}@example.com"))
            .send()
            .await
            .unwrap();
        let id = out
            .create_account_status()
            .unwrap()
            .account_id()
            .unwrap()
            .to_string();
        seed_user(
            &moto.iam_in(&id).await,
            &Seed {
                name: &format!("{name}-user"),
                path: "/",
                ..Default::default()
            },
        )
        .await;
        members.push(id);
    }
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[aws.organization]\nrole_name = \"IamInventoryReader\"\nexternal_id = \"org-ext\"\nexclude = [\"{}\"]\n",
        aws_section(&proxy.endpoint, "/"),
        members[2]
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = out.json_lines();
    assert_eq!(
        names(&records),
        ["a1", "dev-user", "prod-user"],
        "sandbox is excluded"
    );
    for r in &records {
        let name = r["user"]["name"].as_str().unwrap();
        if name == "a1" {
            assert!(r["unmapped"]["source"].get("assumed_role_arn").is_none());
            continue;
        }
        let id = &members[usize::from(name == "prod-user")];
        assert_eq!(r["user"]["account"]["uid"], id.as_str());
        assert_eq!(r["unmapped"]["source"]["assumed_role_arn"], role_arn(id));
    }
    // The management account (the caller's) is listed by Organizations too: collected once, as the caller.
    assert!(
        out.stderr.contains("accounts ok 3, failed 0"),
        "{}",
        out.stderr
    );
    assert_eq!(proxy.calls().get("ListUsers"), Some(&3));

    // Discovery refused: reported as its own failure, the caller's account goes on, nothing deleted.
    proxy.set_rules(Rules {
        deny_json_target: Some("ListAccounts".into()),
        ..Default::default()
    });
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("account organization"))
        .unwrap();
    assert!(
        line.contains("FAILED")
            && line.contains("AccessDeniedException on organizations:ListAccounts"),
        "{line}"
    );
    assert!(line.contains("grant organizations:ListAccounts"), "{line}");
    assert_eq!(
        ws.run(&cfg, &["export"], &[]).await.json_lines().len(),
        3,
        "nothing deleted"
    );
}

//! The walking skeleton end to end: sync → OCSF on stdout, export, check-config, dry run.

use serde_json::Value;

use crate::fixtures::{ENGINEERING, aws_section, names, retag, seed_standard};
use crate::support::cli::{Workspace, last_line};
use crate::support::moto::Moto;
use crate::support::schema::assert_valid;

fn by_name<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["user"]["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_prints_strict_ocsf_for_users_under_the_prefix_only() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/engineering/"));

    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = out.json_lines();
    // frank is under /engineering-old/ and erin under /finance/: outside the prefix.
    assert_eq!(names(&records), ENGINEERING);
    for r in &records {
        assert_valid(r);
        assert_eq!(r["class_uid"], 5003);
        assert_eq!(r["user"]["account"]["uid"], "123456789012");
        assert_eq!(r["unmapped"]["source"]["path_prefix"], "/engineering/");
        assert!(r["unmapped"]["source"].get("assumed_role_arn").is_none());
        assert!(r["time"].as_i64().unwrap() > 1_700_000_000_000);
    }

    let alice = by_name(&records, "alice");
    assert_eq!(
        alice["user"]["uid"],
        "arn:aws:iam::123456789012:user/engineering/alice"
    );
    assert_eq!(alice["user"]["has_mfa"], true);
    assert_eq!(alice["unmapped"]["user"]["is_console_user"], true);
    assert_eq!(alice["unmapped"]["user"]["path"], "/engineering/");
    assert_eq!(
        alice["user"]["ldap_person"]["tags"],
        serde_json::json!([{"name": "cost-centre", "value": "R&D ✓ 研究"}, {"name": "team", "value": "platform"}])
    );
    assert_eq!(
        alice["user"]["groups"],
        serde_json::json!([{"name": "admins", "uid": "arn:aws:iam::123456789012:group/admins", "privileges": []}])
    );
    assert_eq!(
        alice["unmapped"]["user"]["mfa_devices"][0]["serial"],
        "arn:aws:iam::123456789012:mfa/alice"
    );

    let bob = by_name(&records, "bob");
    let creds = bob["user"]["programmatic_credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2, "inactive keys are listed too");
    let mut statuses: Vec<&str> = bob["unmapped"]["user"]["access_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["Active", "Inactive"]);
    assert!(
        bob["unmapped"]["user"]["access_keys"][0]["created_time"]
            .as_i64()
            .unwrap()
            > 1_700_000_000_000
    );
    assert_eq!(bob["user"]["groups"].as_array().unwrap().len(), 2);

    let carol = by_name(&records, "carol");
    assert_eq!(carol["user"]["has_mfa"], false);
    assert_eq!(
        carol["user"]["programmatic_credentials"],
        serde_json::json!([])
    );

    let ci = by_name(&records, "ci-deploy");
    assert_eq!(ci["unmapped"]["user"]["is_console_user"], false);
    assert_eq!(
        ci["user"]["programmatic_credentials"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The summary is on stderr, never on stdout.
    assert!(
        out.stderr
            .contains("users 4; created 4, updated 0, deleted 0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sink stdout (create-update): sent 4, acknowledged 4, pending 0")
    );

    // Nothing changed: nothing printed, nothing recorded.
    let again = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, "");
    assert!(
        again.stderr.contains("created 0, updated 0, deleted 0"),
        "{}",
        again.stderr
    );

    // export prints the snapshot, valid, with a fresh collection time.
    let export = ws.run(&cfg, &["export"], &[]).await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let exported = export.json_lines();
    assert_eq!(names(&exported), ENGINEERING);
    for r in &exported {
        assert_valid(r);
    }
    let first_time = alice["time"].as_i64().unwrap();
    assert!(by_name(&exported, "alice")["time"].as_i64().unwrap() >= first_time);
    let strip_time = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("time");
        v
    };
    assert_eq!(strip_time(by_name(&exported, "bob")), strip_time(bob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_one_clear_line_and_exit_1_from_every_command() {
    let ws = Workspace::new();
    let cases: &[(&str, &str)] = &[
        ("[aws]\nregion = \n", "invalid TOML at line 2"),
        ("[aws]\nregoin = \"us-east-1\"\n", "unknown field `regoin`"),
        (
            "[[sinks]]\nname = \"siem\"\nurl = \"http://127.0.0.1:1/\"\nmode = \"creat-only\"\n",
            "sinks[0].mode: unknown variant `creat-only`, expected one of `create-update`, `create-only`, `update-only`",
        ),
        (
            "[[sinks]]\nname = \"siem\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { Authorization = \"Bearer ${SIEM_TOKEN}\" }\n",
            "sinks[0].headers.Authorization: environment variable SIEM_TOKEN is not set",
        ),
        (
            "[[sinks]]\nname = \"siem\"\nurl = \"not a url\"\n",
            "sinks[0].url:",
        ),
        (
            "[aws]\npath_prefix = \"engineering/\"\n",
            "aws.path_prefix:",
        ),
        ("[schedule]\ncron = \"every day\"\n", "schedule.cron:"),
    ];
    for (text, expected) in cases {
        let cfg = ws.config(text);
        for cmd in [
            &["check-config"][..],
            &["sync"],
            &["export"],
            &["changes"],
            &["run"],
        ] {
            let out = ws.run(&cfg, cmd, &[]).await;
            assert_eq!(out.code, 1, "{cmd:?} on {text:?}: {}", out.stderr);
            assert_eq!(out.stdout, "", "stdout is for data only");
            let line = last_line(&out.stderr);
            assert_eq!(
                out.stderr.trim_end().lines().count(),
                1,
                "one line: {}",
                out.stderr
            );
            assert!(
                line.contains(expected),
                "{cmd:?}: {line:?} should contain {expected:?}"
            );
            assert!(line.contains("config.toml"), "names the file: {line}");
        }
    }
    let missing = ws.run(&ws.path("nope.toml"), &["sync"], &[]).await;
    assert_eq!(missing.code, 1);
    assert!(
        last_line(&missing.stderr).contains("nope.toml"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_resolved_config_with_secrets_redacted() {
    let ws = Workspace::new();
    let cfg = ws.config(
        "[aws]\nendpoint_url = \"http://127.0.0.1:5000\"\n[[aws.roles]]\narn = \"arn:aws:iam::222222222222:role/R\"\nexternal_id = \"${EXT_ID}\"\n[[sinks]]\nname = \"siem\"\nurl = \"https://siem.example/ingest?token=qs-secret\"\nheaders = { Authorization = \"Bearer ${SIEM_TOKEN}\" }\n",
    );
    let env = [
        ("SIEM_TOKEN", "tok-s3cr3t"),
        ("EXT_ID", "ext-s3cr3t"),
        ("IAM_INVENTORY__AWS__PATH_PREFIX", "/contractors/"),
    ];
    let out = ws.run(&cfg, &["check-config"], &env).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for secret in ["tok-s3cr3t", "ext-s3cr3t", "qs-secret"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{secret} leaked"
        );
    }
    let resolved: toml::Table = out.stdout.parse().expect("check-config prints TOML");
    assert_eq!(
        resolved["aws"]["path_prefix"].as_str(),
        Some("/contractors/"),
        "env override applied"
    );
    assert_eq!(
        resolved["aws"]["roles"][0]["external_id"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        resolved["sinks"][0]["headers"]["Authorization"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        resolved["store"]["path"].as_str(),
        Some(ws.store().to_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_diff_and_writes_nothing() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/engineering/"));

    let dry = ws.run(&cfg, &["sync", "--dry-run"], &[]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        !ws.store().exists(),
        "a dry run on a fresh deployment creates no store"
    );
    let rows = dry.json_lines();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r["kind"] == "created" && r["run_id"].is_null())
    );

    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    retag(&iam, "alice", "security").await;
    let before = std::fs::read(ws.store()).unwrap();
    let dry = ws.run(&cfg, &["sync", "--dry-run"], &[]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let rows = dry.json_lines();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["user"], "alice");
    assert_eq!(
        rows[0]["fields"][0]["path"],
        "user.ldap_person.tags[team].value"
    );
    assert_eq!(
        std::fs::read(ws.store()).unwrap(),
        before,
        "the store file is untouched"
    );
    let changes = ws.run(&cfg, &["changes", "--format", "json"], &[]).await;
    assert_eq!(
        changes.json_lines().len(),
        4,
        "only the first sync's creates are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_aws_fails_the_account_and_deletes_nothing() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/engineering/"));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);

    let closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    let out = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__AWS__ENDPOINT_URL", closed.as_str())],
        )
        .await;
    assert_eq!(out.code, 2, "partial: {}", out.stderr);
    assert!(
        out.stderr.contains("FAILED") && out.stderr.contains("could not reach AWS"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    let export = ws.run(&cfg, &["export"], &[]).await;
    assert_eq!(names(&export.json_lines()), ENGINEERING, "snapshot kept");
    let changes = ws.run(&cfg, &["changes", "--format", "json"], &[]).await;
    assert!(changes.json_lines().iter().all(|c| c["kind"] == "created"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_named_as_such() {
    let ws = Workspace::new();
    let cfg = ws.config("[aws]\nendpoint_url = \"http://127.0.0.1:9\"\nmax_attempts = 1\n");
    let out = ws
        .command(&cfg, &["sync"], &[])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("FAILED")).unwrap();
    assert!(line.contains("no AWS credentials found"), "{line}");
    assert!(line.len() < 400, "one readable line: {line}");
}

//! The promises under faults: no false "no" from a stale credential report, bulk that degrades
//! instead of failing, runs that always end, one sync per store, retirement instead of false
//! deletions, poison records isolated, torn file lines repaired, every partition, and the small ones.

use std::time::Duration;

use serde_json::Value;

use crate::fixtures::{aws_section, comparable, names, retag, seed_standard};
use crate::support::cli::{Output, Workspace, last_line};
use crate::support::moto::{CALLER_ACCOUNT, Moto, Seed, role_arn, seed_user};
use crate::support::proxy::{Proxy, Rules};
use crate::support::receiver::Receiver;
use crate::support::schema::assert_valid;

const OTHER: &str = "222222222222";

fn user<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["user"]["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}"))
}

const EVENTS_SOURCE: &str = "[events_source]\ntype = \"cloudtrail\"\n";

/// A bulk sync of /engineering/ through `endpoint` (plus `extra` config) whose credential report
/// says alice has no console password and ci-deploy has one, the opposite of IAM: its output and
/// records, once both users are checked to carry IAM's truth.
async fn bulk_sync_past_the_lagging_report(endpoint: &str, extra: &str) -> (Output, Vec<Value>) {
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[collect]\nstrategy = \"bulk\"\n{extra}",
        aws_section(endpoint, "/engineering/")
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = out.json_lines();
    assert_eq!(
        user(&records, "alice")["unmapped"]["user"]["is_console_user"],
        true
    );
    assert_eq!(
        user(&records, "ci-deploy")["unmapped"]["user"]["is_console_user"],
        false
    );
    (out, records)
}

fn last_run(ws: &Workspace) -> (String, Option<i64>) {
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    conn.query_row(
        "SELECT status, finished_at FROM runs ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Polls the store until a run is recorded as running (the sync has the lock and began).
async fn wait_until_running(ws: &Workspace) {
    for _ in 0..200 {
        if let Ok(conn) = rusqlite::Connection::open(ws.store()) {
            let running: rusqlite::Result<i64> = conn.query_row(
                "SELECT COUNT(*) FROM runs WHERE status = 'running'",
                [],
                |r| r.get(0),
            );
            if running.is_ok_and(|n| n > 0) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sync never started");
}

/// A credential report older than `report_max_age_secs` (moto's always says 2015) whose rows lag
/// behind IAM: console access and a hardware MFA device are asked of IAM, never taken as "no".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_report_never_turns_into_a_false_no() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    seed_user(
        &iam,
        &Seed {
            name: "gina",
            path: "/engineering/",
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
    // alice has a console password and ci-deploy none (seed_standard); the report says the
    // opposite, and it does not know gina's hardware device yet.
    let edits = vec![
        ("alice".into(), "password_enabled".into(), "false".into()),
        ("ci-deploy".into(), "password_enabled".into(), "true".into()),
        ("gina".into(), "mfa_active".into(), "false".into()),
    ];
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            report_edits: edits,
            ..Default::default()
        },
    )
    .await;
    let (out, records) = bulk_sync_past_the_lagging_report(&proxy.endpoint, "").await;
    assert_eq!(user(&records, "gina")["user"]["has_mfa"], true);
    // One GetLoginProfile per user; the extra calls are counted in the summary.
    let users = records.len() as u64;
    assert_eq!(proxy.calls()["GetLoginProfile"], users);
    assert!(out.stderr.contains("fresh checks"), "{}", out.stderr);

    // The same report when it is young enough to vouch for itself is trusted as it is: no
    // per-user login-profile calls (what the freshness rule trades).
    let before = proxy.calls().get("GetLoginProfile").copied().unwrap_or(0);
    let ws2 = Workspace::new();
    let cfg2 = ws2.config(&format!(
        "{}[collect]\nstrategy = \"bulk\"\nreport_max_age_secs = 2000000000\n",
        aws_section(&proxy.endpoint, "/engineering/")
    ));
    let fresh = ws2.run(&cfg2, &["sync"], &[]).await;
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    assert_eq!(proxy.calls()["GetLoginProfile"], before);
    assert!(!fresh.stderr.contains("fresh checks"), "{}", fresh.stderr);
}

/// In `auto`, what only bulk needs (GAAD, the credential report) must not fail an account that
/// per-user calls can collect; in `bulk` it does fail, as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_degrades_to_per_user_in_auto_and_fails_in_bulk() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let per_user = {
        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "{}[collect]\nstrategy = \"per-user\"\n",
            aws_section(&moto.endpoint, "/")
        ));
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        comparable(out.json_lines())
    };
    let cases = [
        (
            Rules {
                deny_actions: vec![("GetAccountAuthorizationDetails".into(), None)],
                ..Default::default()
            },
            "iam:GetAccountAuthorizationDetails is not allowed",
            "AccessDenied on iam:GetAccountAuthorizationDetails",
        ),
        (
            Rules {
                deny_actions: vec![("GetCredentialReport".into(), None)],
                ..Default::default()
            },
            "iam:GetCredentialReport is not allowed",
            "AccessDenied on iam:GetCredentialReport",
        ),
        (
            Rules {
                report_never_ready: true,
                ..Default::default()
            },
            "the credential report was not ready in time",
            "not ready after 2s",
        ),
    ];
    for (rules, fallback_reason, bulk_error) in cases {
        let proxy = Proxy::start(&moto.endpoint, rules).await;
        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "{}[collect]\nstrategy = \"auto\"\nbulk_threshold = 0\nreport_wait_secs = 2\n",
            aws_section(&proxy.endpoint, "/")
        ));
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "ok (per-user, bulk unavailable: {fallback_reason}"
            )),
            "{}",
            out.stderr
        );
        assert_eq!(comparable(out.json_lines()), per_user, "{fallback_reason}");

        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "{}[collect]\nstrategy = \"bulk\"\nreport_wait_secs = 2\n",
            aws_section(&proxy.endpoint, "/")
        ));
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains(bulk_error), "{}", out.stderr);
    }
}

/// A call that keeps failing for one user fails that account in both strategies: nothing is
/// changed, nothing deleted, no "no MFA".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_per_user_failure_fails_the_account_and_changes_nothing() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    for strategy in ["per-user", "bulk"] {
        let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
        let ws = Workspace::new();
        let cfg = ws.config(&format!(
            "{}[collect]\nstrategy = \"{strategy}\"\n",
            aws_section(&proxy.endpoint, "/")
        ));
        assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
        let before = ws.run(&cfg, &["export"], &[]).await.stdout;
        let changes_before = ws
            .run(&cfg, &["changes", "--format", "json"], &[])
            .await
            .json_lines()
            .len();
        proxy.set_rules(Rules {
            // carol has no virtual MFA device: both strategies ask ListMFADevices about her.
            deny_actions: vec![("ListMFADevices".into(), Some("carol".into()))],
            ..Default::default()
        });
        let out = ws.run(&cfg, &["sync"], &[]).await;
        assert_eq!(out.code, 2, "{strategy}: {}", out.stderr);
        assert!(
            out.stderr.contains("AccessDenied on iam:ListMFADevices"),
            "{strategy}: {}",
            out.stderr
        );
        assert_eq!(ws.run(&cfg, &["export"], &[]).await.stdout, before);
        assert_eq!(
            ws.run(&cfg, &["changes", "--format", "json"], &[])
                .await
                .json_lines()
                .len(),
            changes_before,
            "{strategy}: a failed account writes no change"
        );
    }
}

/// A store failure in the middle of a sync ends its run as `failed` (not `running` forever); the
/// next sync, with the store healthy again, records what the failed one could not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_mid_run_ends_the_run_as_failed() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/"));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    // The change log refuses writes, as a full disk would.
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER full BEFORE INSERT ON changes BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    retag(&iam, "alice", "moved").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        last_line(&out.stderr).contains("disk is full"),
        "{}",
        out.stderr
    );
    let (status, finished) = last_run(&ws);
    assert_eq!(status, "failed");
    assert!(finished.is_some());
    conn.execute_batch("DROP TRIGGER full;").unwrap();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("updated 1"), "{}", out.stderr);
}

/// SIGTERM stops a `sync` at its next safe point: the run is recorded as interrupted, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_sync_at_a_safe_point() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            delay: Duration::from_millis(150),
            ..Default::default()
        },
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[collect]\nstrategy = \"per-user\"\nuser_concurrency = 1\n",
        aws_section(&proxy.endpoint, "/")
    ));
    let child = ws.command(&cfg, &["sync"], &[]).spawn().unwrap();
    wait_until_running(&ws).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stopping at the next safe point"),
        "{stderr}"
    );
    assert_eq!(last_run(&ws).0, "interrupted");
}

/// One sync per store at a time: a second `sync` waits for the first, and past its wait gives up
/// naming the process that holds the store. The first is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_on_the_same_store_waits_then_names_the_holder() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            delay: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[collect]\nstrategy = \"per-user\"\nuser_concurrency = 1\n",
        aws_section(&proxy.endpoint, "/")
    ));
    let first = ws.command(&cfg, &["sync"], &[]).spawn().unwrap();
    let first_pid = first.id().unwrap();
    wait_until_running(&ws).await;
    let second = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__STORE__LOCK_WAIT_SECS", "1")],
        )
        .await;
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        last_line(&second.stderr).contains(&format!("in use by pid {first_pid}")),
        "{}",
        second.stderr
    );
    let first = first.wait_with_output().await.unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The store is free again: a later sync runs (with a default wait it would also have waited).
    let again = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let statuses: Vec<String> = conn
        .prepare("SELECT status FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(statuses, ["ok", "ok"], "the refused sync recorded no run");
}

/// An account that left the configuration is retired, not deleted; one that only failed to
/// connect is still in scope and keeps its users. Each role is assumed once per sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_that_leave_the_config_are_retired_and_failing_ones_are_kept() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let other = moto.iam_in(OTHER).await;
    for name in ["o1", "o2"] {
        seed_user(
            &other,
            &Seed {
                name,
                path: "/",
                ..Default::default()
            },
        )
        .await;
    }
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let ws = Workspace::new();
    let with_role = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n",
        aws_section(&proxy.endpoint, "/"),
        role_arn(OTHER)
    ));
    let out = ws.run(&with_role, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json_lines().len(), 8);
    assert_eq!(proxy.calls()["AssumeRole"], 1, "one AssumeRole per role");

    // The role fails: its account is still configured, so nothing of it is retired or deleted.
    proxy.set_rules(Rules {
        deny_assume_role: vec![role_arn(OTHER)],
        ..Default::default()
    });
    let out = ws.run(&with_role, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("retired 0"), "{}", out.stderr);
    assert_eq!(
        ws.run(&with_role, &["export"], &[])
            .await
            .json_lines()
            .len(),
        8
    );

    // The role leaves the config: its users are retired.
    proxy.set_rules(Rules::default());
    let without = ws.config(&aws_section(&proxy.endpoint, "/"));
    let out = ws.run(&without, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "account {OTHER}: no longer in the configuration; retired 2 users"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("deleted 0, retired 2"),
        "{}",
        out.stderr
    );
    let export = ws.run(&without, &["export"], &[]).await.json_lines();
    assert!(names(&export).iter().all(|n| n != "o1" && n != "o2"));
    let changes = ws
        .run(
            &without,
            &["changes", "--account", OTHER, "--format", "json"],
            &[],
        )
        .await
        .json_lines();
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "created", "retired", "retired"]);
}

/// A record the receiver refuses (422 for any batch that carries it) no longer holds back its
/// batch: the batch is bisected, the rest delivered, the record named and held back until its
/// content changes. A 413 halves batches until they fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_isolated_and_held_back_until_it_changes() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let rx = Receiver::start().await;
    rx.poison(&["bob"]);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"siem\"\nurl = \"{}\"\nbatch_size = 100\n",
        aws_section(&moto.endpoint, "/"),
        rx.url
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(
        out.code, 2,
        "a sync that hit a rejection is partial: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("rejected bob (arn:aws:iam::123456789012:user/engineering/bob): HTTP 422"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sent 6, acknowledged 5, pending 0, rejected 1"),
        "{}",
        out.stderr
    );
    let acked = rx.acknowledged_uids();
    assert_eq!(acked.len(), 5);
    assert!(acked.iter().all(|u| !u.ends_with("/bob")));

    // Next sync: bob is not sent again (same content), and still counted as rejected.
    rx.clear();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(rx.received().is_empty());
    assert!(
        out.stderr.contains("pending 0, rejected 1"),
        "{}",
        out.stderr
    );

    // bob changes and the receiver is fixed: he is sent and acknowledged.
    rx.poison(&[]);
    retag(&iam, "bob", "fixed").await;
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rx.acknowledged_uids().len(), 1);
    assert!(out.stderr.contains("rejected 0"), "{}", out.stderr);

    // 413: a receiver that takes at most 2 records a request gets everything in halves.
    let small = Receiver::start().await;
    small.max_records(Some(2));
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"small\"\nurl = \"{}\"\nbatch_size = 6\n",
        aws_section(&moto.endpoint, "/"),
        small.url
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(small.acknowledged_uids().len(), 6);
    assert!(
        small
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.records.len() <= 2)
    );
}

/// A receiver that refuses everything (400 to every request) is refusing the batch, not each
/// record: nothing is held back, everything stays pending and goes once the receiver is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_refuses_everything_holds_nothing_back() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let rx = Receiver::start().await;
    rx.set_default(400);
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"siem\"\nurl = \"{}\"\n",
        aws_section(&moto.endpoint, "/"),
        rx.url
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("refused every one of 6 records"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("pending 6, rejected 0"),
        "{}",
        out.stderr
    );
    rx.set_default(200);
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rx.acknowledged_uids().len(), 6);
}

/// A process killed mid-write leaves a torn last line; the next sync cuts it before appending,
/// so every line of the file is one whole record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_repairs_a_torn_last_line() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let ws = Workspace::new();
    let file = ws.path("out/records.ndjson");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "{\"time\":1,\"user\":{\"na").unwrap();
    let cfg = ws.config(&format!(
        "{}[[sinks]]\nname = \"local\"\ntype = \"file\"\npath = {:?}\n",
        aws_section(&moto.endpoint, "/"),
        file.display().to_string()
    ));
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect();
    assert_eq!(records.len(), 6);
    records.iter().for_each(assert_valid);
}

/// GovCloud (and China): role ARNs and record ARNs carry the partition the account lives in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_works() {
    let moto = Moto::start();
    // moto picks the partition from the signing region and keeps each partition's IAM apart.
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-gov-west-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let sts = aws_sdk_sts::Client::new(&conf);
    let gov_role = format!("arn:aws-us-gov:iam::{OTHER}:role/IamInventoryReader");
    let creds = sts
        .assume_role()
        .role_arn(&gov_role)
        .role_session_name("seed")
        .send()
        .await
        .unwrap();
    let c = creds.credentials().unwrap();
    let other = aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(&conf)
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                None,
                "assumed",
            ))
            .build(),
    );
    for (iam, name) in [(aws_sdk_iam::Client::new(&conf), "gov-a"), (other, "gov-b")] {
        seed_user(
            &iam,
            &Seed {
                name,
                path: "/",
                active_keys: 1,
                ..Default::default()
            },
        )
        .await;
    }
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "[aws]\nregion = \"us-gov-west-1\"\nendpoint_url = \"{}\"\nmax_attempts = 3\n[[aws.roles]]\narn = \"{gov_role}\"\n",
        moto.endpoint
    ));
    let out = ws
        .run(&cfg, &["sync"], &[("AWS_REGION", "us-gov-west-1")])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = out.json_lines();
    assert_eq!(names(&records), ["gov-a", "gov-b"]);
    for (r, account) in records.iter().zip([CALLER_ACCOUNT, OTHER]) {
        assert_valid(r);
        let uid = r["user"]["uid"].as_str().unwrap();
        assert!(
            uid.starts_with(&format!("arn:aws-us-gov:iam::{account}:user/")),
            "{uid}"
        );
    }
}

/// `export | head -1` and `check-config | head -1`: a reader that stops early is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/"));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    for args in [&["export"][..], &["check-config"][..]] {
        let mut child = ws.command(&cfg, args, &[]).spawn().unwrap();
        // Close the reading end before the command writes: its first write hits a broken pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// With an events source, an older report is checked only where CloudTrail says something
/// changed since it; if CloudTrail cannot answer, everyone is checked as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_events_source_only_users_cloudtrail_names_are_checked_against_an_older_report() {
    use crate::support::cloudtrail::{CloudTrail, TrailEvent};
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    // The report lags behind IAM for alice and ci-deploy, whose changes CloudTrail recorded.
    let edits = vec![
        ("alice".into(), "password_enabled".into(), "false".into()),
        ("ci-deploy".into(), "password_enabled".into(), "true".into()),
    ];
    let rules = Rules {
        report_edits: edits,
        ..Default::default()
    };
    let proxy = Proxy::start(&moto.endpoint, rules.clone()).await;
    let trail = CloudTrail::new();
    for (name, event) in [
        ("alice", "CreateLoginProfile"),
        ("ci-deploy", "DeleteLoginProfile"),
    ] {
        trail.record(TrailEvent::by_role(
            crate::support::moto::CALLER_ACCOUNT,
            "Admin",
            "jane",
            event,
            serde_json::json!({"userName": name}),
        ));
    }
    proxy.attach_cloudtrail(&trail);
    bulk_sync_past_the_lagging_report(&proxy.endpoint, EVENTS_SOURCE).await;
    assert_eq!(
        proxy.calls()["GetLoginProfile"],
        2,
        "only the two users CloudTrail names: {:?}",
        proxy.calls()
    );
    assert_eq!(proxy.calls()["LookupEvents"], 1);

    // CloudTrail refuses: every user is checked, and the records are still right.
    let proxy = Proxy::start(
        &moto.endpoint,
        Rules {
            deny_json_target: Some("LookupEvents".into()),
            ..rules
        },
    )
    .await;
    let (_, records) = bulk_sync_past_the_lagging_report(&proxy.endpoint, EVENTS_SOURCE).await;
    assert_eq!(proxy.calls()["GetLoginProfile"], records.len() as u64);
}

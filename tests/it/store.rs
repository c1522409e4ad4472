//! The snapshot, the change log, crash safety and store errors.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{aws_section, names, retag, seed_standard};
use crate::support::cli::{Workspace, last_line};
use crate::support::moto::{Moto, Seed, role_arn, seed_user};
use crate::support::proxy::{Proxy, Rules};

fn fields(change: &Value) -> Vec<(String, Value, Value)> {
    change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["old"].clone(),
                f["new"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_iam_change_gives_exactly_the_expected_change_rows() {
    let moto = Moto::start();
    let iam = moto.iam().await;
    seed_standard(&iam).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/engineering/"));

    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    let first = ws
        .run(&cfg, &["changes", "--format", "json"], &[])
        .await
        .json_lines();
    assert_eq!(first.len(), 4);
    assert!(
        first
            .iter()
            .all(|c| c["kind"] == "created" && c["run_id"] == 1)
    );

    // Unchanged: nothing recorded.
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    assert_eq!(
        ws.run(&cfg, &["changes", "--format", "json"], &[])
            .await
            .json_lines()
            .len(),
        4
    );

    // One of each: a new user, a changed tag, a new key, lost MFA, removed console access, a deleted user.
    seed_user(
        &iam,
        &Seed {
            name: "dave",
            path: "/engineering/contractors/",
            ..Default::default()
        },
    )
    .await;
    retag(&iam, "alice", "security").await;
    let new_key = iam
        .create_access_key()
        .user_name("carol")
        .send()
        .await
        .unwrap();
    let new_key = new_key.access_key().unwrap().access_key_id().to_string();
    iam.delete_login_profile()
        .user_name("carol")
        .send()
        .await
        .unwrap();
    iam.deactivate_mfa_device()
        .user_name("bob")
        .serial_number("arn:aws:iam::123456789012:mfa/bob")
        .send()
        .await
        .unwrap();
    let keys = iam
        .list_access_keys()
        .user_name("ci-deploy")
        .send()
        .await
        .unwrap();
    for k in keys.access_key_metadata() {
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
        out.stderr.contains("created 1, updated 3, deleted 1"),
        "{}",
        out.stderr
    );

    let all = ws
        .run(&cfg, &["changes", "--format", "json"], &[])
        .await
        .json_lines();
    let third: Vec<&Value> = all.iter().filter(|c| c["run_id"] == 3).collect();
    let mut summary: Vec<(String, String)> = third
        .iter()
        .map(|c| {
            (
                c["user"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [
            ("alice", "updated"),
            ("bob", "updated"),
            ("carol", "updated"),
            ("ci-deploy", "deleted"),
            ("dave", "created")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let get = |name: &str| third.iter().find(|c| c["user"] == name).unwrap();

    assert_eq!(
        fields(get("alice")),
        [(
            "user.ldap_person.tags[team].value".to_string(),
            json!("platform"),
            json!("security")
        )]
    );

    let bob = fields(get("bob"));
    assert_eq!(bob.len(), 2, "{bob:?}");
    assert_eq!(
        bob[0].0,
        "unmapped.user.mfa_devices[arn:aws:iam::123456789012:mfa/bob]"
    );
    assert_eq!(bob[0].2, Value::Null);
    assert_eq!(
        bob[1],
        ("user.has_mfa".to_string(), json!(true), json!(false))
    );

    let carol = fields(get("carol"));
    let paths: Vec<&str> = carol.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("unmapped.user.access_keys[{new_key}]"),
            "unmapped.user.is_console_user".to_string(),
            format!("user.programmatic_credentials[{new_key}]"),
        ]
    );
    assert_eq!(carol[1].1, json!(true));
    assert_eq!(carol[1].2, json!(false));
    assert_eq!(carol[2].1, Value::Null);
    assert_eq!(carol[2].2["uid"], json!(new_key));

    assert!(get("ci-deploy")["fields"].as_array().unwrap().is_empty());
    assert_eq!(
        get("ci-deploy")["uid"],
        "arn:aws:iam::123456789012:user/engineering/automation/ci-deploy"
    );

    // Filters.
    let alice_only = ws
        .run(
            &cfg,
            &["changes", "--format", "json", "--user", "alice"],
            &[],
        )
        .await
        .json_lines();
    assert_eq!(alice_only.len(), 2);
    let by_arn = ws
        .run(
            &cfg,
            &[
                "changes",
                "--format",
                "json",
                "--user",
                "arn:aws:iam::123456789012:user/engineering/alice",
            ],
            &[],
        )
        .await
        .json_lines();
    assert_eq!(by_arn, alice_only);
    let other_account = ws
        .run(&cfg, &["changes", "--account", "999999999999"], &[])
        .await;
    assert_eq!(other_account.stdout, "no changes\n");
    let future = ws
        .run(
            &cfg,
            &[
                "changes",
                "--since",
                "2999-01-01T00:00:00Z",
                "--format",
                "json",
            ],
            &[],
        )
        .await;
    assert_eq!(future.stdout, "");
    let recent = ws
        .run(&cfg, &["changes", "--since", "1h", "--format", "json"], &[])
        .await;
    assert_eq!(recent.json_lines().len(), all.len());
    let bad_since = ws
        .run(&cfg, &["changes", "--since", "yesterday"], &[])
        .await;
    assert_eq!(bad_since.code, 1);
    assert!(last_line(&bad_since.stderr).contains("--since"));

    // The table is for people: kinds, names and arrows.
    let table = ws.run(&cfg, &["changes", "--user", "bob"], &[]).await;
    assert!(
        table.stdout.contains("updated") && table.stdout.contains("~ user.has_mfa: true → false"),
        "{}",
        table.stdout
    );

    let export = ws.run(&cfg, &["export"], &[]).await.json_lines();
    assert_eq!(names(&export), ["alice", "bob", "carol", "dave"]);
}

/// Users outside a narrowed prefix were not asked about: they are retired (out of the snapshot and
/// `export`, logged as `retired`), never reported as deleted; widening the prefix brings them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_outside_a_narrowed_prefix_are_retired_not_deleted() {
    let moto = Moto::start();
    seed_standard(&moto.iam().await).await;
    let ws = Workspace::new();
    let cfg = ws.config(&aws_section(&moto.endpoint, "/"));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    let narrow = ws
        .run(
            &cfg,
            &["sync"],
            &[("IAM_INVENTORY__AWS__PATH_PREFIX", "/finance/")],
        )
        .await;
    assert_eq!(narrow.code, 0, "{}", narrow.stderr);
    assert!(
        narrow.stderr.contains("deleted 0, retired 5"),
        "{}",
        narrow.stderr
    );
    let export = ws.run(&cfg, &["export"], &[]).await.json_lines();
    assert!(
        export
            .iter()
            .all(|r| r["unmapped"]["user"]["path"] == "/finance/"),
        "only the users under the prefix stay exported: {:?}",
        names(&export)
    );
    let kinds: Vec<(String, String)> = ws
        .run(&cfg, &["changes", "--format", "json"], &[])
        .await
        .json_lines()
        .iter()
        // erin's record changed too (its provenance names the prefix that collected it).
        .filter(|c| c["kind"] != "created" && c["kind"] != "updated")
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert!(kinds.iter().all(|(k, _)| k == "retired"), "{kinds:?}");
    // Back to the whole account: the retired users are collected again, as new.
    let wide = ws.run(&cfg, &["sync"], &[]).await;
    assert!(
        wide.stderr
            .contains("created 5, updated 1, deleted 0, retired 0"),
        "{}",
        wide.stderr
    );
    assert_eq!(ws.run(&cfg, &["export"], &[]).await.json_lines().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_mid_run_leaves_a_consistent_store_that_the_next_sync_completes() {
    const OTHER: &str = "210987654321";
    let moto = Moto::start();
    let caller = moto.iam().await;
    let other = moto.iam_in(OTHER).await;
    seed_standard(&caller).await;
    for i in 0..12 {
        let name = format!("svc-{i:02}");
        seed_user(
            &other,
            &Seed {
                name: &name,
                path: "/engineering/",
                active_keys: 1,
                ..Default::default()
            },
        )
        .await;
    }
    let proxy = Proxy::start(&moto.endpoint, Rules::default()).await;
    let ws = Workspace::new();
    let cfg = ws.config(&format!(
        "{}[[aws.roles]]\narn = \"{}\"\n[collect]\naccount_concurrency = 1\nuser_concurrency = 1\n",
        aws_section(&proxy.endpoint, "/engineering/"),
        role_arn(OTHER)
    ));
    assert_eq!(ws.run(&cfg, &["sync"], &[]).await.code, 0);
    let baseline = names(&ws.run(&cfg, &["export"], &[]).await.json_lines());
    assert_eq!(baseline.len(), 16);

    // Change both accounts, then slow every IAM call so the second account is mid-collection when
    // the first has committed; kill -9 then.
    seed_user(
        &caller,
        &Seed {
            name: "dave",
            path: "/engineering/",
            ..Default::default()
        },
    )
    .await;
    seed_user(
        &other,
        &Seed {
            name: "svc-new",
            path: "/engineering/",
            ..Default::default()
        },
    )
    .await;
    other
        .delete_access_key()
        .user_name("svc-00")
        .access_key_id(
            other
                .list_access_keys()
                .user_name("svc-00")
                .send()
                .await
                .unwrap()
                .access_key_metadata()[0]
                .access_key_id()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    other
        .delete_user()
        .user_name("svc-00")
        .send()
        .await
        .unwrap();
    proxy.set_rules(Rules {
        delay: Duration::from_millis(150),
        ..Default::default()
    });

    let mut child = ws.command(&cfg, &["sync"], &[]).spawn().unwrap();
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let mut committed = false;
    for _ in 0..600 {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM run_accounts WHERE run_id = 2",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if n == 1 {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        committed,
        "the first account should commit while the second is still collecting"
    );
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    drop(conn);

    // Consistent: the caller's account is fully new, the other fully old (svc-00 not deleted, svc-new absent).
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let mid = names(&ws.run(&cfg, &["export"], &[]).await.json_lines());
    assert!(mid.contains(&"dave".to_string()));
    assert!(
        mid.contains(&"svc-00".to_string()) && !mid.contains(&"svc-new".to_string()),
        "{mid:?}"
    );
    assert_eq!(mid.len(), 17);

    proxy.set_rules(Rules::default());
    let next = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(next.code, 0, "{}", next.stderr);
    let done = names(&ws.run(&cfg, &["export"], &[]).await.json_lines());
    assert!(!done.contains(&"svc-00".to_string()) && done.contains(&"svc-new".to_string()));
    assert_eq!(done.len(), 17);
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let status: String = conn
        .query_row("SELECT status FROM runs WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");
    // The killed run's account write for the caller is logged once, not twice.
    let dave: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM changes WHERE user_name = 'dave'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dave, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_unusable_store_is_a_clear_one_line_error() {
    let ws = Workspace::new();
    std::fs::write(ws.path("garbage.db"), vec![b'x'; 4096]).unwrap();
    std::fs::write(ws.path("a-file"), b"not a folder").unwrap();
    let cases = [
        (ws.path("garbage.db"), "not a readable iam-inventory store"),
        (ws.path("a-file/store.db"), "cannot create folder"),
        // A location nobody can write, root included (tests run as root, so file modes prove nothing).
        (
            std::path::PathBuf::from("/proc/iam-inventory.db"),
            "cannot open",
        ),
    ];
    for (path, expected) in cases {
        let cfg = ws.config(&format!(
            "[aws]\nendpoint_url = \"http://127.0.0.1:1\"\nmax_attempts = 1\n[store]\npath = {:?}\n",
            path.display().to_string()
        ));
        for cmd in [&["sync"][..], &["export"], &["changes"]] {
            let out = ws.run(&cfg, cmd, &[]).await;
            assert_eq!(out.code, 1, "{cmd:?}: {}", out.stderr);
            let line = last_line(&out.stderr);
            assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
            assert!(
                line.contains(&path.display().to_string()),
                "names the store: {line}"
            );
            if cmd == ["sync"] {
                assert!(line.contains(expected), "{line}");
            }
        }
    }
    let cfg = ws.config(&format!(
        "[store]\npath = {:?}\n",
        ws.path("never-synced.db").display().to_string()
    ));
    let out = ws.run(&cfg, &["export"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(
        last_line(&out.stderr).contains("run `iam-inventory sync` first"),
        "{}",
        out.stderr
    );
    // A store from a newer version is refused.
    let newer = ws.path("newer.db");
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let cfg = ws.config(&format!(
        "[store]\npath = {:?}\n",
        newer.display().to_string()
    ));
    let out = ws.run(&cfg, &["export"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(
        last_line(&out.stderr).contains("newer iam-inventory"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_runs_whose_process_is_gone_are_marked_interrupted_and_old_stores_migrate() {
    let ws = Workspace::new();
    // A store at schema 1, as the first release wrote it, with two runs left `running`.
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    conn.execute_batch(include_str!("../../migrations/0001_init.sql"))
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn.execute(
        "INSERT INTO runs (id, started_at, status) VALUES (1, 1, 'running')",
        [],
    )
    .unwrap();
    drop(conn);
    let cfg = ws.config("[aws]\nendpoint_url = \"http://127.0.0.1:1\"\nmax_attempts = 1\n");
    let export = ws.run(&cfg, &["export"], &[]).await;
    assert_eq!(export.code, 1);
    assert!(
        last_line(&export.stderr).contains("needs migrating"),
        "{}",
        export.stderr
    );

    // A dry run works on a migrated in-memory copy and leaves the file at schema 1.
    let dry = ws.run(&cfg, &["sync", "--dry-run"], &[]).await;
    assert_eq!(
        dry.code, 2,
        "no AWS, but the dry run itself works: {}",
        dry.stderr
    );
    let v1: i64 = rusqlite::Connection::open(ws.store())
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v1, 1);

    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(
        out.code, 2,
        "the account fails (no AWS), the store migrates: {}",
        out.stderr
    );
    let conn = rusqlite::Connection::open(ws.store()).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 8, "every migration applied");
    let status = |id: i64| -> String {
        conn.query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        status(1),
        "interrupted",
        "a pre-migration run has no owner left"
    );

    // A run owned by a live process on this host (this test) is left alone; a dead one is not.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let me = i64::from(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    conn.execute(
        "INSERT INTO runs (id, started_at, status, pid, host) VALUES (10, ?3, 'running', ?1, ?2)",
        rusqlite::params![me, host, now],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO runs (id, started_at, status, pid, host) VALUES (11, ?3, 'running', ?1, ?2)",
        rusqlite::params![i64::from(i32::MAX), host, now],
    )
    .unwrap();
    // A live pid, but a run older than a day: a reused pid, not our run.
    conn.execute(
        "INSERT INTO runs (id, started_at, status, pid, host) VALUES (12, 1, 'running', ?1, ?2)",
        rusqlite::params![me, host],
    )
    .unwrap();
    let out = ws.run(&cfg, &["sync"], &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(status(10), "running");
    assert_eq!(status(11), "interrupted");
    assert_eq!(status(12), "interrupted");
}

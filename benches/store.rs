//! Store/diff benchmark: synthetic users (no AWS) through transform + diff + store, as a first
//! sync, an unchanged re-sync and a re-sync where only last-used times moved, against the targets
//! of the issue as the baseline. Users are spread over accounts, one transaction per account, as a
//! sync writes them.
//! `cargo bench --bench store` (100,000 users in one account);
//! `BENCH_USERS=1000000 BENCH_ACCOUNTS=1000 cargo bench --bench store` (the 1,000 × 1,000 case).

mod common;

use std::time::Instant;

use iam_inventory::pipeline::{peak_rss_bytes, write_account};
use iam_inventory::store::{OpenMode, Store};

fn main() {
    let env = common::env_usize;
    let n = env("BENCH_USERS", 100_000);
    let accounts = env("BENCH_ACCOUNTS", 1).max(1);
    let per_account = n.div_ceil(accounts);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.db"), OpenMode::ReadWrite).expect("store");
    println!(
        "store benchmark: {n} synthetic users in {accounts} account(s) ({})",
        common::machine()
    );

    // What the store costs apart from building the records: transform and hash alone.
    {
        let account = common::synthetic_account("123456789012", per_account.min(100_000), 0);
        let started = Instant::now();
        let mut bytes = 0usize;
        for u in &account.users {
            let rec = iam_inventory::store::PreparedRecord::from_record(
                iam_inventory::transform::to_ocsf(u, &account.provenance, 1),
            );
            bytes += rec.record_hash.len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "build + hash every record: {:.2} µs per user ({bytes} hash bytes)",
            secs * 1e6 / account.users.len() as f64
        );
    }
    // Targets: the (< 3 s first, < 0.5 s unchanged at 100k; < 30 s and < 5 s at 1M),
    // scaled to the user count.
    let scale = n as f64 / 100_000.0;
    println!(
        "{:<22} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "phase", "seconds", "users/s", "peak RSS", "target", "then ckpt s"
    );
    let phases = [
        ("first sync (creates)", 0u64, 3.0 * scale),
        ("unchanged re-sync", 0, 0.5 * scale),
        ("volatile-only re-sync", 1, 5.0 * scale),
    ];
    for (i, (label, generation, target_secs)) in phases.into_iter().enumerate() {
        let started = Instant::now();
        let run_id = store
            .begin_run(iam_inventory::clock::now_ms())
            .expect("run");
        let (mut created, mut other) = (0, 0);
        // Making the synthetic users is not the store's work: timed apart and left out.
        let mut generating = std::time::Duration::ZERO;
        for a in 0..accounts {
            let id = format!("{:012}", 100_000_000_000u64 + a as u64);
            let count = per_account.min(n - a * per_account);
            let made = Instant::now();
            let account = common::synthetic_account(&id, count, generation);
            generating += made.elapsed();
            let outcome = write_account(&store, run_id, account, false).expect("write");
            created += outcome.created;
            other += outcome.updated + outcome.deleted;
        }
        let secs = (started.elapsed() - generating).as_secs_f64();
        // The WAL checkpoints this phase left to the background thread, waited for apart so they
        // do not land in the next phase's figure.
        let settling = Instant::now();
        store.settle();
        let checkpoint = settling.elapsed().as_secs_f64();
        println!(
            "{:<22} {:>10.2} {:>12.0} {:>12} {:>12} {:>12.2}",
            label,
            secs,
            n as f64 / secs,
            common::mib(peak_rss_bytes()),
            format!("< {target_secs:.1} s"),
            checkpoint,
        );
        if i == 0 {
            let size = |ext: &str| {
                std::fs::metadata(dir.path().join(format!("bench.db{ext}")))
                    .map(|m| m.len())
                    .unwrap_or(0)
            };
            let (db, wal) = (size(""), size("-wal"));
            println!(
                "{:<22} {:>10} {:>12}",
                "  store file",
                format!("{} + {} MiB", db >> 20, wal >> 20),
                format!("{} B/user", (db + wal) / n as u64)
            );
        }
        let expected_created = if i == 0 { n } else { 0 };
        assert_eq!(created, expected_created);
        assert_eq!(other, 0);
    }
    // The day the first sync's change rows pass `store.changes_retention_days`: every one goes,
    // with its record (the snapshot has its own since last-used times moved).
    let started = Instant::now();
    let (pruned, _) = store.prune_changes(i64::MAX, &[]).expect("prune");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<22} {:>10.2} {:>12.0} {:>12}",
        "prune the change log",
        secs,
        pruned as f64 / secs,
        common::mib(peak_rss_bytes()),
    );
    assert_eq!(pruned as usize, n - 1, "all but the newest row");
    println!("peak RSS target: < 300 MiB");
}

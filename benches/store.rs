//! Store/diff benchmark: 100,000 synthetic users (no AWS) through transform + diff + store, as a
//! first sync and as an unchanged re-sync, against the targets of the issue as the baseline.
//! `cargo bench --bench store` (BENCH_USERS to change the count).

mod common;

use std::time::Instant;

use iam_inventory::pipeline::{peak_rss_bytes, write_account};
use iam_inventory::store::{OpenMode, Store};

fn main() {
    let n: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.db"), OpenMode::ReadWrite).expect("store");
    println!(
        "store benchmark: {n} synthetic users, one account ({})",
        common::machine()
    );
    println!(
        "{:<22} {:>10} {:>12} {:>12} {:>12}",
        "phase", "seconds", "users/s", "peak RSS", "target"
    );

    // What the store costs apart from building the records: transform and hash alone.
    {
        let account = common::synthetic_account("123456789012", n, 0);
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
            "{:<22} {:>10.2} {:>12.0} {:>12} {:>12}",
            "transform + hash only",
            secs,
            n as f64 / secs,
            common::mib(peak_rss_bytes()),
            format!("({bytes} B)"),
        );
    }
    let phases = [
        ("first sync (creates)", 0u64, 15.0),
        ("unchanged re-sync", 0, 5.0),
        ("volatile-only re-sync", 1, 5.0),
    ];
    for (i, (label, generation, target_secs)) in phases.into_iter().enumerate() {
        let account = common::synthetic_account("123456789012", n, generation);
        let started = Instant::now();
        let run_id = store
            .begin_run(iam_inventory::clock::now_ms())
            .expect("run");
        let outcome = write_account(&store, run_id, account, false).expect("write");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<22} {:>10.2} {:>12.0} {:>12} {:>12}",
            label,
            secs,
            n as f64 / secs,
            common::mib(peak_rss_bytes()),
            format!("< {target_secs:.0} s"),
        );
        let expected_created = if i == 0 { n } else { 0 };
        assert_eq!(outcome.created, expected_created);
        assert_eq!(outcome.updated + outcome.deleted, 0);
    }
    println!("peak RSS target: < 250 MiB");
}

//! `/healthz` while a million-user sync writes the store and delivers: the daemon's own HTTP
//! endpoints (`daemon::http_app`) on a runtime built like the daemon's (`#[tokio::main]`: one
//! worker per core), probed every 50 ms from a thread outside it, while the pipeline's store stage
//! (`write_account` on `spawn_blocking`, one account at a time, as `pipeline::record` does) and then
//! `deliver_all` to a local HTTP sink run on the same runtime. Baseline: the same probes on the idle
//! daemon. Collection itself is network-bound and is measured against moto in `benches/accounts.rs`
//! (which also probes `/healthz` during a 1,000-account daemon sync); no AWS here.
//! `cargo bench --bench health` (1,000,000 users in 1,000 accounts; BENCH_USERS / BENCH_ACCOUNTS).

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iam_inventory::clock::now_ms;
use iam_inventory::config::Config;
use iam_inventory::daemon::{DaemonState, http_app};
use iam_inventory::deliver::deliver_all;
use iam_inventory::pipeline::{peak_rss_bytes, write_account};
use iam_inventory::store::{OpenMode, Store};

/// One GET /healthz on a fresh connection (as a kubelet probe does): its latency.
fn probe(addr: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /healthz");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read /healthz");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    started.elapsed()
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let n = common::env_usize("BENCH_USERS", 1_000_000);
    let accounts = common::env_usize("BENCH_ACCOUNTS", 1000).max(1);
    let per_account = n.div_ceil(accounts);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(Store::open(&dir.path().join("bench.db"), OpenMode::ReadWrite).expect("store"));
    println!(
        "/healthz benchmark: {n} synthetic users in {accounts} accounts, store + delivery on the daemon's runtime ({})",
        common::machine()
    );

    let (health_addr, sink_url) = runtime.block_on(async {
        let cron = iam_inventory::schedule::parse_cron("0 0 2 * * *").expect("cron");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = http_app(Arc::new(DaemonState::new(cron)));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (url, _) = common::receiver().await;
        (addr, url)
    });

    // The prober: its own thread, so it measures the runtime, not itself.
    let samples: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (samples, done) = (samples.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let latency = probe(health_addr);
                samples.lock().unwrap().push((Instant::now(), latency));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut phases: Vec<(&str, Instant, Instant, String)> = Vec::new();
    let idle = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    phases.push((
        "idle daemon (baseline)",
        idle,
        Instant::now(),
        String::new(),
    ));

    // The store stage: accounts arrive from a generator thread (collection's stand-in), each
    // written in one transaction on the blocking pool.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let generator = std::thread::spawn(move || {
        for a in 0..accounts {
            let id = format!("{:012}", 100_000_000_000u64 + a as u64);
            let count = per_account.min(n.saturating_sub(a * per_account));
            if tx
                .blocking_send(common::synthetic_account(&id, count, 0))
                .is_err()
            {
                break;
            }
        }
    });
    let started = Instant::now();
    let (run_id, created) = runtime.block_on(async {
        let run_id = store.begin_run(now_ms()).expect("run");
        let mut created = 0;
        while let Some(acc) = rx.recv().await {
            let store = store.clone();
            let outcome =
                tokio::task::spawn_blocking(move || write_account(&store, run_id, acc, false))
                    .await
                    .expect("write task")
                    .expect("write");
            created += outcome.created;
        }
        (run_id, created)
    });
    generator.join().expect("generator");
    assert_eq!(created, n);
    let secs = started.elapsed().as_secs_f64();
    phases.push((
        "store: first sync",
        started,
        Instant::now(),
        format!("{secs:.1} s"),
    ));

    let started = Instant::now();
    let sink = Config::from_toml_str(
        &format!("[[sinks]]\nname = \"bench\"\nurl = \"{sink_url}\"\nbatch_size = 1000\n"),
        "bench",
        &[],
    )
    .expect("config")
    .sinks
    .remove(0);
    let report = runtime.block_on(async {
        let client = iam_inventory::deliver::client();
        deliver_all(&store, &[sink], &client, now_ms, run_id, None).await
    });
    assert_eq!(report[0].acknowledged, n as u64, "{report:?}");
    let secs = started.elapsed().as_secs_f64();
    phases.push((
        "delivery: every record to a sink",
        started,
        Instant::now(),
        format!("{secs:.1} s"),
    ));
    std::thread::sleep(Duration::from_millis(200));
    done.store(true, Ordering::Relaxed);
    prober.join().expect("prober");

    println!(
        "{:<36} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "phase", "took", "probes", "median", "p99", "max"
    );
    let samples = samples.lock().unwrap();
    for (label, from, to, took) in phases {
        let mut got: Vec<Duration> = samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, l)| *l)
            .collect();
        got.sort();
        println!(
            "{:<36} {:>10} {:>8} {:>8.1}ms {:>8.1}ms {:>8.1}ms",
            label,
            took,
            got.len(),
            quantile(&got, 0.5),
            quantile(&got, 0.99),
            quantile(&got, 1.0),
        );
    }
    println!(
        "target: /healthz < 100 ms throughout; peak RSS {}",
        common::mib(peak_rss_bytes())
    );
}
